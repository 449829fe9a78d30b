"""``mig-exporter diagnose`` end to end: the real pynvml over the simulated NVML library, through
``cli.main``, on the built-in incident and on fleet files written by the tests."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from mig_exporter.cli import main
from mig_exporter.sim import install, uninstall

from .processes import SLEEPER, start_sleeper

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "diagnose.schema.json").read_text())
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def diagnose(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["diagnose", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def diagnose_json(capsys, *args: str) -> tuple[int, dict]:
    status, out, _ = diagnose(capsys, *args, "--format", "json")
    document = json.loads(out)
    jsonschema.validate(document, SCHEMA)
    return status, document


@pytest.fixture
def write_fleet(tmp_path, monkeypatch):
    """Write a fleet file in a fresh working directory; its short relative path keeps the report's
    commands within 80 columns."""
    monkeypatch.chdir(tmp_path)

    def write(gpus: list[dict], name: str = "fleet.yaml") -> str:
        document = {"driver_version": "575.57.08", "cuda_version": "12.9", "gpus": gpus}
        Path(name).write_text(yaml.safe_dump(document))
        return name

    return write


def partitioned(pids: tuple[int, int], persistence: bool = True) -> dict:
    return {
        "model": "A100-SXM4-80GB", "persistence": persistence, "mig": "enabled",
        "instances": [
            {"profile": "3g.40gb", "placement": 0,
             "processes": [{"pid": pids[0], "name": "server-a", "used_memory_mib": 12000}]},
            {"profile": "3g.40gb", "placement": 4,
             "processes": [{"pid": pids[1], "name": "server-b", "used_memory_mib": 9000}]},
        ],
    }


def assert_fits_80_columns(text: str) -> None:
    widest = max(text.splitlines(), key=len)
    assert len(widest) <= 80, widest


def test_seed_incident_text(capsys):
    status, out, err = diagnose(capsys, "--fleet", "seed-incident")
    assert (status, err) == (1, "")
    for gpu in range(4):
        assert f"GPU {gpu} is shared by 2 processes without MIG: PIDs 78914, 81007" in out
    assert "PID 78914 (python) holds memory on GPUs 0-3" in out
    assert "PID 81007 (python) holds memory on GPUs 0-3" in out
    assert "PID 78914 python: 18060 MiB + 20% = 21672 MiB -> 3g.40gb (40192 MiB) on GPU 0" in out
    assert "PID 81007 python: 18164 MiB + 20% = 21796 MiB -> 3g.40gb (40192 MiB) on GPU 0" in out
    assert "Partition GPU 0 (NVIDIA A100-SXM4-80GB) as 3g.40gb,3g.40gb." in out
    assert "This frees GPUs 1-3 for other work." in out
    # a built-in fleet is read-only: the advice copies it, then partitions the copy
    assert ("    mig-exporter fleet show seed-incident > fleet.yaml\n"
            "    mig-exporter remediate --fleet fleet.yaml --gpu 0 --layout 3g.40gb,3g.40gb\n") in out
    assert "--fleet seed-incident --gpu" not in out
    assert not ANSI.search(out)  # not a terminal
    assert_fits_80_columns(out)


def test_seed_incident_json(capsys):
    status, report = diagnose_json(capsys, "--fleet", "seed-incident")
    assert status == report["exit_status"] == 1
    assert report["fleet"] == "seed-incident"
    found = [(f["kind"], f["gpu_indices"], f["pids"]) for f in report["findings"]]
    assert found == [
        *(("unpartitioned_sharing", [gpu], [78914, 81007]) for gpu in range(4)),
        ("spanning_process", [0, 1, 2, 3], [78914]),
        ("spanning_process", [0, 1, 2, 3], [81007]),
    ]
    advice = report["advice"]
    assert [(w["pid"], w["gpu_index"], w["profile"]) for w in advice["workloads"]] == [
        (78914, 0, "3g.40gb"), (81007, 0, "3g.40gb"),
    ]
    assert advice["layouts"] == [
        {"gpu_index": 0, "model": "NVIDIA A100-SXM4-80GB", "layout": ["3g.40gb", "3g.40gb"]},
    ]
    assert advice["freed_gpus"] == [1, 2, 3]
    assert advice["copy_fleet_command"] == "mig-exporter fleet show seed-incident > fleet.yaml"
    assert advice["remediate"] == [{
        "gpu_indices": [0], "layout": ["3g.40gb", "3g.40gb"],
        "command": "mig-exporter remediate --fleet fleet.yaml --gpu 0 --layout 3g.40gb,3g.40gb",
    }]
    assert [s["command"] for s in report["findings"][0]["next_steps"] if s["command"]] == [
        advice["copy_fleet_command"], advice["remediate"][0]["command"],
    ]
    assert [g["memory_total_bytes"] for g in report["gpus"]] == [81920 * 2**20] * 4


def mig_exporter_args(command: str) -> list[str]:
    """``mig-exporter ARGS…`` as the arguments of ``cli.main``."""
    program, *args = shlex.split(command)
    assert program == "mig-exporter"
    return args


def test_seed_incident_advice_applies_cleanly_once_the_processes_are_stopped(capsys, tmp_path, monkeypatch):
    """The advised commands as they are printed: copy the built-in fleet, stop the processes (in the
    copy), then the remediate command with --apply."""
    monkeypatch.chdir(tmp_path)
    _, report = diagnose_json(capsys, "--fleet", "seed-incident")
    (step,) = report["advice"]["remediate"]
    show, redirect = report["advice"]["copy_fleet_command"].split(" > ")
    assert main(mig_exporter_args(show)) == 0
    fleet = yaml.safe_load(capsys.readouterr().out)
    for gpu in fleet["gpus"]:
        gpu.pop("processes", None)
        gpu.pop("memory_used_mib", None)
    Path(redirect).write_text(yaml.safe_dump(fleet))
    gpus, layout = ",".join(map(str, step["gpu_indices"])), ",".join(step["layout"])
    assert f"--fleet {redirect} --gpu {gpus} --layout {layout}" in step["command"]
    status = main([*mig_exporter_args(step["command"]), "--apply", "--yes"])
    capsys.readouterr()
    assert status == 0
    _, after = diagnose_json(capsys, "--fleet", redirect)
    assert after["gpus"][0]["mig_mode_current"] is True
    assert sorted(i["profile"] for i in after["gpus"][0]["instances"]) == ["3g.40gb", "3g.40gb"]
    assert [f for f in after["findings"] if f["severity"] != "info"] == []


def test_built_in_healthy_mig_fleet_exits_0_without_findings(capsys):
    status, out, _ = diagnose(capsys, "--fleet", "healthy-mig")
    assert status == 0 and "healthy: no findings" in out
    assert_fits_80_columns(out)
    status, report = diagnose_json(capsys, "--fleet", "healthy-mig")
    assert (status, report["findings"], report["advice"]) == (0, [], None)
    assert all(g["mig_mode_current"] and g["instances"] for g in report["gpus"])


def test_built_in_mig_pending_fleet_findings(capsys):
    status, report = diagnose_json(capsys, "--fleet", "mig-pending")
    assert status == 1
    found = {(f["kind"], f["gpu_indices"][0]): f for f in report["findings"]}
    assert {("mig_pending", 0), ("mig_without_instances", 1)} <= set(found)
    pending, empty = found[("mig_pending", 0)], found[("mig_without_instances", 1)]
    assert pending["next_steps"][0]["action"].startswith("stop PID 31001")
    assert pending["next_steps"][-1]["command"] == "sudo nvidia-smi -r -i 0"
    copy, create = empty["next_steps"]
    assert copy["command"] == "mig-exporter fleet show mig-pending > fleet.yaml"
    assert "as GPU 2 has" in create["action"]
    assert create["command"] == "mig-exporter remediate --fleet fleet.yaml --gpu 1 --layout 3g.40gb,3g.40gb"
    _, out, _ = diagnose(capsys, "--fleet", "mig-pending")
    assert_fits_80_columns(out)


def test_healthy_mig_fleet_file_has_no_findings(capsys, write_fleet):
    fleet = write_fleet([partitioned((5001, 5002)), partitioned((6001, 6002))])
    status, out, _ = diagnose(capsys, "--fleet", fleet)
    assert status == 0
    assert "healthy: no findings" in out and "Findings: none" in out
    assert "5001     server-a" in out and "3g.40gb (GI 1, CI 0)" in out
    status, report = diagnose_json(capsys, "--fleet", fleet)
    assert (status, report["findings"], report["advice"]) == (0, [], None)
    assert [len(g["instances"]) for g in report["gpus"]] == [2, 2]


def test_pending_mode_and_empty_mig_gpu_findings(capsys, write_fleet):
    fleet = write_fleet([
        {"model": "A100-SXM4-80GB", "persistence": True, "mig": "pending-enable"},
        {"model": "H100-SXM5-80GB", "persistence": True, "mig": "enabled", "instances": []},
        {"model": "A100-SXM4-80GB", "persistence": True, "mig": "pending-disable", "instances": []},
    ])
    status, report = diagnose_json(capsys, "--fleet", fleet)
    assert status == 1
    found = [(f["kind"], f["gpu_indices"]) for f in report["findings"]]
    assert ("mig_pending", [0]) in found
    assert ("mig_without_instances", [1]) in found
    assert ("mig_pending", [2]) in found
    steps = {(f["kind"], f["gpu_indices"][0]): f["next_steps"] for f in report["findings"]}
    assert steps[("mig_pending", 0)][-1]["command"] == "sudo nvidia-smi -r -i 0"
    assert steps[("mig_without_instances", 1)][0]["command"] == (
        f"mig-exporter remediate --fleet {fleet} --gpu 1 --layout 3g.40gb,3g.40gb"
    )
    _, out, _ = diagnose(capsys, "--fleet", fleet)
    assert "GPU 0: MIG mode enabled is pending a reset" in out
    assert "MIG disabled (enable pending)" in out
    assert "GPU 1: MIG is enabled but it has no instances" in out
    assert_fits_80_columns(out)


def test_a_lost_gpu(capsys, write_fleet):
    fleet = write_fleet([partitioned((5001, 5002)), {"model": "A100-SXM4-80GB", "lost": True}])
    status, report = diagnose_json(capsys, "--fleet", fleet)
    assert status == 1
    assert [(f["kind"], f["severity"], f["gpu_indices"]) for f in report["findings"]] == [
        ("gpu_lost", "critical", [1]),
    ]
    assert report["gpus"][1]["lost"] is True


def test_fleet_attribution_is_reported_and_the_host_is_not_asked(capsys, write_fleet):
    """The simulated pid is this test's own pid: had the host been read, the user would be ours."""
    me = os.getpid()
    fleet = write_fleet([{
        "model": "A100-SXM4-80GB",
        "processes": [
            {"pid": me, "name": "python", "used_memory_mib": 1000, "user": "svc-llm",
             "cmdline": "python serve.py --port 8000", "env": {"HF_HOME": "/models"},
             "container": "cri-o://" + "ab" * 32},
            {"pid": 2, "name": "python", "used_memory_mib": 1000},
        ],
    }])
    _, report = diagnose_json(capsys, "--fleet", fleet)
    by_pid = {p["pid"]: p for p in report["processes"]}
    first, second = by_pid[me], by_pid[2]
    assert (first["pid"], first["source"], first["user"]) == (me, "fleet file", "svc-llm")
    assert first["cmdline"] == ["python", "serve.py", "--port", "8000"]
    assert first["container"] == {"runtime": "cri-o", "id": "ab" * 32, "pod_uid": None}
    assert first["gpu_visibility"] == ("no CUDA_VISIBLE_DEVICES: this process sees every GPU its "
                                       "container was given")
    assert first["nvidia_visible_devices"] is None
    assert first["started_at"] is None
    assert second["source"] == "none" and second["user"] is None
    assert "simulated process: not on this host" in second["notes"][0]
    _, out, _ = diagnose(capsys, "--fleet", fleet)
    assert "user svc-llm, cri-o abababababab" in out
    assert "command: python serve.py --port 8000" in out
    assert "then: CUDA_VISIBLE_DEVICES=<its MIG UUID> python serve.py --port 8000" in out
    assert_fits_80_columns(out)


