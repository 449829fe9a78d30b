"""Slurm's view of a partitioned host: the GRES lines for gres.conf and slurm.conf.

With ``AutoDetect=nvml`` in gres.conf, slurmd finds the MIG devices itself; slurm.conf must still
declare the node's GRES, one type per kind of device: ``gpu:<model>_<profile>:N`` for MIG devices,
``gpu:<model>:N`` for whole GPUs. The model is NVML's name as Slurm writes GPU types (lowercase,
``NVIDIA`` dropped, spaces as ``_``); ``slurmd -G`` on the node prints what it detected, to compare.
A node whose GRES differ from slurm.conf is drained by slurmctld, hence the order of the runbook:
drain, partition, update both files, restart slurmd, check, resume.
"""

from __future__ import annotations

import re
from collections import Counter

from mig_exporter.model import Snapshot


def gpu_type(nvml_name: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` → ``a100-sxm4-80gb``; ``NVIDIA H100 80GB HBM3`` → ``h100_80gb_hbm3``."""
    name = re.sub(r"^nvidia\s+", "", nvml_name.strip(), flags=re.IGNORECASE)
    return re.sub(r"\s+", "_", name).lower()


def gres(snapshot: Snapshot) -> tuple[tuple[str, int], ...]:
    """(GRES type, count) of every GPU and MIG device of the host, in slurm.conf's order."""
    counts: Counter[str] = Counter()
    for gpu in snapshot.gpus:
        if gpu.lost or gpu.name is None:
            continue
        model = gpu_type(gpu.name)
        if gpu.mig_enabled:
            counts.update(f"{model}_{device.profile}" for device in gpu.mig_instances)
        else:
            counts[model] += 1
    return tuple(sorted(counts.items()))


def gres_line(node: str, types: tuple[tuple[str, int], ...]) -> str:
    """The slurm.conf node line's GRES: ``NodeName=gpu-node-1 Gres=gpu:a100-sxm4-80gb_3g.40gb:2,…``."""
    return f"NodeName={node} Gres=" + ",".join(f"gpu:{name}:{count}" for name, count in types)
