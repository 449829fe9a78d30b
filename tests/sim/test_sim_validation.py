"""Fleet files that are refused: one line naming the file, the path inside it and the reason.

DESIGN.md, "The fleet file": "Invalid files (unknown model or profile, a placement that overlaps
or is not valid, instances on a MIG-disabled GPU, more memory than the device or instance has, a
duplicate pid on one device) are refused with the file, the path inside it
(`gpus[2].instances[1].placement`) and the reason."
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_exporter.errors import InputError
from mig_exporter.sim import FleetError, load_fleet, parse_fleet
from mig_exporter.sim.handles import MAX_GPUS

A100 = "A100-SXM4-80GB"


def refusal(text: str) -> str:
    with pytest.raises(FleetError) as refused:
        parse_fleet(text, "lab.yaml")
    assert isinstance(refused.value, InputError)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_the_design_example_placement_message() -> None:
    """The brief's own example: `lab.yaml: gpus[2].instances[1].placement: 3 is not a valid start
    for 3g.40gb on A100-SXM4-80GB (valid: 0, 4)`."""
    text = f"""gpus:
  - {{model: {A100}}}
  - {{model: {A100}}}
  - model: {A100}
    mig: enabled
    instances:
      - {{profile: 3g.40gb, placement: 0}}
      - {{profile: 3g.40gb, placement: 3}}
"""
    assert refusal(text) == (
        "lab.yaml: gpus[2].instances[1].placement: 3 is not a valid start for 3g.40gb on A100-SXM4-80GB "
        "(valid: 0, 4)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "- a\n- b\n",
            "lab.yaml: the top level must be a mapping with keys description, driver_version, cuda_version, "
            "models, gpus, faults, call_latency",
            id="not-a-mapping",
        ),
        pytest.param("driver_version: '575.57.08'\n", "lab.yaml: gpus is required", id="no-gpus"),
        pytest.param(
            "gpus: []\ngpu: []\n",
            "lab.yaml: gpu: unknown key (did you mean gpus?); allowed: description, driver_version, "
            "cuda_version, "
            "models, gpus, faults, call_latency",
            id="unknown-top-key",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    instances: [{{profile: 7g.80gb, placment: 0}}]\n    mig: "
            "enabled\n",
            "lab.yaml: gpus[0].instances[0].placment: unknown key (did you mean placement?); allowed: "
            "profile, "
            "placement, uuid, processes, compute_instances, gpm",
            id="unknown-instance-key",
        ),
        pytest.param(
            "gpus:\n  - model: A100\n",
            "lab.yaml: gpus[0].model: unknown model 'A100' (models: A100-SXM4-40GB, A100-SXM4-80GB, "
            "A100-PCIE-80GB, A30, H100-SXM5-80GB, H100-NVL, H200, H800, B200, GB200, GH200, "
            "RTX-PRO-6000-Blackwell)",
            id="unknown-model",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances: [{{profile: 3g.20gb}}]\n",
            "lab.yaml: gpus[0].instances[0].profile: '3g.20gb' is not a GPU instance profile of "
            "A100-SXM4-80GB "
            "(1g.10gb, 1g.10gb+me, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb)",
            id="unknown-profile",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances:\n"
            "      - {profile: 3g.40gb, placement: 4}\n      - {profile: 2g.20gb, placement: 4}\n",
            "lab.yaml: gpus[0].instances[1].placement: 4 overlaps the 3g.40gb at 4 (gpus[0].instances[0])",
            id="overlapping-placement",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances: [{{profile: 7g.80gb}}, {{profile: "
            f"1g.10gb}}]\n",
            "lab.yaml: gpus[0].instances[1].profile: no room left for 1g.10gb on A100-SXM4-80GB (memory "
            "slices "
            "0, 1, 2, 3, 4, 5, 6, 7 are taken)",
            id="no-room",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances: [{{profile: 1g.10gb+me}}, "
            f"{{profile: 1g+me}}]\n",
            "lab.yaml: gpus[0].instances[1].profile: at most 1 1g.10gb+me fit on A100-SXM4-80GB",
            id="too-many-of-a-profile",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: pending-enable\n    instances: [{{profile: 7g.80gb}}]\n",
            "lab.yaml: gpus[0].instances: GPU instances need MIG enabled, but mig is pending-enable",
            id="instances-with-mig-disabled",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    processes: [{{pid: 1, used_memory_mib: 10}}]\n",
            "lab.yaml: gpus[0].processes: processes on the whole GPU, but MIG is enabled: list them under "
            "the "
            "instance they run in",
            id="whole-gpu-processes-with-mig-enabled",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n"
            "    processes: [{pid: 1, used_memory_mib: 50000}, {pid: 2, used_memory_mib: 40000}]\n",
            "lab.yaml: gpus[0].processes: 90000 MiB in processes do not fit: A100-SXM4-80GB has 81920 MiB, "
            "of "
            "which the driver uses 4",
            id="more-memory-than-the-gpu",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances:\n      - profile: 1g.10gb\n"
            "        processes: [{pid: 1, used_memory_mib: 9728}]\n",
            "lab.yaml: gpus[0].instances[0].processes: 9728 MiB in processes do not fit: 1g.10gb has 9728 "
            "MiB, of "
            "which the driver uses 27",
            id="more-memory-than-the-instance",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    processes: [{{pid: 7, used_memory_mib: 1}}, {{pid: 7, "
            f"used_memory_mib: 2}}]\n",
            "lab.yaml: gpus[0].processes[1].pid: pid 7 is already on this GPU (gpus[0].processes[0])",
            id="duplicate-pid",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances:\n"
            "      - {profile: 3g.40gb, processes: [{pid: 7, used_memory_mib: 1}]}\n"
            "      - {profile: 3g.40gb, processes: [{pid: 7, used_memory_mib: 1}]}\n",
            "lab.yaml: gpus[0].instances[1].processes[0].pid: pid 7 is already on this GPU "
            "(gpus[0].instances[0].processes[0])",
            id="duplicate-pid-across-mig-devices",
        ),
        pytest.param(
            f"gpus:\n  - {{model: {A100}, mig: true}}\n",
            "lab.yaml: gpus[0].mig: True is not a MIG mode (disabled, enabled, pending-enable, "
            "pending-disable)",
            id="bad-mig-value",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    memory_used_mib: 10\n    processes: [{{pid: 1, used_memory_mib: "
            f"100}}]\n",
            "lab.yaml: gpus[0].memory_used_mib: 10 is less than the 100 MiB its processes use",
            id="memory-used-below-processes",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    processes: [{{pid: abc, used_memory_mib: 100}}]\n",
            "lab.yaml: gpus[0].processes[0].pid: 'abc' is not a whole number",
            id="pid-not-a-number",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    processes: [{{pid: 5}}]\n",
            "lab.yaml: gpus[0].processes[0]: used_memory_mib is required",
            id="process-without-memory",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    processes: [{{pid: 5, name: python, used_memory_mib: 1}}]\n"
            f"  - model: {A100}\n    processes: [{{pid: 5, name: java, used_memory_mib: 1}}]\n",
            "lab.yaml: gpus[1].processes[0].name: pid 5 is named 'python' at gpus[0].processes[0].name; a "
            "pid has "
            "one name",
            id="one-pid-two-names",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    processes: [{{pid: 5, user: a, used_memory_mib: 1}}]\n"
            f"  - model: {A100}\n    processes: [{{pid: 5, user: b, used_memory_mib: 1}}]\n",
            "lab.yaml: gpus[1].processes[0].user: pid 5 has a different user at gpus[0].processes[0].user",
            id="one-pid-two-users",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances:\n      - profile: 3g.40gb\n"
            "        compute_instances: [{profile: 4c.3g.40gb}]\n",
            "lab.yaml: gpus[0].instances[0].compute_instances[0].profile: '4c.3g.40gb' is not a compute "
            "instance "
            "profile of 3g.40gb (1c.3g.40gb, 2c.3g.40gb, 3g.40gb)",
            id="bad-compute-instance",
        ),
        pytest.param(
            f"gpus:\n  - model: {A100}\n    mig: enabled\n    instances:\n      - profile: 3g.40gb\n"
            "        processes: [{pid: 1, used_memory_mib: 1}]\n        compute_instances: [{profile: "
            "3g.40gb}]\n",
            "lab.yaml: gpus[0].instances[0].processes: with compute_instances given, list each process "
            "under the "
            "compute instance it runs in",
            id="processes-beside-compute-instances",
        ),
        pytest.param(
            "gpus:\n  - {model: A30, uuid: GPU-1}\n  - {model: A30, uuid: GPU-1}\n",
            "lab.yaml: gpus[1].uuid: GPU-1 is already the uuid of gpus[0]",
            id="duplicate-uuid",
        ),
        pytest.param(
            "cuda_version: 12.9\ngpus: []\n",
            "lab.yaml: cuda_version: 12.9 is not a non-empty string (quote it)",
            id="unquoted-cuda-version",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPower, error: NOT_SUPPORTED}]\n",
            "lab.yaml: faults[0].call: 'nvmlDeviceGetPower' is not a C function the simulator implements "
            "(did you "
            "mean nvmlDeviceGetPowerUsage?)",
            id="fault-unknown-call",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPowerUsage, error: NOT_SUPORTED}]\n",
            "lab.yaml: faults[0].error: 'NOT_SUPORTED' is not an NVML error name or code (did you mean "
            "NOT_SUPPORTED?), e.g. NOT_SUPPORTED or GPU_IS_LOST",
            id="fault-unknown-error",
        ),
        pytest.param(
            "gpus: [{model: A30}]\nfaults: [{call: nvmlDeviceGetPowerUsage, gpu: 1, error: NOT_SUPPORTED}]\n",
            "lab.yaml: faults[0].gpu: 1 is not the index of a GPU of this fleet (it has 1)",
            id="fault-gpu-out-of-range",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPowerUsage}]\n",
            "lab.yaml: faults[0]: a fault needs an error, a delay_seconds, or both",
            id="fault-doing-nothing",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPowerUsage, delay_seconds: 1, count: 0}]\n",
            "lab.yaml: faults[0].count: 0 is less than 1",
            id="fault-count-zero",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPowerUsage, delay_seconds: .inf}]\n",
            "lab.yaml: faults[0].delay_seconds: inf is not a number",
            id="fault-endless-delay",
        ),
        pytest.param(
            "gpus: []\nfaults: [{call: nvmlDeviceGetPowerUsage, delay_seconds: 100000}]\n",
            "lab.yaml: faults[0].delay_seconds: 100000 is more than 86400",
            id="fault-delay-over-a-day",
        ),
        pytest.param(
            "gpus: [{model: A30, power_watts: .nan}]\n",
            "lab.yaml: gpus[0].power_watts: nan is not a number",
            id="power-not-a-number",
        ),
        pytest.param(
            "gpus: [{model: A30, clock_sm_mhz: 5000000000}]\n",
            "lab.yaml: gpus[0].clock_sm_mhz: 5000000000 is more than 4294967295",
            id="clock-past-an-unsigned-int",
        ),
        pytest.param(
            "gpus: [{model: A30, processes: [{pid: 4194305, used_memory_mib: 1}]}]\n",
            "lab.yaml: gpus[0].processes[0].pid: 4194305 is more than 4194304",
            id="pid-past-linux-pid-max",
        ),
        pytest.param(
            'description: "two\\nlines"\ngpus: []\n',
            "lab.yaml: description: must be one line (fleet list shows it beside the name)",
            id="description-on-two-lines",
        ),
        # Issue 11, item 8: PyYAML kept the last of two equal keys silently.
        pytest.param(
            "gpus:\n  - model: A30\ndriver_version: '575.57.08'\ngpus:\n  - model: H200\n",
            "lab.yaml: not valid YAML: line 4, column 1: duplicate key gpus (first on line 1)",
            id="duplicate-key-top-level",
        ),
        pytest.param(
            "gpus:\n  - model: A30\n    mig: enabled\n    persistence: true\n    mig: disabled\n",
            "lab.yaml: not valid YAML: line 5, column 5: duplicate key mig (first on line 3)",
            id="duplicate-key-in-a-gpu",
        ),
        pytest.param(
            "gpus:\n  - {model: A30, processes: [{pid: 7, used_memory_mib: 10, pid: 8}]}\n",
            "lab.yaml: not valid YAML: line 2, column 60: duplicate key pid (first on line 2)",
            id="duplicate-key-flow-style",
        ),
        # Issue 11, item 8: `gpus: []` was reported healthy.
        *(
            pytest.param(
                f"{gpus}\n", "lab.yaml: gpus: lists no GPU; a fleet describes a host with at least one",
                id=f"no-gpus-{gpus}",
            )
            for gpus in ("gpus: []", "gpus:", "gpus: null")
        ),
        # Issue 11, item 8: an error named a pci_bus_id the user never wrote; the error is at the GPU
        # that gives it, saying that the other GPU's is derived.
        pytest.param(
            "gpus:\n  - model: A30\n  - {model: A30, pci_bus_id: '00000000:07:00.0'}\n",
            "lab.yaml: gpus[1].pci_bus_id: 00000000:07:00.0 is already the pci_bus_id of gpus[0] "
            "(derived from its index, as gpus[0] gives none)",
            id="pci-bus-id-of-a-later-gpu-clashes-with-a-derived-one",
        ),
        pytest.param(
            "gpus:\n  - {model: A30, pci_bus_id: '00000000:0F:00.0'}\n  - model: A30\n",
            "lab.yaml: gpus[0].pci_bus_id: 00000000:0F:00.0 is already the pci_bus_id of gpus[1] "
            "(derived from its index, as gpus[1] gives none)",
            id="pci-bus-id-of-an-earlier-gpu-clashes-with-a-derived-one",
        ),
        # The simulator's handles hold a GPU index in 16 bits: past that, the count and the limit.
        pytest.param(
            "gpus: [" + "A30, " * (MAX_GPUS + 1) + "]\n",
            f"lab.yaml: gpus: {MAX_GPUS + 1} GPUs; the simulator models at most {MAX_GPUS}",
            id="more-gpus-than-handles-hold",
        ),
    ],
)
def test_refused_with_the_path_and_the_reason(text: str, expected: str) -> None:
    """DESIGN.md: refused "with the file, the path inside it … and the reason"."""
    assert refusal(text) == expected


def test_not_yaml_names_the_line_and_column() -> None:
    """Refused "with the file, the path inside it … and the reason": for text that is not YAML the
    place is a line and column (the reason's wording is the YAML parser's)."""
    assert refusal("gpus: [\n  - model: x\n").startswith("lab.yaml: not valid YAML: line 2, column 3: ")


def test_a_spec_that_is_neither_a_file_nor_a_built_in() -> None:
    """DESIGN.md: "`--fleet` takes a path or the name of a built-in fleet"; anything else is named
    in the error with the built-in names to choose from."""
    with pytest.raises(FleetError) as refused:
        load_fleet("no-such-fleet.yaml")
    assert str(refused.value) == (
        "no-such-fleet.yaml: no such fleet file, and not a built-in fleet (built-in: h100-mixed, "
        "healthy-mig, "
        "large, large-1000, mig-pending, mig-pending-disable, mixed-models, seed-incident)"
    )


def test_a_directory_is_not_a_fleet_file(tmp_path: Path) -> None:
    """`--fleet` takes "a path or the name of a built-in fleet": a directory is named as such, not
    reported as missing."""
    with pytest.raises(FleetError) as refused:
        load_fleet(str(tmp_path))
    assert str(refused.value) == (
        f"{tmp_path}: not a regular file; give a fleet file or a built-in fleet's name"
    )