def test_a_fleet_file_is_remediated_in_place(capsys, write_fleet):
    """remediate --apply writes a fleet file: no copy step, and the commands name the file."""
    fleet = write_fleet([{"model": "A100-SXM4-80GB", "processes": [
        {"pid": 5001, "name": "python", "used_memory_mib": 1000},
        {"pid": 5002, "name": "python", "used_memory_mib": 1000},
    ]}])
    _, report = diagnose_json(capsys, "--fleet", fleet)
    remediate = f"mig-exporter remediate --fleet {fleet} --gpu 0 --layout 1g.10gb,1g.10gb"
    assert report["advice"]["copy_fleet_command"] is None
    assert [r["command"] for r in report["advice"]["remediate"]] == [remediate]
    (sharing,) = report["findings"]
    assert [s["command"] for s in sharing["next_steps"] if s["command"]] == [remediate]
    _, out, _ = diagnose(capsys, "--fleet", fleet)
    assert "fleet show" not in out and "copy the built-in fleet" not in out


def test_headroom_flag(capsys):
    _, report = diagnose_json(capsys, "--fleet", "seed-incident", "--headroom", "10%")
    assert report["advice"]["headroom_ratio"] == 0.1
    assert report["advice"]["layouts"][0]["layout"] == ["3g.40gb", "1g.20gb"]


