"""The Kubernetes names of MIG devices, as NVIDIA's device plugin advertises them.

With ``--mig-strategy=mixed`` the plugin advertises one extended resource per MIG device type,
``nvidia.com/mig-<profile>`` with every ``+`` of the profile name turned into ``.`` (``+`` is not
allowed in a resource name): ``1g.10gb+me`` is ``nvidia.com/mig-1g.10gb.me``. With
``--mig-strategy=single`` every MIG device is an ``nvidia.com/gpu``, which the plugin only does when
every GPU of the node has MIG on and all MIG devices are of one type; otherwise it labels the node
``nvidia.com/gpu.product=…-MIG-INVALID`` and advertises none.
"""

from __future__ import annotations

from collections.abc import Collection

MIG_STRATEGIES = ("mixed", "single")
DEFAULT_MIG_STRATEGY = "mixed"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


def resource_name(profile: str, strategy: str) -> str:
    """The extended resource a pod requests for one MIG device of ``profile`` (``3g.40gb``,
    ``1c.3g.40gb``, ``1g.10gb+me``) under the device plugin's MIG ``strategy``."""
    if strategy == "single":
        return GPU_RESOURCE
    if strategy != "mixed":
        raise ValueError(f"unknown MIG strategy {strategy!r} (one of {', '.join(MIG_STRATEGIES)})")
    return MIG_RESOURCE_PREFIX + profile.replace("+", ".")


def single_strategy_problem(profiles: Collection[str], gpus_without_mig: Collection[int]) -> str | None:
    """Why the device plugin's single strategy would advertise nothing on this node, or None."""
    if gpus_without_mig:
        listed = ", ".join(map(str, sorted(gpus_without_mig)))
        return f"GPU {listed} has MIG disabled; the single strategy needs MIG on every GPU of the node"
    kinds = sorted(set(profiles))
    if len(kinds) > 1:
        return (f"the node has MIG devices of {len(kinds)} types ({', '.join(kinds)}); the single strategy "
                "needs one type: use the mixed strategy")
    return None
