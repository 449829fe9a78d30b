"""The ``diagnose``subcommand (being built)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("diagnose", help="(being built)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("mig-exporter diagnose: not built yet", file=sys.stderr)
    return 2