@pytest.mark.parametrize("value", ["abc", "-5%", "1000%", "0.2x"])
def test_bad_headroom_is_one_line_and_exit_2(capsys, value):
    status, out, err = diagnose(capsys, "--fleet", "seed-incident", f"--headroom={value}")
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"mig-exporter diagnose: error: --headroom {value!r}: expected a percentage")


def test_invalid_fleet_file_is_one_line_and_exit_2(capsys, write_fleet):
    fleet = write_fleet([{"model": "A100-SXM4-80GB", "mig": "enabled",
                                    "instances": [{"profile": "3g.40gb", "placement": 3}]}])
    status, out, err = diagnose(capsys, "--fleet", fleet)
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert fleet in err and "gpus[0].instances[0].placement" in err


def test_without_a_driver_it_says_how_to_try_a_fleet(capsys):
    status, out, err = diagnose(capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert "no NVIDIA driver found" in err and "--fleet seed-incident" in err


def test_colour_only_when_asked(capsys):
    _, always, _ = diagnose(capsys, "--fleet", "seed-incident", "--color", "always")
    assert "\x1b[1;31mCRITICAL" in always
    assert_fits_80_columns(ANSI.sub("", always))
    _, never, _ = diagnose(capsys, "--fleet", "seed-incident", "--color", "never")
    assert not ANSI.search(never)
    def without_time(text: str) -> list[str]:
        return [line for line in text.splitlines() if "read at" not in line]

    assert without_time(ANSI.sub("", always)) == without_time(never)


def test_nvml_stopping_mid_reading_is_an_error(capsys, write_fleet):
    fleet = write_fleet([partitioned((5001, 5002))])
    document = yaml.safe_load(Path(fleet).read_text())
    document["faults"] = [{"call": "nvmlDeviceGetCount_v2", "error": "DRIVER_NOT_LOADED"}]
    Path(fleet).write_text(yaml.safe_dump(document))
    status, out, err = diagnose(capsys, "--fleet", fleet)
    assert status == 2 and out == ""
    assert err == ("mig-exporter diagnose: error: NVML stopped answering while the GPUs were read "
                   "(nvmlDeviceGetCount: Driver Not Loaded)\n")


def test_a_failed_call_is_reported_and_the_rest_stands(capsys, write_fleet):
    fleet = write_fleet([partitioned((5001, 5002))])
    document = yaml.safe_load(Path(fleet).read_text())
    document["faults"] = [{"call": "nvmlDeviceGetPowerUsage", "gpu": 0, "error": "UNKNOWN"}]
    Path(fleet).write_text(yaml.safe_dump(document))
    status, report = diagnose_json(capsys, "--fleet", fleet)
    assert (status, report["verified"]) == (0, True)  # power is telemetry: the findings stand
    assert report["collection_errors"] == [
        {"call": "nvmlDeviceGetPowerUsage", "error": "Unknown Error", "gpu_index": 0},
    ]
    _, out, _ = diagnose(capsys, "--fleet", fleet)
    assert out.endswith("Could not read\n  nvmlDeviceGetPowerUsage on GPU 0: Unknown Error\n")


@pytest.fixture
def host_nvml():
    """The simulated library put under pynvml before diagnose runs without --fleet: diagnose then
    takes it for this host's driver and attributes the pids from /proc, as on a real host."""
    yield install
    uninstall()


def test_on_a_host_the_pids_are_read_from_proc(capsys, write_fleet, host_nvml):
    """A real child process of the test stands in for a GPU process; another pid has exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    child = start_sleeper({"PATH": os.environ.get("PATH", "")})
    try:
        fleet = write_fleet([{"model": "A100-SXM4-80GB", "processes": [
            {"pid": child.pid, "name": "python", "used_memory_mib": 1000},
            {"pid": gone.pid, "name": "python", "used_memory_mib": 1000},
        ]}])
        host_nvml(fleet)
        status, report = diagnose_json(capsys)
        _, out, _ = diagnose(capsys)
    finally:
        child.kill()
        child.communicate()
    assert status == 1 and report["fleet"] is None
    by_pid = {p["pid"]: p for p in report["processes"]}
    mine, vanished = by_pid[child.pid], by_pid[gone.pid]
    assert (mine["source"], mine["user"]) == ("host", pwd.getpwuid(os.getuid()).pw_name)
    assert tuple(mine["cmdline"]) == SLEEPER
    assert mine["environment_read"] is True and mine["cuda_visible_devices"] is None
    assert mine["gpu_visibility"].startswith("no CUDA_VISIBLE_DEVICES: this process sees every GPU")
    assert mine["started_at"] is not None
    assert (vanished["source"], vanished["user"]) == ("none", None)
    assert "process not found on this host" in vanished["notes"][0]
    assert f"PID {gone.pid}  python  on GPU 0, 1000 MiB in total\n  user unknown\n" in out
    assert "mig-exporter remediate --gpu 0 --layout 1g.10gb,1g.10gb" in out  # no --fleet on a host


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ({"call": "nvmlDeviceGetCount_v2", "error": "UNKNOWN"},
         "NVML could not count the GPUs (nvmlDeviceGetCount: Unknown Error)"),
        ({"call": "nvmlDeviceGetHandleByIndex_v2", "error": "UNKNOWN"},
         "NVML could not open any of the 2 GPU(s) (nvmlDeviceGetHandleByIndex on GPU 0: Unknown Error)"),
        # issue 11: GPU_IS_LOST from a call about no GPU was a traceback and exit 1.
        ({"call": "nvmlDeviceGetCount_v2", "error": "GPU_IS_LOST"},
         "NVML stopped answering while the GPUs were read (nvmlDeviceGetCount: GPU is lost)"),
        ({"call": "nvmlSystemGetDriverVersion", "error": "GPU_IS_LOST"},
         "NVML stopped answering while the GPUs were read (nvmlSystemGetDriverVersion: GPU is lost)"),
    ],
)
def test_a_reading_that_failed_as_a_whole_is_an_error(capsys, write_fleet, fault, cause):
    """NVML read no GPU: not "0 GPU(s), no findings" (exit 1), but exit 2 with the call and NVML's
    error on one line."""
    fleet = write_fleet([partitioned((5001, 5002)), partitioned((6001, 6002))])
    document = yaml.safe_load(Path(fleet).read_text())
    document["faults"] = [fault]
    Path(fleet).write_text(yaml.safe_dump(document))
    for output in ("text", "json"):
        status, out, err = diagnose(capsys, "--fleet", fleet, "--format", output)
        assert (status, out, err) == (2, "", f"mig-exporter diagnose: error: {cause}\n")


@pytest.mark.parametrize(
    ("fault", "recorded"),
    [
        ({"call": "nvmlDeviceGetHandleByIndex_v2", "gpu": 1, "error": "UNKNOWN"},
         "nvmlDeviceGetHandleByIndex"),
        ({"call": "nvmlDeviceGetComputeRunningProcesses_v3", "error": "UNKNOWN"},
         "nvmlDeviceGetComputeRunningProcesses"),
    ],
)
def test_a_failed_call_the_findings_need_is_never_called_healthy(capsys, write_fleet, fault, recorded):
    """Without a GPU or its processes, "no findings" is a claim nothing checked: the GPUs that were
    read are reported, not verified (exit 1)."""
    fleet = write_fleet([partitioned((5001, 5002)), partitioned((6001, 6002))])
    document = yaml.safe_load(Path(fleet).read_text())
    document["faults"] = [fault]
    Path(fleet).write_text(yaml.safe_dump(document))
    status, report = diagnose_json(capsys, "--fleet", fleet)
    assert (status, report["exit_status"], report["verified"]) == (1, 1, False)
    assert recorded in [e["call"] for e in report["collection_errors"]]
    assert [i["profile"] for i in report["gpus"][0]["instances"]] == ["3g.40gb", "3g.40gb"]  # GPU 0 was read
    status, out, _ = diagnose(capsys, "--fleet", fleet)
    assert status == 1 and "healthy" not in out
    unwrapped = out.replace("\n  ", " ")
    assert "not verified: NVML calls the findings need failed (see Could not read)" in unwrapped
    assert_fits_80_columns(out)


def test_built_in_pending_disable_fleet_finds_the_pending_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """A MIG disable waiting for a reset on a GPU whose instance still runs a job: one warning,
    exit 1, and the steps say to stop the job before the reset."""
    assert main(["diagnose", "--fleet", "mig-pending-disable", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(f["kind"], f["gpu_indices"]) for f in report["findings"]] == [("mig_pending", [0])]
    assert report["findings"][0]["next_steps"][0]["action"].startswith("stop PID 52001")


def test_a_shared_gpu_says_which_process_computes_and_the_advice_sizes_its_compute(capsys, write_fleet):
    fleet = write_fleet([{"model": "A100-SXM4-80GB", "processes": [
        {"pid": 78914, "name": "python", "used_memory_mib": 15000, "sm_util_percent": 20},
        {"pid": 81007, "name": "python", "used_memory_mib": 15000, "sm_util_percent": 20},
        {"pid": 90001, "name": "idle", "used_memory_mib": 15000}]}])
    status, out, _ = diagnose(capsys, "--fleet", fleet)
    assert status == 1
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("PID ", "78914", "90001"))]
    assert ["PID", "PROCESS", "USER", "MEMORY", "SM", "ON"] in table
    assert any(row[:2] == ["78914", "python"] and "20%" in row for row in table)
    assert any(row[:2] == ["90001", "idle"] and "-" in row for row in table)
    advice = " ".join(out.split())
    assert "computes on 20% of a GPU's SMs + 20% = 24% of its compute slices -> 2g.20gb" in advice
    assert "(sized by memory and compute)" in advice and "(sized by memory)" in advice
    _, document = diagnose_json(capsys, "--fleet", fleet)
    rules = {w["pid"]: (w["sizing_rule"], w["profile"]) for w in document["advice"]["workloads"]}
    assert rules == {78914: ("memory and compute", "2g.20gb"), 81007: ("memory and compute", "2g.20gb"),
                     90001: ("memory", "1g.20gb")}
