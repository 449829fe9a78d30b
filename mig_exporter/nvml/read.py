"""NVML → Snapshot in one pass, each failure confined to the value, the GPU or (when NVML itself is
gone) the collection it concerns (``nvml.calls`` says how each NVML error is treated).

On a real host each NVML call costs 0.1-5 ms, so a collection asks only what can have changed: what
cannot change of a GPU while it stays the same board under one NVML initialisation (handle,
identity, calls it never supports) is read once and kept by the session (``nvml.known``); the MIG
layout is checked with one call and read again only when it can have changed (``nvml.mig_read``);
process names are kept per process (``nvml.processes``); MIG capability once per GPU
(``nvml.capability``); slow health counters on their cadence (``nvml.health``). What a collection
then reads: per GPU its memory, persistence and MIG modes, temperature, power, power limit, clocks,
health and processes (utilization where supported); per MIG device its memory and processes.
Processes of a MIG-enabled GPU are read per MIG device, never on the parent (which would list them a
second time, in aggregate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.model import CollectionError, Gpu, GpuInstance, MigInstance, Snapshot
from mig_exporter.nvml.calls import Collection, GpuLost, NvmlGone
from mig_exporter.nvml.capability import gpu_capability, with_compute_profiles
from mig_exporter.nvml.completeness import unread_parts
from mig_exporter.nvml.known import Identity, KnownGpu
from mig_exporter.nvml.mig_read import read_mig
from mig_exporter.nvml.process_util import with_utilization
from mig_exporter.nvml.processes import look_up_names, read_processes, with_names
from mig_exporter.nvml.session import NvmlSession, NvmlUnavailable


def read_snapshot(
    session: NvmlSession, max_process_series: int | None = None, gpu_timeout_seconds: float | None = None,
) -> Snapshot:
    """Read everything NVML gives into one Snapshot. Never raises for an NVML failure.

    ``max_process_series``: names are looked up for the pids of the first that many processes
    only (the exporter serves no more); the others' are absent, and counted as skipped.
    ``gpu_timeout_seconds``: how long to wait for the GPUs' reads; a GPU not done by then keeps
    its last values, marked stale (``Gpu.stale``)."""
    started = time.monotonic()
    system = Collection(session.system_unsupported)
    collections = [system]

    def snapshot(**values: Any) -> Snapshot:
        return Snapshot(
            taken_at=time.time(), duration_seconds=time.monotonic() - started,
            errors=tuple(e for c in collections for e in c.errors),
            nvml_calls=sum(c.calls for c in collections), **values,
        )

    try:
        session.reopen_if_failed()
    except NvmlUnavailable as unavailable:
        system.errors.append(CollectionError("nvmlInit", unavailable.nvml_error))
        return snapshot(nvml_up=False)
    try:
        if session.versions is None:
            errors_before = len(system.errors)
            versions = (system.call(pynvml.nvmlSystemGetDriverVersion),
                        system.call(pynvml.nvmlSystemGetCudaDriverVersion),
                        system.call(pynvml.nvmlSystemGetNVMLVersion))
            if not system.failed_since(errors_before):
                session.versions = versions
        else:
            versions = session.versions
        listed = system.call(pynvml.nvmlDeviceGetCount)
        count = listed or 0
        if count != session.gpu_count:
            session.forget_gpus()  # a GPU came or went: indexes may point at other boards now
            session.gpu_count = count
        gpus = _read_gpus(session, count, collections, gpu_timeout_seconds)
        named, skipped = session.process_names.named(  # a stale GPU's processes keep their names
            (p for gpu in gpus if not gpu.stale for p in gpu.processes), max_process_series,
            lambda pids: _look_up_names(session, collections, pids))
    except (NvmlGone, GpuLost):
        # GPU_IS_LOST from a system-level call (the count, the versions) names no GPU to set
        # aside: NVML as a whole is unusable, and the next collection initialises it again.
        session.mark_failed()
        return snapshot(nvml_up=False)
    gpus = [replace(g, processes=with_names(g.processes, named)) if g.processes and not g.stale else g
            for g in gpus]
    for gpu in gpus:
        if not gpu.stale:
            session.last_gpus[gpu.index] = gpu
    driver_version, cuda_version, nvml_version = versions
    return snapshot(
        nvml_up=True, driver_version=driver_version, cuda_driver_version=_cuda_version(cuda_version),
        nvml_version=nvml_version, process_names_skipped=skipped, gpus=tuple(gpus),
        gpus_complete=listed is not None,
    )


def _read_gpus(
    session: NvmlSession, count: int, collections: list[Collection], timeout_seconds: float | None,
) -> list[Gpu]:
    """Every GPU, each on one of the session's workers, so one slow GPU delays only its own values.
    A GPU whose read is not done within ``timeout_seconds`` (None: no limit), or whose read of an
    earlier collection is still hung in NVML (no second read of it starts), keeps its last values,
    marked stale."""
    started: dict[int, tuple[Future[Gpu], Collection]] = {}
    for index in range(count):
        running = session.gpu_reads.get(index)
        if running is not None and not running.done():
            continue
        known = session.known_gpus.get(index)
        collection = Collection(None if known is None else known.unsupported)
        future = session.workers.submit(_read_gpu, collection, session, index)
        session.gpu_reads[index] = future
        started[index] = (future, collection)
    wait([future for future, _ in started.values()], timeout=timeout_seconds)
    gpus = []
    for index in range(count):
        if index not in started or not started[index][0].done():
            gpus.append(_stale(session, index))
            continue
        future, collection = started[index]
        collections.append(collection)
        gpus.append(future.result())  # NvmlGone, from any GPU, ends the collection
    return gpus


def _stale(session: NvmlSession, index: int) -> Gpu:
    last = session.last_gpus.get(index)
    if last is not None:
        return replace(last, stale=True)
    return Gpu(index=index, uuid=session.known_uuids.get(index, ""), stale=True,
               gpu_instances_complete=False, processes_complete=False)


def _look_up_names(
    session: NvmlSession, collections: list[Collection], pids: list[int],
) -> dict[int, tuple[str | None, bool]]:
    """The names of ``pids``, looked up on the session's workers in parallel."""
    if not pids:
        return {}
    chunks = [pids[i::session.workers.size] for i in range(min(session.workers.size, len(pids)))]
    lookups = []
    for chunk in chunks:
        collection = Collection(session.system_unsupported)
        collections.append(collection)
        lookups.append(session.workers.submit(look_up_names, collection, chunk))
    found: dict[int, tuple[str | None, bool]] = {}
    for lookup in lookups:
        found.update(lookup.result())
    return found


