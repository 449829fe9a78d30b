"""The GPU health series: XID errors (from the event thread, ``nvml/events.py``), clock event
reasons, energy, PCIe replays, remapped rows, retired pages and NVLink errors (``nvml/health.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric

from mig_exporter.exporter.families import GPU_LABELS, counter, gauge, gpu_samples
from mig_exporter.model import Gpu, GpuHealth, Snapshot


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
    present = [g for g in gpus if not g.lost]

    def of(value: Callable[[GpuHealth], float | None]) -> Iterator[tuple[list[str], float]]:
        return gpu_samples(present, lambda g: value(g.health))

    yield gauge("nvml_gpu_clock_event_reason",
                "1 while the reason holds the GPU's clocks down (or idle), else 0: thermal and power "
                "slowdowns, power cap, sync boost...",
                [*GPU_LABELS, "reason"],
                [([str(g.index), g.uuid, reason], active)
                 for g in present for reason, active in g.health.clock_event_reasons or ()])
    yield counter("nvml_gpu_energy_joules", "Energy the GPU drew since the driver was loaded.",
                  GPU_LABELS, of(lambda h: h.energy_joules_total))
    yield counter("nvml_gpu_pcie_replays", "PCIe packets the GPU had to replay (link errors).",
                  GPU_LABELS, of(lambda h: h.pcie_replays_total))
    yield counter("nvml_gpu_remapped_rows", "Memory rows remapped over the GPU's life, by the error that "
                  "caused it (A100 and later).", [*GPU_LABELS, "cause"],
                  _by_cause(present, {"correctable": lambda h: h.remapped_rows_correctable_total,
                                      "uncorrectable": lambda h: h.remapped_rows_uncorrectable_total}))
    yield gauge("nvml_gpu_row_remap_pending", "1 when a row remapping waits for a GPU reset.",
                GPU_LABELS, of(lambda h: h.row_remap_pending))
    yield gauge("nvml_gpu_row_remap_failure", "1 when a row remapping failed: the GPU needs service.",
                GPU_LABELS, of(lambda h: h.row_remap_failure))
    yield counter("nvml_gpu_retired_pages", "Memory pages retired by ECC errors (GPUs before A100).",
                  [*GPU_LABELS, "cause"],
                  _by_cause(present, {"single_bit_ecc": lambda h: h.retired_pages_single_bit_ecc_total,
                                      "double_bit_ecc": lambda h: h.retired_pages_double_bit_ecc_total}))
    yield gauge("nvml_gpu_retired_pages_pending", "1 when a page waits to be retired at the next reset.",
                GPU_LABELS, of(lambda h: h.retired_pages_pending))
    yield counter("nvml_gpu_nvlink_errors", "NVLink errors summed over the GPU's links, by type.",
                  [*GPU_LABELS, "type"],
                  [([str(g.index), g.uuid, kind], count)
                   for g in present for kind, count in g.health.nvlink_errors_total])


def _by_cause(
    gpus: list[Gpu], causes: dict[str, Callable[[GpuHealth], int | None]],
) -> Iterator[tuple[list[str], float]]:
    for gpu in gpus:
        for cause, value_of in causes.items():
            value = value_of(gpu.health)
            if value is not None:
                yield [str(gpu.index), gpu.uuid, cause], value
