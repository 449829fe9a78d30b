"""Who runs a GPU process: user, command line, start time, container, CUDA_VISIBLE_DEVICES.

NVML gives a pid and a name; the person deciding what to stop or pin needs to know whose it is and
why it spread over every GPU. That comes from the host (psutil and ``/proc/<pid>/cgroup``) or, for
a simulated fleet whose PIDs are not on this host, from the fleet file. What cannot be read is
said in ``notes``, never guessed: a field is None exactly when it is unknown.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import psutil

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
# Set by the NVIDIA container toolkit and Kubernetes' device plugin: the GPUs mounted into a container.
NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
# psutil derives start times from the boot time in whole seconds (/proc/stat btime), so a start
# time may read up to a second late; a pid is only called reused beyond that.
START_TIME_SLACK_SECONDS = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class Container:
    """The container a process runs in, as its cgroup path shows it."""

    runtime: str | None  # "docker", "containerd", "cri-o", "podman"; None when the path does not say
    id: str | None  # the full container ID
    pod_uid: str | None = None  # the Kubernetes pod UID, dashes restored

    def describe(self) -> str:
        parts = [self.runtime or "container"]
        if self.id:
            parts.append(self.id[:12])
        if self.pod_uid:
            parts.append(f"in Kubernetes pod {self.pod_uid}")
        return " ".join(parts)


@dataclass(frozen=True)
class Attribution:
    """What is known about one pid, and where it came from."""

    pid: int
    source: str  # "host", "fleet file" or "none"
    user: str | None = None
    cmdline: tuple[str, ...] | None = None
    started_at: float | None = None  # unix time
    container: Container | None = None
    systemd_unit: str | None = None  # the innermost unit of its cgroup, e.g. "triton.service"
    slurm_job: str | None = None  # the Slurm job ID its cgroup names
    environment_read: bool = False  # False: CUDA_VISIBLE_DEVICES is unknown, not absent
    cuda_visible_devices: str | None = None
    nvidia_visible_devices: str | None = None
    notes: tuple[str, ...] = ()  # what could not be read, and why

    @property
    def gpu_visibility(self) -> str:
        """The conclusion CUDA_VISIBLE_DEVICES supports about which GPUs the process may use."""
        if not self.environment_read:
            return "CUDA_VISIBLE_DEVICES unknown: its environment could not be read"
        if self.cuda_visible_devices is not None:
            return _cuda_visibility(self.cuda_visible_devices)
        if self.container is None:
            return "no CUDA_VISIBLE_DEVICES: this process sees every GPU"
        # In a container "every GPU" is every GPU mounted into it, which may be fewer than the host's.
        mounted = self.nvidia_visible_devices
        given = f" ({NVIDIA_VISIBLE_DEVICES}={mounted})" if mounted else ""
        return f"no CUDA_VISIBLE_DEVICES: this process sees every GPU its container was given{given}"


def _cuda_visibility(value: str) -> str:
    """CUDA enumerates the entries up to the first invalid one (CUDA programming guide), so a
    negative index such as the common ``-1`` hides it and every entry after it."""
    if not value.strip():
        return "CUDA_VISIBLE_DEVICES is empty: this process sees no GPU"
    devices = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    if not devices:
        return f"CUDA_VISIBLE_DEVICES={value}: this process sees no GPU"
    if len(devices) == 1:
        kind = "MIG instance" if devices[0].startswith("MIG-") else "GPU"
        return f"CUDA_VISIBLE_DEVICES={value}: this process sees one {kind}"
    return f"CUDA_VISIBLE_DEVICES={value}: this process sees {len(devices)} GPUs"


# A container ID is 64 hex digits; the word before it names the runtime, in both the systemd
# ("docker-<id>.scope", "cri-containerd-<id>.scope", "…slice:cri-containerd:<id>") and the
# cgroupfs ("/docker/<id>") forms of cgroup v1 and v2. Kubernetes with the cgroupfs driver puts a
# bare ID under the pod ("/kubepods/burstable/pod<uid>/<id>"): the runtime is not in the path.
_CONTAINER_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?=\.scope|/|$)")
_RUNTIME_BY_PREFIX = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
# "kubepods-burstable-pod<uid with _>.slice" (systemd driver) or "/kubepods/burstable/pod<uid>/"
# (cgroupfs); static pods have a 32-digit hash instead of a UUID.
_POD_UID = re.compile(
    r"[-/]pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?(?=[/:]|$)"
)


def container_from_cgroup(cgroup_file: str) -> Container | None:
    """Parse ``/proc/<pid>/cgroup`` (``hierarchy:controllers:path`` lines); None outside a container.

    The first path that names a container or a pod wins: in cgroup v1 every controller carries the
    same container path, in v2 there is one ``0::`` line.
    """
    for line in cgroup_file.splitlines():
        path = line.split(":", 2)[-1]
        ids = list(_CONTAINER_ID.finditer(path))
        pod = _POD_UID.search(path)
        if not ids and pod is None:
            continue
        last = ids[-1] if ids else None
        return Container(
            runtime=_runtime_before(path[: last.start()]) if last else None,
            id=last.group() if last else None,
            pod_uid=pod.group("uid").replace("_", "-") if pod else None,
        )
    return None


# A unit is a path component ending in .service or .scope (slices only group units). In v1 the
# "name=systemd" hierarchy carries the units; in v2 the one "0::" line does.
_UNIT = re.compile(r"(?<=/)[^/:]+\.(?:service|scope)(?=/|$)")
# slurmd's cgroup plugins: v1 "/slurm/uid_<uid>/job_<id>/step_<s>/…", v2 "…/slurmstepd.scope/job_<id>/…"
_SLURM_JOB = re.compile(r"/job_(?P<id>\d+)(?=/|$)")


def _systemd_path(cgroup_file: str) -> str | None:
    """The path in the hierarchy systemd manages: ``name=systemd`` under v1 and hybrid layouts
    (where the ``0::`` line may show another daemon's cgroup), else the v2 ``0::`` line."""
    paths: dict[str, str] = {}
    for line in cgroup_file.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        paths.setdefault(controllers, path)
    return paths.get("name=systemd", paths.get(""))


def systemd_unit_from_cgroup(cgroup_file: str) -> str | None:
    """The innermost systemd service or scope the process runs in; a user session's
    ``session-N.scope`` counts too. None when the path names no unit."""
    units = _UNIT.findall(_systemd_path(cgroup_file) or "")
    return units[-1] if units else None


def slurm_job_from_cgroup(cgroup_file: str) -> str | None:
    """The Slurm job ID from any hierarchy's path (slurmd puts jobs in every v1 controller it uses)."""
    for line in cgroup_file.splitlines():
        job = _SLURM_JOB.search(line.split(":", 2)[-1])
        if job is not None:
            return job.group("id")
    return None


def _runtime_before(path_before_id: str) -> str | None:
    for prefix, runtime in _RUNTIME_BY_PREFIX.items():
        if any(path_before_id.endswith(f"{sep}{prefix}{end}") for sep in "/:" for end in "-:/"):
            return runtime
    return None


def attribute_host_process(pid: int, not_started_after: float | None = None) -> Attribution:
    """Read a live process of this host. ``not_started_after`` is when NVML listed the pid: a
    process started later reuses the pid and is not the one NVML saw."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            started_at = process.create_time()
            user = _read(process.username, "user")
            cmdline = _read(process.cmdline, "command line")
            environ = _read(process.environ, "environment")
    except psutil.ZombieProcess:
        return Attribution(pid, "none", notes=(
            "the process has exited; its parent has not reaped it yet (a zombie)",
        ))
    except psutil.NoSuchProcess:
        return Attribution(pid, "none", notes=(
            "process not found on this host: it has exited, or mig-exporter runs in another PID "
            "namespace than the GPU processes (containers need hostPID)",
        ))
    if not_started_after is not None and started_at > not_started_after + START_TIME_SLACK_SECONDS:
        return Attribution(pid, "none", notes=(
            "the pid now belongs to a process started after NVML listed it: the GPU process exited",
        ))
    cgroup_file, cgroup_note = _cgroup(pid)
    notes = tuple(n for n in (user[1], cmdline[1], environ[1], cgroup_note) if n)
    return Attribution(
        pid=pid,
        source="host",
        user=user[0],
        cmdline=tuple(cmdline[0] or ()) or None,  # a kernel thread's is empty: nothing to show
        started_at=started_at,
        container=None if cgroup_file is None else container_from_cgroup(cgroup_file),
        systemd_unit=None if cgroup_file is None else systemd_unit_from_cgroup(cgroup_file),
        slurm_job=None if cgroup_file is None else slurm_job_from_cgroup(cgroup_file),
        environment_read=environ[0] is not None,
        cuda_visible_devices=(environ[0] or {}).get(CUDA_VISIBLE_DEVICES),
        nvidia_visible_devices=(environ[0] or {}).get(NVIDIA_VISIBLE_DEVICES),
        notes=notes,
    )


def _read(getter: Callable[[], T], what: str) -> tuple[T | None, str | None]:
    """(value, None) or (None, why it could not be read). NoSuchProcess propagates: the process
    vanished in the middle and the caller reports it as gone."""
    try:
        return getter(), None
    except psutil.AccessDenied:
        return None, f"{what}: permission denied (run as root or as the process's user)"


def _cgroup(pid: int) -> tuple[str | None, str | None]:
    """(the cgroup file, None) or (None, why it could not be read)."""
    try:
        return Path(f"/proc/{pid}/cgroup").read_text(), None
    except PermissionError:
        return None, "cgroup: permission denied, container, systemd unit and Slurm job unknown"
    except (FileNotFoundError, ProcessLookupError):
        return None, "cgroup: the process exited while being read, container unknown"


class FleetProcessFields(Protocol):
    """The attribution fields a fleet file may give a simulated process (read-only)."""

    @property
    def user(self) -> str | None: ...
    @property
    def cmdline(self) -> str | Sequence[str] | None: ...
    @property
    def container(self) -> str | None: ...
    @property
    def env(self) -> Mapping[str, str] | None: ...


def attribute_simulated_process(pid: int, fields: FleetProcessFields | None) -> Attribution:
    """A simulated pid is not a process of this host; a host process with the same number is
    unrelated, so the host is never asked. Only what the fleet file gives is known."""
    simulated = "simulated process: not on this host"
    if fields is None:
        return Attribution(pid, "none", notes=(f"{simulated}, and the fleet file gives no user, command "
                                                "line, container or environment for it",))
    missing = [name for name in ("user", "cmdline", "container", "env") if getattr(fields, name) is None]
    notes = (f"{simulated}; the fleet file does not give: {', '.join(missing)}",) if missing else ()
    return Attribution(
        pid=pid,
        source="fleet file",
        user=fields.user,
        cmdline=_fleet_cmdline(fields.cmdline),
        container=_fleet_container(fields.container),
        environment_read=fields.env is not None,
        cuda_visible_devices=(fields.env or {}).get(CUDA_VISIBLE_DEVICES),
        nvidia_visible_devices=(fields.env or {}).get(NVIDIA_VISIBLE_DEVICES),
        notes=notes,
    )


def attribute_processes(
    pids: Iterable[int],
    fleet_fields: Callable[[int], FleetProcessFields | None] | None,
    not_started_after: float | None = None,
) -> dict[int, Attribution]:
    """pid → its attribution, for the commands that open NVML (``diagnose``, ``remediate``).

    ``fleet_fields`` is the simulator's ``attribution`` when NVML is simulated: then every pid is
    answered from the fleet file and the host is never asked (its pids are unrelated processes);
    None reads this host, with ``not_started_after`` as in ``attribute_host_process``. One place
    makes that choice, so no command can look a simulated pid up on the host.
    """
    if fleet_fields is not None:
        return {pid: attribute_simulated_process(pid, fleet_fields(pid)) for pid in pids}
    return {pid: attribute_host_process(pid, not_started_after=not_started_after) for pid in pids}


def _fleet_cmdline(cmdline: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A fleet file gives a command line as a list or as one shell line; the shell line is split
    as a shell would, so the restart command diagnose prints from it pastes back as written."""
    if cmdline is None:
        return None
    if not isinstance(cmdline, str):
        return tuple(cmdline) or None
    try:
        return tuple(shlex.split(cmdline)) or None
    except ValueError:  # unbalanced quotes: keep the words as written
        return tuple(cmdline.split()) or None


def _fleet_container(text: str | None) -> Container | None:
    """A fleet file names a container as a cgroup path or as ``runtime://id`` (the form Kubernetes
    uses in a pod's containerStatuses)."""
    if not text:
        return None
    if "://" in text:
        runtime, _, container_id = text.partition("://")
        return Container(runtime=_RUNTIME_BY_PREFIX.get(runtime, runtime), id=container_id)
    return container_from_cgroup(text) or Container(runtime=None, id=text)