def _cuda_version(encoded: int | None) -> str | None:
    """NVML encodes CUDA 12.9 as 12090."""
    return None if encoded is None else f"{encoded // 1000}.{encoded % 1000 // 10}"


def _read_gpu(collection: Collection, session: NvmlSession, index: int) -> Gpu:
    try:
        return _read_present_gpu(collection, session, index)
    except GpuLost:
        session.forget_gpu(index)  # when it comes back, it may be another board
        return Gpu(index=index, uuid=session.known_uuids.get(index, ""), lost=True,
                   gpu_instances_complete=False, processes_complete=False)


def _known_gpu(collection: Collection, session: NvmlSession, index: int) -> tuple[KnownGpu, Identity] | None:
    """The session's knowledge of GPU ``index``, read now if it has none (None: no handle), and
    its identity: kept once read in full, else what was read this time (the rest next time)."""
    known = session.known_gpus.get(index)
    if known is None:
        handle = collection.call(pynvml.nvmlDeviceGetHandleByIndex, index, gpu=index)
        if handle is None:
            return None
        known = KnownGpu(handle, unsupported=collection.unsupported)
        session.known_gpus[index] = known
    identity = known.identity
    if identity is None:
        errors_before = len(collection.errors)
        identity = _read_identity(collection, known.handle, index)
        if not collection.failed_since(errors_before):
            known.identity = identity
    return known, identity


def _read_identity(collection: Collection, handle: Any, index: int) -> Identity:
    """UUID, name, PCI and serial, each None where its call failed or is unsupported."""
    pci = collection.call(pynvml.nvmlDeviceGetPciInfo, handle, gpu=index)
    return Identity(
        uuid=collection.call(pynvml.nvmlDeviceGetUUID, handle, gpu=index),
        name=collection.call(pynvml.nvmlDeviceGetName, handle, gpu=index),
        pci_bus_id=None if pci is None else _text(pci.busId),
        pci_device_id=None if pci is None else pci.pciDeviceId >> 16,
        serial=collection.call(pynvml.nvmlDeviceGetSerial, handle, gpu=index),
    )


