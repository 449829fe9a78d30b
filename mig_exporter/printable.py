"""Text from GPUs, processes and files made safe to print on a terminal, one line per cell.

A process name, a user, a command line or a container is whatever the process (or a fleet file)
says it is: a newline in one breaks a table, an escape sequence repaints the operator's terminal.
Text output shows each control character as a C escape, the way ``systemctl`` and ``journalctl``
do (``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``); JSON keeps the exact string.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any, TypeVar

# Control (Cc), format (Cf: bidi overrides, zero-width), line and paragraph separators (Zl, Zp).
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A fast path: most text is plain ASCII without a control character.
_PLAIN = re.compile(r"[\x20-\x7e]*")

T = TypeVar("T")


def _escape(character: str) -> str:
    if unicodedata.category(character) not in _UNPRINTABLE_CATEGORIES:
        return character
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped; ``text`` itself when it has none."""
    if _PLAIN.fullmatch(text):
        return text
    escaped = "".join(_escape(c) for c in text)
    return text if escaped == text else escaped


def printable_tree(value: T) -> T:
    """A copy of a tree of frozen dataclasses and tuples with every string in it ``printable``: a
    text renderer escapes its whole input once, so no cell can be missed. A part without a control
    character is returned as it is (an ``Enum`` stays an ``Enum``); other values are left alone."""
    result: Any = value
    if isinstance(value, str):
        result = printable(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value) if f.init]
        changes = {name: printable_tree(getattr(value, name)) for name in fields}
        changed = {name: new for name, new in changes.items() if new is not getattr(value, name)}
        result = dataclasses.replace(value, **changed) if changed else value
    elif isinstance(value, tuple):
        items = tuple(printable_tree(item) for item in value)
        if any(new is not old for new, old in zip(items, value, strict=True)):
            result = items
    return result
