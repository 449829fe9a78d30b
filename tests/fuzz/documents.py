"""Generated config files for the fuzz tests: valid documents bent out of shape (a value of the
wrong type, a huge number, unicode, a key dropped or added, nested junk), then written as YAML and
sometimes broken at the byte level (cut short, binary bytes spliced in, a line repeated so its key
is a duplicate), or plain random bytes."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

# Text YAML can carry (no lone surrogates), weighted towards what breaks parsers: quotes, colons,
# control characters, right-to-left marks, emoji.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", ":", "- x", "'", '"', "\x00", "\x1b[31m", "\u202e", "🖥️", "null", "~", "0x20B210DE", "1e400",
     "-1", "all", "$2b$31$" + "a" * 53, "$2b$04$", "../../etc/passwd", "TLS10", "a" * 5000])
NUMBERS = st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70) | st.integers(
    min_value=-(2**70), max_value=-1) | st.floats(allow_nan=True, allow_infinity=True)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT | st.binary(max_size=20)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT | NUMBERS, inner, max_size=4), max_leaves=12)


@st.composite
def bent(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with some of its parts replaced by junk, dropped, or joined by junk keys."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JUNK)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            choice = draw(st.integers(0, 11))
            if choice == 0:
                continue  # a key missing
            out[key] = draw(JUNK) if choice == 1 else draw(bent(item))
        if draw(st.integers(0, 5)) == 0:
            out[draw(TEXT)] = draw(JUNK)  # a key nobody knows
        return out
    if isinstance(value, list):
        items = [draw(bent(item)) for item in value]
        if draw(st.integers(0, 4)) == 0:
            items *= draw(st.integers(2, 40))  # many of them
        return items
    return value


@st.composite
def one_change(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with exactly one part replaced by junk or dropped: valid but for one thing."""
    if not isinstance(value, (dict, list)) or not value or draw(st.integers(0, 3)) == 0:
        return draw(JUNK)
    if isinstance(value, dict):
        key = draw(st.sampled_from(sorted(value, key=str)))
        if draw(st.booleans()):
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: draw(one_change(value[key]))}
    at = draw(st.integers(0, len(value) - 1))
    return [*value[:at], draw(one_change(value[at])), *value[at + 1:]]


BYTE_EDITS = ("none", "none", "cut", "binary", "duplicate line", "tabs")


@st.composite
def file_bytes(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A file's bytes: ``base`` with one change or bent all over, dumped as YAML, maybe edited at
    the byte level; or ``base`` as is but edited at the byte level; or random bytes."""
    shape = draw(st.sampled_from(("random bytes", "as is", "one change", "one change", "bent", "bent")))
    if shape == "random bytes":
        return draw(st.binary(max_size=400))
    document = {"as is": base, "one change": draw(one_change(base)), "bent": draw(bent(base))}[shape]
    data = yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode()
    edit = draw(st.sampled_from(BYTE_EDITS)) if shape != "as is" else draw(st.sampled_from(BYTE_EDITS[1:]))
    at = draw(st.integers(0, len(data)))
    if edit == "cut":
        data = data[:at]
    elif edit == "binary":
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif edit == "duplicate line":
        lines = data.splitlines(keepends=True)
        if lines:
            line = draw(st.sampled_from(lines))
            data += line
    elif edit == "tabs":
        data = data.replace(b"  ", b"\t")
    return data
