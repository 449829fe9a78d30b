"""Issue 11 item 8: ``--collect.max-process-series 0`` dropped every process series while
``--web.max-requests 0`` meant no limit. One rule now: a cap that can be lifted takes 0 for no
limit (node_exporter's ``--web.max-requests``, Prometheus' ``sample_limit``); a flag that must stay
bounded refuses 0 in one line with the reason; 0 never means "none at all"."""

from __future__ import annotations

import pytest

from mig_exporter.cli import build_parser, main
from mig_exporter.exporter.command import serve_config
from mig_exporter.exporter.connection import RequestSlots
from mig_exporter.exporter.service import ServeConfig

from .test_serve_e2e import serve

pytestmark = pytest.mark.usefixtures("restore_logging")  # serve configures the root logger


def config_with(*flags: str) -> ServeConfig:
    return serve_config(build_parser().parse_args(["serve", *flags]))


def test_zero_lifts_a_cap_that_can_be_lifted() -> None:
    assert config_with("--collect.max-process-series", "0").max_process_series is None
    assert config_with("--collect.max-process-series", "3").max_process_series == 3
    slots = RequestSlots(config_with("--web.max-requests", "0").max_requests)
    assert all(slots.try_acquire() for _ in range(10_000))


@pytest.mark.parametrize(("flag", "message"), [
    ("--web.max-connections", "--web.max-connections: '0': at least 1 (0 would mean unbounded connections"),
    ("--collect.interval", "--collect.interval: '0' must be longer than zero"),
    ("--collect.timeout", "--collect.timeout: '0' must be longer than zero (0 is not \"no timeout\": a hung "
                          "NVML call would stop collections)"),
])
def test_zero_is_refused_where_the_bound_must_hold(
    flag: str, message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--fleet", "seed-incident", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mig-exporter serve: error: {message}") and err.count("\n") == 1


def test_the_help_says_what_0_means(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cap on each per-process series family; 0 for no limit" in help_text
    assert "more get 503; 0 for no limit" in help_text
    assert "0 is refused, not unlimited" in help_text
    assert "more than 0, since a hung NVML call would otherwise stop collections for good" in help_text


def test_max_process_series_0_serves_every_process_series() -> None:
    """The incident's 8 per-GPU process series and 2 per-pid series, none dropped (before: none served)."""
    with serve("seed-incident", "--collect.max-process-series", "0") as served:
        samples = served.samples()
    assert sum(1 for name, _ in samples if name == "nvml_process_memory_bytes") == 8
    assert sum(1 for name, _ in samples if name == "nvml_process_gpus") == 2
    assert samples[("mig_exporter_process_series_dropped_total", frozenset())] == 0
