"""Series per node (issue 10, "Alerting at fleet size"): prints figures, asserts nothing.

    python3 benchmarks/bench_series.py                     # every built-in fleet
    python3 benchmarks/bench_series.py --fleet large --hosts 500

For each fleet, one collection as ``mig-exporter serve`` publishes it: the samples of its
exposition (what one scrape of one node stores, before the ``up``/``scrape_*`` series Prometheus
adds), split into per-process series (``nvml_process_*``), per-MIG-device series
(``nvml_mig_instance_*``) and the rest; then what ``--hosts`` such nodes send to a central store by
remote-write of everything, against what the fleet recording rules of
``alerts/mig-exporter-fleet.rules.yml`` leave per cluster. docs/fleet.md quotes the figures.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from mig_exporter.exporter.collector import ExporterSettings
from mig_exporter.exporter.state import ExporterState
from mig_exporter.host import nvml_session
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.sim import builtin_names

# up, scrape_duration_seconds, scrape_samples_scraped, scrape_samples_post_metric_relabeling,
# scrape_series_added: what Prometheus adds to every target.
SCRAPE_SERIES = 5


def samples(fleet: str) -> Counter[str]:
    """Sample count per family kind of one collection of ``fleet``."""
    with nvml_session(fleet) as session:
        snapshot = read_snapshot(session)
    state = ExporterState(ExporterSettings(interval_seconds=5))
    state.publish(snapshot)
    kinds: Counter[str] = Counter()
    for line in state.exposition.plain.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        kind = ("process" if name.startswith("nvml_process_") else
                "mig device" if name.startswith("nvml_mig_instance_") else "other")
        kinds[kind] += 1
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", action="append",
                        help="a fleet file or built-in fleet (default: every built-in one)")
    parser.add_argument("--hosts", type=int, default=500, help="nodes in the fleet estimate (default 500)")
    args = parser.parse_args()
    fleets = args.fleet or sorted(builtin_names())
    print(f"{'fleet':<22} {'series/node':>11} {'process':>8} {'MIG dev':>8} {'other':>6} "
          f"{'x' + str(args.hosts) + ' nodes':>14}")
    for fleet in fleets:
        kinds = samples(fleet)
        per_node = sum(kinds.values()) + SCRAPE_SERIES
        print(f"{fleet:<22} {per_node:>11} {kinds['process']:>8} {kinds['mig device']:>8} "
              f"{kinds['other'] + SCRAPE_SERIES:>6} {per_node * args.hosts:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
