"""The building blocks of the exporter's metric families: one labelled family from samples, and
the GPU and MIG device label sets every per-device series shares (so they join on ``uuid``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mig_exporter.model import Gpu, MigInstance

GPU_LABELS = ["gpu", "uuid"]
MIG_LABELS = ["gpu", "uuid", "mig_uuid", "gpu_instance_id", "compute_instance_id"]

Family = TypeVar("Family", GaugeMetricFamily, CounterMetricFamily)


def _family(
    kind: type[Family], name: str, documentation: str, labels: list[str],
    samples: Iterable[tuple[list[str], float]],
) -> Family:
    family = kind(name, documentation, labels=labels)
    for label_values, value in samples:
        family.add_metric(label_values, value)
    return family


def gauge(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]],
) -> GaugeMetricFamily:
    return _family(GaugeMetricFamily, name, documentation, labels, samples)


def counter(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]],
) -> CounterMetricFamily:
    """A counter family: prometheus_client appends ``_total`` to ``name``."""
    return _family(CounterMetricFamily, name, documentation, labels, samples)


def gpu_samples(
    gpus: Iterable[Gpu], value_of: Callable[[Gpu], float | None],
) -> Iterator[tuple[list[str], float]]:
    """One sample per GPU that has the value; a GPU without it has no series."""
    for gpu in gpus:
        value = value_of(gpu)
        if value is not None:
            yield [str(gpu.index), gpu.uuid], value


def mig_labels(mig: MigInstance) -> list[str]:
    return [str(mig.gpu_index), mig.gpu_uuid, mig.mig_uuid, str(mig.gpu_instance_id),
            str(mig.compute_instance_id)]


def mig_samples(
    migs: Iterable[MigInstance], value_of: Callable[[MigInstance], float | None],
) -> Iterator[tuple[list[str], float]]:
    for mig in migs:
        value = value_of(mig)
        if value is not None:
            yield mig_labels(mig), value
