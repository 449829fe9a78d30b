"""The one exception type that reaches the user as a one-line error and exit status 2."""

import os
import re
import stat
import sys
from typing import Any

import yaml

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


# A web config or a mig-parted config is a few kilobytes; past this it is the wrong file
# (/dev/zero, a log, a disk image) and reading it whole would only grow memory.
MAX_CONFIG_BYTES = 1024 * 1024


def read_yaml_file(path: str, unreadable: str) -> Any:
    """The YAML document in ``path``, or ``InputError``: ``<unreadable>: <reason>`` when the file
    cannot be read (an OS error, not a regular file, over ``MAX_CONFIG_BYTES``, not UTF-8),
    ``<path>: not valid YAML: <where and what>`` when it does not parse. For the small files given
    by flags (web config, mig-parted config); fleet files keep their own reader."""
    try:
        text = read_small_text_file(path)
    except OSError as error:
        raise InputError(f"{unreadable}: {error.strerror}") from None
    except ValueError as error:
        raise InputError(f"{unreadable}: {error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {yaml_problem(error)}") from None


def read_small_text_file(path: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; ``ValueError`` saying why not.

    Opened without blocking, so that a FIFO given by mistake is refused instead of waiting for a
    writer forever; only ``limit + 1`` bytes are ever read, so ``/dev/zero`` costs nothing."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError("not a regular file")
        data = os.read(descriptor, limit + 1)
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None
