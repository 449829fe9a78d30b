"""``benchmarks/bench_http_load.py`` at CI size (issue 11 item 3): real scrapers keep being answered
while pipelining, trickling and idle clients beyond ``--web.max-connections`` press on ``serve``.

Counts only, never times: every scraper answered, no scrape error, the server's threads do not
grow with its connections (the threaded server had one per connection), the cap holds, and the
connections beyond it were closed by the server.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from long import scaled

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_http_load.py"
# Threads serve may start lazily whatever the load (scheduler workers, the bcrypt worker).
LAZY_THREADS = 4


def bench() -> ModuleType:
    if str(BENCHMARK.parent) not in sys.path:
        sys.path.insert(0, str(BENCHMARK.parent))  # its load_clients, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_http_load", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_scrapers_are_answered_under_hostile_clients_beyond_the_cap(tls: bool) -> None:
    """Over TLS the hostile clients never finish a handshake: evicted or timed out in it, they
    must leave the loop able to serve the scrapers' handshakes."""
    load = bench()
    plan = load.LoadPlan(scrapers=4, seconds=scaled(2), tricklers=scaled(30), pipeliners=4,
                         idle=scaled(40), max_connections=20, server_nofile=None, tls=tls)
    result = load.run_load(plan)
    print(load.report(plan, result))
    assert result.connect_failures == 0
    assert dict(result.errors) == {}
    assert min(result.scrapes_per_scraper) >= 1
    hostile = plan.tricklers + plan.pipeliners + plan.idle
    assert dict(result.opened) == {"pipeliners": 4, "tricklers": plan.tricklers, "idle": plan.idle}
    assert result.threads["peak"] <= result.threads["before"] + LAZY_THREADS < hostile
    assert result.cap == 20 and result.established["end"] <= 20
    # every connection beyond the cap (the scrapers' included) made the server close one
    assert sum(result.closed_by_server.values()) >= hostile + plan.scrapers - 20
    assert result.exit_code == 0
