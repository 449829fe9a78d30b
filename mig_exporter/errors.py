"""The one exception type that reaches the user as a one-line error and exit status 2."""

import os
import re
import stat
import sys
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from mig_exporter.printable import printable


class InputError(Exception):
    """Bad input (a fleet file, a flag, a layout, a web config) or an unusable environment.

    The message is one line that names the input and the reason, e.g.
    ``fleet.yaml: gpus[2].instances[1].placement: 3 is not a valid start for 3g.40gb (valid: 0, 4)``.
    Raise it before anything is changed; ``cli.main`` prints it and exits 2.
    """


def print_error(command: str, message: str) -> None:
    """Print ``mig-exporter COMMAND: error: MESSAGE`` on stderr, argparse's own form.

    ``cli.main`` prints an ``InputError`` so; ``remediate`` prints a failure it reports after the
    hardware changed (a failed step, files not written) so too, with its own exit status: every
    command's last word on failure reads the same, and is one line whatever names it quotes.
    """
    print(f"mig-exporter {command}: error: {printable(message)}", file=sys.stderr)


_KEY_LIKE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


def shown_key(key: object) -> str:
    """A key of a user's YAML file as an error may show it.

    Only what looks like a key name is echoed: a wrong file given by mistake (``/etc/shadow`` to a
    command run with sudo) parses as YAML too, and its first line must not end up in a terminal
    or a log.
    """
    return key if isinstance(key, str) and _KEY_LIKE.fullmatch(key) else "(not a key name)"


def yaml_problem(error: Exception) -> str:
    """A YAML parse error in one line, ``line 3, column 7: found unexpected ':'``, without the
    snippet of the file PyYAML quotes: a wrong file given by mistake must not be echoed."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(error, "problem", None) or "cannot be parsed"
    return where + problem


_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML has it: the large benchmark fleets load several times faster.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(_SAFE_LOADER):
    """PyYAML's safe loader, refusing a mapping that gives one key twice.

    YAML says keys are unique, but PyYAML keeps the last value silently: a fleet file or web config
    with ``gpus:`` (or ``basic_auth_users:``) written twice would run on half of what the person
    wrote. So a duplicate is a parse error naming the key and both lines; merge keys (``<<``) may
    still be overridden, as YAML intends. Every YAML file the product reads goes through it."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # unhashable: PyYAML's own construct_mapping refuses it
                    continue
                if seen is not None:
                    problem = f"duplicate key {shown_key(key)} (first on line {seen})"
                    raise ConstructorError(None, None, problem, key_node.start_mark)
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The YAML document in ``text``; ``yaml.YAMLError`` when it does not parse or repeats a key."""
    return yaml.load(text, Loader=UniqueKeyLoader)


# A web config or a mig-parted config is a few kilobytes; past this it is the wrong file
# (/dev/zero, a log, a disk image) and reading it whole would only grow memory.
MAX_CONFIG_BYTES = 1024 * 1024


def read_yaml_file(path: str, unreadable: str) -> Any:
    """The YAML document in ``path``, or ``InputError``: ``<unreadable>: <reason>`` when the file
    cannot be read (an OS error, not a regular file, over ``MAX_CONFIG_BYTES``, not UTF-8),
    ``<path>: not valid YAML: <where and what>`` when it does not parse (a key given twice
    included). For the small files given by flags (web config, mig-parted config); fleet files
    share ``read_small_file`` and ``load_yaml`` with it (``sim/fleet.py``)."""
    try:
        text = read_small_text_file(path)
    except OSError as error:
        raise InputError(f"{unreadable}: {error.strerror}") from None
    except ValueError as error:
        raise InputError(f"{unreadable}: {error}") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {yaml_problem(error)}") from None


def read_small_text_file(path: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``read_small_file``; ``ValueError`` saying why not."""
    data = read_small_file(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None


def read_small_file(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``ValueError`` saying why not.

    Opened without blocking, so that a FIFO given by mistake is refused instead of waiting for a
    writer forever; only ``limit + 1`` bytes are ever read, so ``/dev/zero`` costs nothing."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError("not a regular file")
        data = _read_up_to(descriptor, limit + 1)
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB; is it the right file?")
    return data


def _read_up_to(descriptor: int, count: int) -> bytes:
    """Up to ``count`` bytes, fewer only at the end of the file (a read may return a part)."""
    parts: list[bytes] = []
    while count > 0 and (part := os.read(descriptor, count)):
        parts.append(part)
        count -= len(part)
    return b"".join(parts)
