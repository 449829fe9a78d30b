"""The simulated XID events (docs/fleet-telemetry.md) through the real pynvml: fleet keys checked
and written back, events in time order once per set, TIMEOUT with nothing due, NOT_SUPPORTED for
event types the simulator does not model and on MIG device handles, INVALID_ARGUMENT after free."""

from __future__ import annotations

import pynvml
import pytest

from mig_exporter.sim import FleetError, dump_fleet, parse_fleet

from .conftest import StartNvml

FLEET = """gpus:
  - model: H100-SXM5-80GB
    xid_events:
      - {xid: 48, after_seconds: 0.2}
      - {xid: 79, after_seconds: 0.0}
  - model: A100-SXM4-80GB
    mig: enabled
    instances: [{profile: 7g.80gb}]
    xid_events:
      - {xid: 94, after_seconds: 0.1, gpu_instance: 0}
"""


def test_xid_events_round_trip_through_the_canonical_dump() -> None:
    fleet = parse_fleet(FLEET, "xid.yaml")
    assert parse_fleet(dump_fleet(fleet), "dumped.yaml") == fleet
    assert [(e.xid, e.after_seconds, e.gpu_instance) for e in fleet.gpus[1].xid_events] == [(94, 0.1, 0)]


@pytest.mark.parametrize(("event", "message"), [
    ("{xid: 79}", "xid.yaml: gpus[0].xid_events[0]: after_seconds is required"),
    ("{xid: 0, after_seconds: 1}", "xid.yaml: gpus[0].xid_events[0].xid: 0 is less than 1"),
    ("{xid: 79, after_seconds: -1}", "xid.yaml: gpus[0].xid_events[0].after_seconds: -1 is less than 0"),
    ("{xid: 79, after: 1}", "xid.yaml: gpus[0].xid_events[0].after: unknown key; allowed: xid, after_"),
])
def test_bad_xid_events_are_refused_with_their_path(event: str, message: str) -> None:
    with pytest.raises(FleetError) as refused:
        parse_fleet(f"gpus:\n  - model: H100-SXM5-80GB\n    xid_events: [{event}]\n", "xid.yaml")
    assert str(refused.value).startswith(message)


def test_events_come_in_time_order_once_per_set(start_nvml: StartNvml) -> None:
    start_nvml(FLEET)
    devices = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(2)]
    event_set = pynvml.nvmlEventSetCreate()
    for device in devices:
        pynvml.nvmlDeviceRegisterEvents(device, pynvml.nvmlEventTypeXidCriticalError, event_set)
    seen = []
    for _ in range(3):
        data = pynvml.nvmlEventSetWait_v2(event_set, 5000)
        assert data.eventType == pynvml.nvmlEventTypeXidCriticalError
        gpu = [pynvml.nvmlDeviceGetUUID(d) for d in devices].index(pynvml.nvmlDeviceGetUUID(data.device))
        seen.append((gpu, data.eventData, data.gpuInstanceId))
    assert seen == [(0, 79, 0xFFFFFFFF), (1, 94, 0), (0, 48, 0xFFFFFFFF)]
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set, 0)
    # a second set registered now gets none of the events that already happened
    late = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(devices[0], pynvml.nvmlEventTypeXidCriticalError, late)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(late, 0)
    pynvml.nvmlEventSetFree(event_set)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlEventSetWait_v2(event_set, 0)


def test_unmodelled_event_types_and_mig_devices_are_not_supported(start_nvml: StartNvml) -> None:
    start_nvml(FLEET)
    event_set = pynvml.nvmlEventSetCreate()
    device = pynvml.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(device, pynvml.nvmlEventTypeAll, event_set)
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(mig, pynvml.nvmlEventTypeXidCriticalError, event_set)
