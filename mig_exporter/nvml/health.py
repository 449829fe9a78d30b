"""GPU health telemetry: clock event (throttle) reasons, total energy, PCIe replays every
collection; remapped rows, retired pages, NVLink error totals and ECC totals on a slower cadence.

The counters come from ``nvmlDeviceGetFieldValues``, which answers many values in one call and
says per value whether the GPU has it (NOT_SUPPORTED there leaves that value absent, not 0: page
retirement on A100 and later, which remap rows instead; NVLink on a PCIe board). Values that move
slowly and that operators alert on over hours (rows remapped, pages retired, NVLink and ECC errors)
are read at most every ``slow_seconds`` and repeated in between. Cost per GPU: two calls every
collection (fields, with the slow fields added when due, and clock event reasons), and the two ECC
totals, read as nvidia-smi reads them, once per slow interval.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pynvml

from mig_exporter.model import GpuHealth

Call = Callable[..., Any]  # the collection's NVML call: counts it, confines its errors, None if absent

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
_FAST_FIELDS = (pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER)
NVLINK_ERROR_FIELDS = {
    "crc_flit": pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
    "crc_data": pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
    "replay": pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
    "recovery": pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
}
_SLOW_FIELDS = (
    pynvml.NVML_FI_DEV_REMAPPED_COR, pynvml.NVML_FI_DEV_REMAPPED_UNC, pynvml.NVML_FI_DEV_REMAPPED_PENDING,
    pynvml.NVML_FI_DEV_REMAPPED_FAILURE, pynvml.NVML_FI_DEV_RETIRED_SBE, pynvml.NVML_FI_DEV_RETIRED_DBE,
    pynvml.NVML_FI_DEV_RETIRED_PENDING, *NVLINK_ERROR_FIELDS.values(),
)
# c_nvmlValue_t member for each NVML_VALUE_TYPE_*
_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


@dataclass(frozen=True)
class _Slow:
    read_at: float  # time.monotonic()
    health: GpuHealth  # only the slow values set


class HealthReader:
    """Reads a GPU's health each collection, keeping the slow values between slow reads."""

    def __init__(self, slow_seconds: float = 60.0) -> None:
        self.slow_seconds = slow_seconds
        self._slow: dict[str, _Slow] = {}  # GPU UUID → its last slow read

    def clear(self) -> None:
        self._slow.clear()

    def read(self, call: Call, handle: Any, uuid: str) -> GpuHealth:
        kept = self._slow.get(uuid)
        now = time.monotonic()
        slow_due = kept is None or now - kept.read_at >= self.slow_seconds
        # the slow fields ride along in the same call when they are due
        fields = call(_field_values, handle, _FAST_FIELDS + _SLOW_FIELDS if slow_due else _FAST_FIELDS) or {}
        reasons = call(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        if slow_due:
            slow = self._slow_values(call, handle, fields)
            if uuid:
                self._slow[uuid] = _Slow(now, slow)
        else:
            assert kept is not None
            slow = kept.health
        energy_mj = fields.get(pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION)
        replays = fields.get(pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER)
        return replace(
            slow,
            energy_joules_total=None if energy_mj is None else energy_mj / 1000,
            pcie_replays_total=None if replays is None else int(replays),
            clock_event_reasons=None if reasons is None else tuple(
                (name, bool(reasons & bit)) for name, bit in CLOCK_EVENT_REASONS.items()),
        )

    @staticmethod
    def _slow_values(call: Call, handle: Any, fields: dict[int, float]) -> GpuHealth:
        def count(field_id: int) -> int | None:
            found = fields.get(field_id)
            return None if found is None else int(found)

        def ecc(error_type: int) -> int | None:
            return call(pynvml.nvmlDeviceGetTotalEccErrors, handle, error_type, pynvml.NVML_AGGREGATE_ECC)

        def flag(field_id: int) -> bool | None:
            found = fields.get(field_id)
            return None if found is None else bool(found)

        return GpuHealth(
            remapped_rows_correctable_total=count(pynvml.NVML_FI_DEV_REMAPPED_COR),
            remapped_rows_uncorrectable_total=count(pynvml.NVML_FI_DEV_REMAPPED_UNC),
            row_remap_pending=flag(pynvml.NVML_FI_DEV_REMAPPED_PENDING),
            row_remap_failure=flag(pynvml.NVML_FI_DEV_REMAPPED_FAILURE),
            retired_pages_single_bit_ecc_total=count(pynvml.NVML_FI_DEV_RETIRED_SBE),
            retired_pages_double_bit_ecc_total=count(pynvml.NVML_FI_DEV_RETIRED_DBE),
            retired_pages_pending=flag(pynvml.NVML_FI_DEV_RETIRED_PENDING),
            nvlink_errors_total=tuple((name, errors) for name, field_id in NVLINK_ERROR_FIELDS.items()
                                      if (errors := count(field_id)) is not None),
            ecc_errors_corrected_total=ecc(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ecc_errors_uncorrected_total=ecc(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        )


@functools.wraps(pynvml.nvmlDeviceGetFieldValues)
def _field_values(handle: Any, field_ids: tuple[int, ...]) -> dict[int, float]:
    """Field ID → value, for the fields NVML gave (each answers in its own ``nvmlReturn``)."""
    values = pynvml.nvmlDeviceGetFieldValues(handle, list(field_ids))
    return {
        entry.fieldId: getattr(entry.value, _VALUE_MEMBERS[entry.valueType])
        for entry in values
        if entry.nvmlReturn == pynvml.NVML_SUCCESS and entry.valueType in _VALUE_MEMBERS
    }
