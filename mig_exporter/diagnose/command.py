"""``mig-exporter diagnose``: read NVML once, attribute the processes, print the report.

The side effects of diagnose live here (NVML, /proc, stdout); everything it decides is in
``report``, ``explain`` and ``mig_exporter.advice``. Exit status per DESIGN.md: 0 healthy,
1 problems found, 2 error (``InputError``, printed on one line by ``cli.main``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from mig_exporter.advice import DEFAULT_HEADROOM_RATIO
from mig_exporter.diagnose.render_json import render_json
from mig_exporter.diagnose.render_text import render_text
from mig_exporter.diagnose.report import build_report, reading_failure
from mig_exporter.errors import InputError
from mig_exporter.host import nvml_session
from mig_exporter.hostinfo import attribute_processes
from mig_exporter.kubelet.podresources import (
    DEFAULT_SOCKET,
    DeviceAllocation,
    allocations_by_pid,
    list_allocations,
    rpc_error_text,
)
from mig_exporter.nvml.read import read_snapshot

_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*$")  # [0-9]: \d would take any script's digits
MAX_HEADROOM_PERCENT = 400  # beyond this the advice would be for some other workload
KUBELET_DEADLINE_SECONDS = 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="explain what is wrong with the GPUs, who runs on them and the MIG layout that fixes it",
        description="Read the GPUs once and report: per GPU its MIG mode, persistence, memory, "
                    "instances and processes; the findings, most severe first, with what to run "
                    "next; who each process is; and the smallest MIG layout that gives each "
                    "workload its own instance. Exit status: 0 healthy, 1 problems found, 2 error.",
    )
    parser.add_argument("--fleet", metavar="FLEET",
                        help="diagnose a simulated fleet (a built-in fleet's name, see 'mig-exporter "
                             "fleet list', else a fleet file's path: ./NAME for a file named like a "
                             "built-in) instead of this host's GPUs")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text for a terminal (default), json for scripts (docs/diagnose.schema.json)")
    parser.add_argument("--headroom", metavar="PERCENT", default=f"{DEFAULT_HEADROOM_RATIO * 100:g}%",
                        help="memory added to each workload's current use when sizing its MIG instance "
                             "(default: %(default)s: a reading is one moment, and an instance cannot "
                             "borrow memory from its neighbour when the workload peaks)")
    parser.add_argument("--kubernetes.pod-resources-socket", dest="pod_resources_socket",
                        default=DEFAULT_SOCKET, metavar="PATH",
                        help="the kubelet's pod-resources socket, asked which pod and container hold each "
                             f"GPU and MIG device when it exists; '' to never ask (default {DEFAULT_SOCKET})")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the text report: auto (default) on a terminal unless NO_COLOR is set")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    headroom_ratio = parse_headroom(args.headroom)
    with nvml_session(args.fleet) as session:
        snapshot = read_snapshot(session)
        failure = reading_failure(snapshot)
        if failure is not None:
            raise InputError(failure)
        simulator = session.simulator
        attributions = attribute_processes(sorted({p.pid for p in snapshot.processes}),
                                           simulator.attribution if simulator is not None else None,
                                           not_started_after=snapshot.taken_at)
    pods = allocations_by_pid(snapshot, kubelet_allocations(args.pod_resources_socket))
    report = build_report(snapshot, attributions, headroom_ratio, args.fleet,
                          fleet_built_in=simulator is not None and simulator.read_only, pods=pods)
    if args.format == "json":
        sys.stdout.write(render_json(report))
    else:
        text = render_text(report, color=use_color(args.color, sys.stdout, os.environ))
        sys.stdout.write(encodable(text, sys.stdout.encoding))
    return report.exit_status


def kubelet_allocations(socket_path: str) -> Mapping[str, DeviceAllocation]:
    """The kubelet's answer, or nothing where there is no kubelet; a kubelet that does not answer
    is a warning on stderr, not a failed diagnosis (the report then names no pods)."""
    if not socket_path or not Path(socket_path).exists():
        return {}
    import grpc  # only where a kubelet socket exists (see kubelet.podresources)

    try:
        return list_allocations(socket_path, KUBELET_DEADLINE_SECONDS)
    except grpc.RpcError as error:
        print(f"mig-exporter diagnose: warning: the kubelet's pod-resources socket {socket_path} did not "
              f"answer ({rpc_error_text(error)}); pods are not shown", file=sys.stderr)
        return {}


def encodable(text: str, encoding: str | None) -> str:
    """Command lines and user names come from the host and may hold characters the terminal's
    encoding lacks (an ASCII locale); they are escaped rather than failing the whole report."""
    if not encoding:
        return text
    return text.encode(encoding, "backslashreplace").decode(encoding)


def parse_headroom(text: str) -> float:
    """``20%`` or ``20`` → 0.2. A ratio like ``0.2`` would read as 0.2 %, so percent is the only unit."""
    match = _PERCENT.match(text)
    if match is None or float(match.group(1)) > MAX_HEADROOM_PERCENT:
        raise InputError(f"--headroom {text!r}: expected a percentage from 0% to {MAX_HEADROOM_PERCENT}%, "
                         f"e.g. 20%")
    return float(match.group(1)) / 100


def use_color(choice: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """``--color`` wins; ``auto`` colours a terminal unless NO_COLOR is set and not empty (no-color.org)."""
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not environ.get("NO_COLOR")
