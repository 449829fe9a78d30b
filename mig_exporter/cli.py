"""The one entry point: ``mig-exporter serve | health | diagnose | remediate | fleet``.

Each subcommand lives beside the code it drives and registers itself here through
``register(subparsers)``, which adds its parser and sets ``run`` to a function taking the parsed
arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mig_exporter import __version__, fleet_command
from mig_exporter.diagnose import command as diagnose_command
from mig_exporter.errors import InputError, print_error
from mig_exporter.exporter import command as serve_command
from mig_exporter.exporter import health_command
from mig_exporter.remediate import command as remediate_command

EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mig-exporter",
        description="Prometheus exporter, diagnosis and MIG remediation for NVIDIA GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve_command, health_command, diagnose_command, remediate_command, fleet_command):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
