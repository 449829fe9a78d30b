"""``mig-exporter fleet list | show NAME``: the built-in simulated fleets.

``list`` says what each fleet is for; ``show`` prints its YAML as shipped, comments included, so
``mig-exporter fleet show seed-incident > lab.yaml`` gives a fleet file to edit and pass to
``--fleet lab.yaml``. It lives outside ``sim/`` and imports the simulator only when it runs, so the
CLI loads no simulator unless a fleet is used.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="list or show the built-in simulated fleets",
        description="The built-in simulated fleets, for --fleet NAME. "
        "'show' prints one as a fleet file to edit.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="name and description of each built-in fleet").set_defaults(run=run_list)
    show = actions.add_parser("show", help="print a built-in fleet's YAML")
    show.add_argument("name", metavar="NAME", help="a name from 'mig-exporter fleet list'")
    show.set_defaults(run=run_show)


def run_list(args: argparse.Namespace) -> int:
    from mig_exporter.sim.builtin_fleets import builtin_names, builtin_text
    from mig_exporter.sim.fleet_reader import parse_fleet

    names = builtin_names()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {parse_fleet(builtin_text(name), name).description or ''}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mig_exporter.sim.builtin_fleets import builtin_text

    print(builtin_text(args.name), end="")  # an unknown name: FleetError, one line listing the built-in ones
    return 0
