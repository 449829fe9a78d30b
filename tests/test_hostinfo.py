"""Process attribution: real processes of this machine, a vanished one, an unreadable one, cgroup
files of each container runtime (fixtures), and fleet-file fields for simulated PIDs."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from diagnose.processes import SLEEPER, start_sleeper

from mig_exporter.hostinfo import (
    Attribution,
    Container,
    attribute_host_process,
    attribute_simulated_process,
    container_from_cgroup,
    slurm_job_from_cgroup,
    systemd_unit_from_cgroup,
)

CGROUP_FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
DOCKER_ID = "3f4e1a6c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"
OTHER_ID = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
POD_UID = "5c1e9a3b-7d2f-4e8a-9b6c-0f1e2d3c4b5a"


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("docker-v1.cgroup", Container("docker", DOCKER_ID)),
        ("docker-v2-systemd.cgroup", Container("docker", DOCKER_ID)),
        ("docker-v2-cgroupfs.cgroup", Container("docker", DOCKER_ID)),
        ("containerd-nerdctl-v2.cgroup", Container("containerd", OTHER_ID)),
        ("podman-v2.cgroup", Container("podman", OTHER_ID)),
        # Kubernetes with the cgroupfs driver: the runtime is not in the path
        ("kubernetes-containerd-v1-cgroupfs.cgroup", Container(None, OTHER_ID, POD_UID)),
        ("kubernetes-docker-v1-cgroupfs.cgroup", Container(None, DOCKER_ID, POD_UID)),
        ("kubernetes-containerd-v2-systemd.cgroup", Container("containerd", OTHER_ID, POD_UID)),
        ("kubernetes-containerd-v2-systemd-in-service.cgroup", Container("containerd", OTHER_ID, POD_UID)),
        ("kubernetes-crio-v1-systemd.cgroup", Container("cri-o", OTHER_ID, POD_UID)),
        ("kubernetes-crio-v2-systemd.cgroup", Container("cri-o", OTHER_ID, POD_UID)),
        ("kubernetes-docker-v2-systemd.cgroup", Container("docker", DOCKER_ID, POD_UID)),
        ("host-v1.cgroup", None),
        ("host-v2-service.cgroup", None),
        # inside a cgroup namespace the path is "/": nothing to tell, so nothing is claimed
        ("container-with-cgroup-namespace-v2.cgroup", None),
    ],
)
def test_container_from_cgroup_fixtures(fixture, expected):
    assert container_from_cgroup((CGROUP_FIXTURES / fixture).read_text()) == expected


@pytest.mark.parametrize(
    ("fixture", "unit", "job"),
    [
        ("host-v1.cgroup", "session-4.scope", None),
        ("host-v1-service.cgroup", "triton-server.service", None),
        ("host-v2-service.cgroup", "triton-server.service", None),
        # a user's own service manager: the innermost unit, not user@1000.service
        ("host-v2-user-service.cgroup", "jupyter.service", None),
        # v1: slurmd puts the job in every controller it uses; name=systemd still shows slurmd
        ("slurm-v1.cgroup", "slurmd.service", "4242"),
        ("slurm-v2.cgroup", "slurmstepd.scope", "4242"),
        ("slurm-v2-batch-step.cgroup", "slurmstepd.scope", "4242"),
        ("docker-v1.cgroup", None, None),  # the cgroupfs driver makes no unit
        ("docker-v2-systemd.cgroup", f"docker-{DOCKER_ID}.scope", None),
        ("kubernetes-crio-v1-systemd.cgroup", f"crio-{OTHER_ID}.scope", None),
        ("kubernetes-containerd-v2-systemd.cgroup", f"cri-containerd-{OTHER_ID}.scope", None),
        ("kubernetes-containerd-v1-cgroupfs.cgroup", None, None),
        # the containerd-in-a-service layout names no scope of its own: the service is the unit
        ("kubernetes-containerd-v2-systemd-in-service.cgroup", "containerd.service", None),
        ("container-with-cgroup-namespace-v2.cgroup", None, None),
    ],
)
def test_systemd_unit_and_slurm_job_from_cgroup_fixtures(fixture, unit, job):
    text = (CGROUP_FIXTURES / fixture).read_text()
    assert (systemd_unit_from_cgroup(text), slurm_job_from_cgroup(text)) == (unit, job)


def test_slurm_jobs_are_not_containers():
    assert container_from_cgroup((CGROUP_FIXTURES / "slurm-v2.cgroup").read_text()) is None


def test_container_description_is_short_and_names_the_pod():
    described = Container("cri-o", OTHER_ID, POD_UID).describe()
    assert described == f"cri-o {OTHER_ID[:12]} in Kubernetes pod {POD_UID}"


@pytest.fixture
def sleeper():
    """Start a child process with the given environment; stop it after the test."""
    children: list[subprocess.Popen] = []

    def start(env: dict[str, str]) -> subprocess.Popen:
        children.append(start_sleeper(env))
        return children[-1]

    yield start
    for child in children:
        child.kill()
        child.communicate()


def test_a_real_child_process_is_read_back(sleeper):
    before = time.time()
    child = sleeper({"CUDA_VISIBLE_DEVICES": "MIG-test", "PATH": os.environ.get("PATH", "")})
    attribution = attribute_host_process(child.pid)
    assert attribution.source == "host"
    assert attribution.user == pwd.getpwuid(os.getuid()).pw_name
    assert attribution.cmdline == SLEEPER
    # psutil derives the start from /proc/stat's whole-second btime plus clock ticks, so it can
    # sit a second or two off the wall clock; equality with psutil is the exact check.
    assert attribution.started_at == psutil.Process(child.pid).create_time()
    assert before - 5 <= attribution.started_at <= time.time() + 5
    assert attribution.environment_read
    assert attribution.cuda_visible_devices == "MIG-test"
    assert attribution.gpu_visibility == "CUDA_VISIBLE_DEVICES=MIG-test: this process sees one MIG instance"
    assert attribution.container == container_from_cgroup(Path(f"/proc/{child.pid}/cgroup").read_text())
    assert attribution.notes == ()


def test_a_process_without_cuda_visible_devices_sees_every_gpu(sleeper):
    child = sleeper({"PATH": os.environ.get("PATH", "")})
    attribution = attribute_host_process(child.pid)
    assert attribution.environment_read and attribution.cuda_visible_devices is None
    assert attribution.gpu_visibility == "no CUDA_VISIBLE_DEVICES: this process sees every GPU"


@pytest.mark.parametrize(
    ("value", "conclusion"),
    [
        ("", "CUDA_VISIBLE_DEVICES is empty: this process sees no GPU"),
        ("0,1", "CUDA_VISIBLE_DEVICES=0,1: this process sees 2 GPUs"),
        ("2", "CUDA_VISIBLE_DEVICES=2: this process sees one GPU"),
        # CUDA enumerates up to the first invalid entry: "-1" hides every GPU, "0,-1,1" shows only 0
        ("-1", "CUDA_VISIBLE_DEVICES=-1: this process sees no GPU"),
        ("0,-1,1", "CUDA_VISIBLE_DEVICES=0,-1,1: this process sees one GPU"),
    ],
)
def test_cuda_visible_devices_conclusions(sleeper, value, conclusion):
    child = sleeper({"CUDA_VISIBLE_DEVICES": value})
    assert attribute_host_process(child.pid).gpu_visibility == conclusion


def test_a_vanished_process_is_said_to_be_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    attribution = attribute_host_process(child.pid)
    assert attribution.source == "none"
    assert attribution.user is None and attribution.cmdline is None
    assert not attribution.environment_read
    assert "process not found on this host" in attribution.notes[0]
    assert "unknown" in attribution.gpu_visibility


def test_a_zombie_is_said_to_have_exited():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.01)
    attribution = attribute_host_process(child.pid)
    child.wait()
    assert attribution.source == "none"
    assert attribution.notes == ("the process has exited; its parent has not reaped it yet (a zombie)",)


def test_a_pid_reused_after_the_snapshot_is_not_attributed(sleeper):
    listed_at = time.time() - 3600  # NVML listed the pid an hour before this process started
    child = sleeper({})
    attribution = attribute_host_process(child.pid, not_started_after=listed_at)
    assert attribution.source == "none" and attribution.user is None
    assert "started after NVML listed it" in attribution.notes[0]


def _attribute_as_nobody(pid: int, results) -> None:
    """In a forked child: drop to an unprivileged user, then read another user's process."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    results.put(attribute_host_process(pid))


