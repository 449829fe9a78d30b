"""Freshness (/health) and the running totals kept across collections."""

from __future__ import annotations

import gzip
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mig_exporter.exporter.collector import ExporterSettings
from mig_exporter.exporter.state import ExporterState, Health, health
from mig_exporter.model import CollectionError

from .snapshots import incident


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition.decode()) for s in family.samples}


def test_unhealthy_before_the_first_collection() -> None:
    assert health(None, now=100.0, interval_seconds=5) == Health(False, "no collection has finished yet")


@pytest.mark.parametrize(("age", "healthy"),
                         [(0.0, True), (14.9, True), (15.0, True), (15.1, False), (600, False)])
def test_unhealthy_when_no_collection_finished_for_three_intervals(age: float, healthy: bool) -> None:
    verdict = health(1000.0, now=1000.0 + age, interval_seconds=5)
    assert verdict.healthy is healthy
    assert ("ok" in verdict.reason) is healthy and "\n" not in verdict.reason


def test_publish_renders_once_and_turns_healthy() -> None:
    state = ExporterState(ExporterSettings(interval_seconds=5))
    assert not state.health().healthy
    assert ("nvml_up", ()) not in samples(state.exposition.plain)
    state.publish(incident())
    assert state.health().healthy
    rendered = samples(state.exposition.plain)
    assert rendered[("nvml_processes_spanning_gpus", ())] == 2
    assert gzip.decompress(state.exposition.gzipped) == state.exposition.plain


def test_errors_accumulate_by_call_and_timeouts_are_counted() -> None:
    state = ExporterState(ExporterSettings(interval_seconds=5, max_process_series=6))
    failing = replace(incident(), errors=(CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 1),
                                          CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 2)))
    state.publish(failing)
    state.publish(failing)
    state.record_timeout()
    rendered = samples(state.exposition.plain)
    assert rendered[("mig_exporter_collection_errors_total", (("call", "nvmlDeviceGetPowerUsage"),))] == 4
    assert rendered[("mig_exporter_collection_timeouts_total", ())] == 1
    assert rendered[("mig_exporter_process_series_dropped_total", ())] == 2 * (8 - 6)
    assert rendered[("mig_exporter_process_name_lookups_skipped_total", ())] == 0
    # a timeout keeps the last snapshot's series
    assert rendered[("nvml_processes_spanning_gpus", ())] == 2


def test_process_name_lookups_the_cap_skipped_are_counted() -> None:
    state = ExporterState(ExporterSettings(interval_seconds=5, max_process_series=6))
    for _ in range(3):
        state.publish(replace(incident(), process_names_skipped=4))
    assert samples(state.exposition.plain)[("mig_exporter_process_name_lookups_skipped_total", ())] == 12
