"""The GPU health series: XID errors (from the event thread, ``nvml/events.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from mig_exporter.exporter.families import GPU_LABELS, counter, gauge, gpu_samples
from mig_exporter.model import Snapshot


def health_families(snapshot: Snapshot) -> Iterator[Metric]:
    gpus = snapshot.gpus  # lost GPUs too: their XID counts (79: fallen off the bus) stay
    yield gauge("nvml_gpu_xid_events_supported",
                "1 when NVML delivers the GPU's XID error events to the exporter, 0 when NVML says "
                "it does not (its XID counter is then absent).",
                GPU_LABELS, gpu_samples(gpus, lambda g: g.xid_events_supported))
    yield counter("nvml_gpu_xid_errors",
                  "XID errors NVML reported for the GPU since the exporter started, by XID.",
                  [*GPU_LABELS, "xid"],
                  [([str(g.index), g.uuid, str(xid)], count)
                   for g in gpus for xid, count in g.xid_errors or ()])
