"""The one entry point: ``mig-exporter serve | health | diagnose | remediate | fleet``.

Each subcommand lives beside the code it drives and registers itself here through
``register(subparsers)``, which adds its parser and sets ``run`` to a function taking the parsed
arguments and returning the exit status. Only the chosen subcommand's module is imported: ``serve``
then loads none of diagnose's or remediate's code, nor the libraries only they use (jinja2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mig_exporter import __version__
from mig_exporter.errors import InputError, print_error

EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe
SUBCOMMANDS = {  # name -> the module whose register() adds it
    "serve": "mig_exporter.exporter.command",
    "health": "mig_exporter.exporter.health_command",
    "diagnose": "mig_exporter.diagnose.command",
    "remediate": "mig_exporter.remediate.command",
    "fleet": "mig_exporter.fleet_command",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every subcommand, or only the one ``argv`` starts with (``--help``, ``--version`` and an
    unknown name get them all: the usage lists every choice)."""
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = argparse.ArgumentParser(
        prog="mig-exporter",
        description="Prometheus exporter, diagnosis and MIG remediation for NVIDIA GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        if chosen in (None, name):
            importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
    except InputError as error:
        print_error(args.command, str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mig-exporter fleet list | head`: the reader left. Point stdout at /dev/null so that
        # Python's flush at exit does not raise again, as the Python docs advise for pipes.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status
