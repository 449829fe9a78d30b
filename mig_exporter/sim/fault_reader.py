"""The fault injection and call latency of a fleet file: which C call fails, is slowed, on which GPU.

``faults: [{call, gpu, error, delay_seconds, skip, count}]`` and ``call_latency: {seconds, calls,
gpus}`` (see ``mig_exporter.sim``); every name is checked against the C functions the simulator
implements, so a misspelt call is refused instead of silently never firing.
"""

from __future__ import annotations

import difflib
from typing import Any

from mig_exporter.sim.codes import NVML_ERROR_CODES, NVML_ERROR_NAMES
from mig_exporter.sim.fleet_checks import MAX_DELAY_SECONDS, Checks
from mig_exporter.sim.latency import CallLatency
from mig_exporter.sim.library import c_function_targets
from mig_exporter.sim.state import Fault

FAULT_KEYS = ("call", "gpu", "error", "delay_seconds", "skip", "count")
CALL_LATENCY_KEYS = ("seconds", "calls", "gpus")


def read_fault(checks: Checks, raw: Any, path: str, gpu_count: int) -> Fault:
    entry = checks.mapping(raw, path, FAULT_KEYS, required=("call",))
    call = _c_function(checks, entry["call"], f"{path}.call")
    if "error" not in entry and "delay_seconds" not in entry:
        raise checks.error(path, "a fault needs an error, a delay_seconds, or both")
    return Fault(
        call=call,
        gpu=_gpu_index(checks, entry["gpu"], f"{path}.gpu", gpu_count) if "gpu" in entry else None,
        error=_error_code(checks, entry["error"], f"{path}.error") if "error" in entry else None,
        delay_seconds=checks.number(
            entry.get("delay_seconds", 0), f"{path}.delay_seconds", maximum=MAX_DELAY_SECONDS
        ),
        skip=checks.integer(entry.get("skip", 0), f"{path}.skip", 0),
        count=checks.integer(entry["count"], f"{path}.count", 1) if "count" in entry else None,
    )


def read_call_latency(checks: Checks, raw: Any, gpu_count: int) -> CallLatency:
    """``call_latency: {seconds: 0.001, calls: {<C symbol>: s}, gpus: {<index>: s}}``."""
    entry = checks.mapping(raw, "call_latency", CALL_LATENCY_KEYS)
    calls = checks.any_mapping(entry.get("calls"), "call_latency.calls")
    gpus = checks.any_mapping(entry.get("gpus"), "call_latency.gpus")
    return CallLatency(
        seconds=_seconds(checks, entry.get("seconds", 0), "call_latency.seconds"),
        calls={_c_function(checks, call, f"call_latency.calls.{call}"):
               _seconds(checks, s, f"call_latency.calls.{call}") for call, s in calls.items()},
        gpus={_gpu_index(checks, index, f"call_latency.gpus.{index}", gpu_count):
              _seconds(checks, s, f"call_latency.gpus.{index}") for index, s in gpus.items()},
    )


def _seconds(checks: Checks, raw: Any, path: str) -> float:
    return checks.number(raw, path, maximum=MAX_DELAY_SECONDS)


def _c_function(checks: Checks, raw: Any, path: str) -> str:
    """The name of a C function the simulator implements."""
    call = checks.string(raw, path)
    known = c_function_targets()
    if call not in known:
        close = difflib.get_close_matches(call, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise checks.error(path, f"{call!r} is not a C function the simulator implements{hint}")
    return call


def _gpu_index(checks: Checks, raw: Any, path: str, gpu_count: int) -> int:
    index = checks.integer(raw, path)
    if not 0 <= index < gpu_count:
        raise checks.error(path, f"{index} is not the index of a GPU of this fleet (it has {gpu_count})")
    return index


def _error_code(checks: Checks, raw: Any, path: str) -> int:
    """An NVML error by name without ``NVML_ERROR_`` (``NOT_SUPPORTED``) or by code (3)."""
    if isinstance(raw, str) and raw.upper() in NVML_ERROR_CODES:
        return NVML_ERROR_CODES[raw.upper()]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in NVML_ERROR_NAMES:
        return raw
    close = difflib.get_close_matches(str(raw).upper(), NVML_ERROR_CODES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise checks.error(
        path, f"{raw!r} is not an NVML error name or code{hint}, e.g. NOT_SUPPORTED or GPU_IS_LOST"
    )
