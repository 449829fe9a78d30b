"""The shipped systemd unit starts a command line the CLI accepts, flag values included."""

import configparser
import shlex
from pathlib import Path

from mig_exporter.cli import build_parser
from mig_exporter.exporter.command import serve_config

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "mig-exporter.service"


def test_systemd_unit_exec_start_parses():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    program, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert program.endswith("/mig-exporter")
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    config = serve_config(args)  # raises InputError on a value serve would refuse
    assert config.listen_address.port == 9458
    assert unit["Install"]["WantedBy"] == "multi-user.target"
