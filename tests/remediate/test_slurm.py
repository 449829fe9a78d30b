"""Slurm GRES types from what NVML reports (the names of docs/diagnose and mig-facts.md)."""

from __future__ import annotations

from mig_exporter.remediate.slurm import gpu_type, gres, gres_line

from .builders import gpu, instance, snapshot

H100 = "H100-SXM5-80GB"


def test_gpu_types_are_nvml_names_as_slurm_writes_them() -> None:
    assert gpu_type("NVIDIA A100-SXM4-80GB") == "a100-sxm4-80gb"
    assert gpu_type("NVIDIA H100 80GB HBM3") == "h100_80gb_hbm3"
    assert gpu_type("NVIDIA A30") == "a30"


def test_mig_devices_are_types_of_their_own_and_whole_gpus_stay_gpus() -> None:
    host = snapshot(
        gpu(0, model=H100, mig=True, instances=[
            instance(0, "3g", 0, model=H100), instance(0, "3g", 4, model=H100)]),
        gpu(1, model=H100),
    )
    types = gres(host)
    assert types == (("h100_80gb_hbm3", 1), ("h100_80gb_hbm3_3g.40gb", 2))
    assert gres_line("gpu-node-1", types) == (
        "NodeName=gpu-node-1 Gres=gpu:h100_80gb_hbm3:1,gpu:h100_80gb_hbm3_3g.40gb:2")
