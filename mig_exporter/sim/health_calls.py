"""The simulated health calls: ``nvmlDeviceGetFieldValues`` for energy, PCIe replays, remapped
rows, retired pages and NVLink error totals, and ``nvmlDeviceGetCurrentClocksEventReasons``.

Values come from the fleet file's ``health`` (``state.Health``). Total energy grows at the GPU's
``power_watts`` from ``energy_joules`` at the simulator's start (integrated at each read, so a
lower power never makes it go back). Each field answers in its own ``nvmlReturn``: retired pages
are NOT_SUPPORTED unless the fleet gives ``retired_pages`` (A100 and later remap rows instead of
retiring pages), NVLink totals unless it gives ``nvlink_errors`` (no NVLink), and every field the
simulator does not model is NOT_SUPPORTED. A MIG device handle is NOT_SUPPORTED as a whole.
"""

from __future__ import annotations

import time
from typing import Any

import pynvml

from mig_exporter.sim.calls import CallsBase, Target, World, c_function
from mig_exporter.sim.handles import target, value
from mig_exporter.sim.state import SimGpu

# The fleet file's names of the clock event reasons → NVML's bits
CLOCK_EVENT_REASONS = {
    "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
    "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
    "sw_thermal_slowdown": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "hw_thermal_slowdown": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "hw_power_brake_slowdown": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "display_clock_setting": pynvml.nvmlClocksEventReasonDisplayClockSetting,
}


class HealthCalls(CallsBase):
    def __init__(self, world: World) -> None:
        super().__init__(world)
        self._started = time.monotonic()
        self._energy: dict[int, tuple[float, float]] = {}  # GPU index → (when, joules since start)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetCurrentClocksEventReasons(self, device: Any, clocksEventReasons: Any) -> int:
        _, gpu = self._physical(device)
        target(clocksEventReasons).value = sum(CLOCK_EVENT_REASONS[r] for r in gpu.health.clock_event_reasons)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetFieldValues(self, device: Any, valuesCount: Any, values: Any) -> int:
        index, gpu = self._physical(device)
        array = target(values)
        now = time.monotonic()
        for i in range(value(valuesCount)):
            entry = array[i]
            field = self._field(index, gpu, entry.fieldId, now)
            entry.timestamp = time.time_ns() // 1000
            entry.latencyUsec = 0
            if field is None:
                entry.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            entry.nvmlReturn = pynvml.NVML_SUCCESS
            entry.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            entry.value.ullVal = field
        return pynvml.NVML_SUCCESS

    def _field(self, index: int, gpu: SimGpu, field_id: int, now: float) -> int | None:
        health = gpu.health
        rows, pages, links = health.remapped_rows, health.retired_pages, health.nvlink_errors
        if field_id == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            return round((health.energy_joules + self._energy_since_start(index, gpu, now)) * 1000)
        fields: dict[int, int | bool] = {
            pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: health.pcie_replays,
            pynvml.NVML_FI_DEV_REMAPPED_COR: rows.correctable,
            pynvml.NVML_FI_DEV_REMAPPED_UNC: rows.uncorrectable,
            pynvml.NVML_FI_DEV_REMAPPED_PENDING: rows.pending,
            pynvml.NVML_FI_DEV_REMAPPED_FAILURE: rows.failure,
        }
        if pages is not None:
            fields |= {pynvml.NVML_FI_DEV_RETIRED_SBE: pages.single_bit_ecc,
                       pynvml.NVML_FI_DEV_RETIRED_DBE: pages.double_bit_ecc,
                       pynvml.NVML_FI_DEV_RETIRED_PENDING: pages.pending}
        if links is not None:
            fields |= {pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: links.crc_flit,
                       pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: links.crc_data,
                       pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL: links.replay,
                       pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: links.recovery}
        found = fields.get(field_id)
        return None if found is None else int(found)

    def _energy_since_start(self, index: int, gpu: SimGpu, now: float) -> float:
        """Joules drawn since the simulator started, at the power in force at each read."""
        since, joules = self._energy.get(index, (self._started, 0.0))
        joules += gpu.telemetry.power_watts * (now - since)
        self._energy[index] = (now, joules)
        return joules