def _read_present_gpu(collection: Collection, session: NvmlSession, index: int) -> Gpu:
    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return collection.call(function, *args, gpu=index, **kwargs)

    found = _known_gpu(collection, session, index)
    if found is None:
        return Gpu(index=index, uuid=session.known_uuids.get(index, ""),
                   gpu_instances_complete=False, processes_complete=False, unread=frozenset({"gpu"}))
    known, identity = found
    handle = known.handle
    uuid = identity.uuid or session.known_uuids.get(index, "")
    if uuid:
        session.known_uuids[index] = uuid
    memory = call(pynvml.nvmlDeviceGetMemoryInfo, handle, pynvml.nvmlMemory_v2)
    persistence = call(pynvml.nvmlDeviceGetPersistenceMode, handle)
    mig_mode = call(pynvml.nvmlDeviceGetMigMode, handle)
    mig_current = None if mig_mode is None else mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    mig_pending = None if mig_mode is None else mig_mode[1] == pynvml.NVML_DEVICE_MIG_ENABLE
    if mig_current != known.mig_current:
        # What the GPU supports (utilization: not under MIG) and its layout depend on the mode.
        known.unsupported.clear()
        known.layout = None
        known.mig_current = mig_current
    utilization = call(pynvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = call(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
    power_mw = call(pynvml.nvmlDeviceGetPowerUsage, handle)
    power_limit_mw = call(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    clock_sm_mhz = call(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
    clock_memory_mhz = call(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM)
    health = session.health.read(call, handle, uuid)  # ECC with the slow counters

    gpu_instances: tuple[GpuInstance, ...] = ()
    gpu_instances_complete = True
    mig_instances: tuple[MigInstance, ...] = ()
    mig_profile_capacity = None
    errors_before = len(collection.errors)
    capability = None if mig_current is None else gpu_capability(
        collection, session.mig_capabilities, index, handle, uuid, mig_current)
    if mig_current and capability is not None:
        # MIG on and not one profile known (NOT_SUPPORTED): its instances cannot be listed either
        profiles_complete = not collection.failed_since(errors_before) and bool(capability.profiles)
        profiles = {profile.id: profile for profile in capability.profiles}
        mig = read_mig(collection, known.layout, known.collections_since_layout, handle, index, uuid,
                       profiles)
        if mig.layout is not known.layout:
            known.layout = mig.layout if mig.layout.kept and profiles_complete else None
            known.collections_since_layout = 0
        known.collections_since_layout += 1
        gpu_instances = mig.layout.gpu_instances
        gpu_instances_complete = profiles_complete and mig.layout.gpu_instances_complete
        capability = with_compute_profiles(collection, session.mig_capabilities, index, handle, uuid,
                                           capability, gpu_instances)
        mig_profile_capacity = mig.layout.capacity
        mig_instances, processes = mig.mig_instances, mig.processes
        processes_complete = mig.processes_complete
    else:
        # MIG on without its profiles, or the mode unread: the GPU instances were not listed
        gpu_instances_complete = mig_current is False
        listed = read_processes(collection, handle, index, uuid, mig=None)
        processes, processes_complete = listed or (), listed is not None
        processes = with_utilization(call, handle, processes)
    gpm, mig_instances = session.gpm_samples.read(call, handle, uuid, gpu_instances, mig_instances)

    return Gpu(
        index=index, uuid=uuid, name=identity.name, pci_bus_id=identity.pci_bus_id,
        pci_device_id=identity.pci_device_id, serial=identity.serial,
        memory_total_bytes=None if memory is None else memory.total,
        memory_used_bytes=None if memory is None else memory.used,
        memory_reserved_bytes=None if memory is None else memory.reserved,
        persistence_mode=None if persistence is None else persistence == pynvml.NVML_FEATURE_ENABLED,
        mig_mode_current=mig_current, mig_mode_pending=mig_pending, mig_capability=capability,
        utilization_gpu_ratio=None if utilization is None else utilization.gpu / 100,
        utilization_memory_ratio=None if utilization is None else utilization.memory / 100,
        temperature_celsius=temperature,
        power_watts=None if power_mw is None else power_mw / 1000,
        power_limit_watts=None if power_limit_mw is None else power_limit_mw / 1000,
        clock_sm_hz=None if clock_sm_mhz is None else clock_sm_mhz * 1e6,
        clock_memory_hz=None if clock_memory_mhz is None else clock_memory_mhz * 1e6,
        ecc_errors_corrected_total=health.ecc_errors_corrected_total,
        ecc_errors_uncorrected_total=health.ecc_errors_uncorrected_total,
        gpu_instances=gpu_instances, gpu_instances_complete=gpu_instances_complete,
        mig_profile_capacity=mig_profile_capacity, mig_instances=mig_instances, processes=processes,
        processes_complete=processes_complete, gpm=gpm, health=health,
        unread=unread_parts(collection.errors),
    )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
