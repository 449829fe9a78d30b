"""The ``fleet``subcommand (being built)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="(being built)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("mig-exporter fleet: not built yet", file=sys.stderr)
    return 2