def test_what_permissions_hide_is_said_not_guessed():
    """As root, a forked child drops to ``nobody`` and reads this (root) test process; run as
    another user, it reads pid 1, which belongs to root."""
    target = os.getpid() if os.geteuid() == 0 else 1
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    reader = context.Process(target=_attribute_as_nobody, args=(target, results))
    reader.start()
    attribution: Attribution = results.get(timeout=30)
    reader.join()
    assert attribution.source == "host"
    assert attribution.user is not None  # the owner is public
    assert not attribution.environment_read
    assert attribution.cuda_visible_devices is None
    assert any(n.startswith("environment: permission denied") for n in attribution.notes)
    assert attribution.gpu_visibility == "CUDA_VISIBLE_DEVICES unknown: its environment could not be read"


def test_simulated_process_uses_the_fleet_file_fields_only():
    fields = SimpleNamespace(
        user="svc-llm",
        cmdline="python serve.py --port 8000",
        container=f"containerd://{OTHER_ID}",
        env={"HF_HOME": "/models"},
    )
    attribution = attribute_simulated_process(os.getpid(), fields)  # a host pid, never read
    assert attribution.source == "fleet file"
    assert attribution.user == "svc-llm"
    assert attribution.cmdline == ("python", "serve.py", "--port", "8000")
    assert attribution.container == Container("containerd", OTHER_ID)
    assert attribution.started_at is None
    assert attribution.gpu_visibility == ("no CUDA_VISIBLE_DEVICES: this process sees every GPU its "
                                          "container was given")
    assert attribution.notes == ()


