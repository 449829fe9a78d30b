"""Issue 11 item 9: ``serve`` soaked under process churn, at CI size (``benchmarks/soak_serve.py``
is the same soak, longer, printing its figures)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from long import scaled


def soak_module() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "soak_serve.py"
    spec = importlib.util.spec_from_file_location("soak_serve", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
def test_serve_under_process_churn_scraped_without_pause() -> None:
    """Each rewrite of the fleet file shows in the series: gone processes' series disappear, a pid
    back under another name is exported with the new name; no scrape fails, threads and RSS stay
    flat, and SIGTERM stops it cleanly."""
    generations = scaled(15)
    figures = soak_module().soak(generations, scrapers=2)
    assert figures.mismatches == []
    assert figures.gone > 0 and figures.pid_reuses > 0  # the churn did what it is for
    assert figures.collections > generations  # each generation waited for a collection of its own
    assert figures.scrapes > generations and figures.scrape_errors == 0
    assert figures.threads[1] <= figures.threads[0] + 2  # no thread per generation or connection
    assert figures.rss_mib[1] - figures.rss_mib[0] < 8
    assert (figures.exit_code, figures.port_released, figures.log_problems) == (0, True, [])
