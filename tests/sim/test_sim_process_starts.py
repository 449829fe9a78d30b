"""Simulated process start times: what /proc/<pid>/stat gives on a host, so the reader can tell a
pid reused by another process from the same process (issue 12)."""

from __future__ import annotations

from dataclasses import replace

from sim.conftest import StartNvml
from sim.fleets import fleet, gpu

PROCESSES = """    processes:
      - {pid: 5001, name: python, used_memory_mib: 1000}
      - {pid: 5002, name: python, used_memory_mib: 1000}
"""


def test_a_process_keeps_its_start_until_its_pid_is_reused_or_gone(start_nvml: StartNvml) -> None:
    simulator = start_nvml(fleet(gpu(mig="disabled", extra=PROCESSES)))
    first, other = simulator.process_start_time(5001), simulator.process_start_time(5002)
    assert first is not None and other is not None and first != other
    assert simulator.process_start_time(4242) is None

    simulator.fleet = simulator.fleet  # a state change that leaves the processes alone
    assert simulator.process_start_time(5001) == first

    gpu0 = simulator.fleet.gpus[0]
    renamed = tuple(replace(p, name="vllm") if p.pid == 5001 else p for p in gpu0.processes)
    simulator.fleet = simulator.fleet.with_gpu(0, replace(gpu0, processes=renamed))
    reused = simulator.process_start_time(5001)
    assert reused is not None and reused not in (first, other)
    assert simulator.process_start_time(5002) == other

    simulator.fleet = simulator.fleet.without_process(5002)
    assert simulator.process_start_time(5002) is None