@pytest.mark.parametrize(
    ("env", "conclusion"),
    [
        ({}, "no CUDA_VISIBLE_DEVICES: this process sees every GPU its container was given"),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-5266"},
         "no CUDA_VISIBLE_DEVICES: this process sees every GPU its container was given "
         "(NVIDIA_VISIBLE_DEVICES=GPU-5266)"),
        ({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "MIG-x"},
         "CUDA_VISIBLE_DEVICES=MIG-x: this process sees one MIG instance"),
    ],
)
def test_in_a_container_every_gpu_means_the_container_s(env, conclusion):
    """A container sees only the GPUs mounted into it, so "every GPU" is not the host's."""
    fields = SimpleNamespace(user=None, cmdline=None, container=f"docker://{DOCKER_ID}", env=env)
    attribution = attribute_simulated_process(7, fields)
    assert attribution.gpu_visibility == conclusion
    assert attribution.nvidia_visible_devices == env.get("NVIDIA_VISIBLE_DEVICES")


def test_simulated_process_without_fields_says_what_is_missing():
    only_user = SimpleNamespace(user="ml", cmdline=None, container=None, env=None)
    partial = attribute_simulated_process(78914, only_user)
    assert partial.user == "ml"
    assert partial.notes == ("simulated process: not on this host; the fleet file does not give: "
                             "cmdline, container, env",)
    assert "unknown" in partial.gpu_visibility
    nothing = attribute_simulated_process(78914, None)
    assert nothing.source == "none" and nothing.user is None
    assert "simulated process: not on this host" in nothing.notes[0]


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("python -c 'import server; server.run()'", ("python", "-c", "import server; server.run()")),
        ("python 'unbalanced", ("python", "'unbalanced")),
        (["python", "my server.py"], ("python", "my server.py")),
        ("", None),
        ([], None),
    ],
)
def test_a_fleet_command_line_is_split_as_a_shell_would(cmdline, expected):
    """So the restart command printed from it pastes back as the fleet file wrote it."""
    fields = SimpleNamespace(user=None, cmdline=cmdline, container=None, env=None)
    assert attribute_simulated_process(5, fields).cmdline == expected


def test_a_fleet_container_given_as_a_cgroup_path_is_parsed():
    path = (CGROUP_FIXTURES / "kubernetes-crio-v2-systemd.cgroup").read_text().strip()
    fields = SimpleNamespace(user=None, cmdline=["python", "x.py"], container=path, env={})
    attribution = attribute_simulated_process(5, fields)
    assert attribution.container == Container("cri-o", OTHER_ID, POD_UID)
    assert attribution.cmdline == ("python", "x.py")
