"""Resource names as NVIDIA's device plugin advertises them, for every profile of every model."""

from __future__ import annotations

import re

import pytest
from simulated_gpus import MODEL_KEYS, capability

from mig_exporter.remediate.kubernetes import resource_name, single_strategy_problem

# Kubernetes: an extended resource is a qualified name, prefix "/" name, where the name is at most
# 63 characters of [A-Za-z0-9._-] beginning and ending with an alphanumeric (validation.IsQualifiedName).
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _every_mig_device_name() -> list[str]:
    """Each GPU instance profile of each model, and each smaller compute instance in it (1c.3g.40gb)."""
    names = []
    for model in MODEL_KEYS:
        for profile in capability(model).profiles:
            names.append(profile.name)
            names += [f"{c}c.{profile.name}" for c in profile.compute_slice_options()
                      if c < profile.slice_count]
    return names


@pytest.mark.parametrize("profile", _every_mig_device_name())
def test_mixed_strategy_names_follow_the_device_plugin_and_kubernetes(profile: str) -> None:
    name = resource_name(profile, "mixed")
    prefix, _, resource = name.partition("/")
    assert prefix == "nvidia.com"
    assert len(resource) <= 63 and _QUALIFIED_NAME.fullmatch(resource), name
    # the device plugin's rule: "mig-" and the profile, with "+" (not allowed) turned into "."
    assert resource == "mig-" + profile.replace("+", ".")


def test_the_media_engine_profile_is_the_dotted_name_the_plugin_advertises() -> None:
    assert resource_name("1g.10gb+me", "mixed") == "nvidia.com/mig-1g.10gb.me"
    assert resource_name("1c.3g.40gb", "mixed") == "nvidia.com/mig-1c.3g.40gb"


@pytest.mark.parametrize("profile", _every_mig_device_name())
def test_single_strategy_advertises_every_mig_device_as_a_gpu(profile: str) -> None:
    assert resource_name(profile, "single") == "nvidia.com/gpu"


def test_single_strategy_needs_one_type_and_mig_on_every_gpu() -> None:
    assert single_strategy_problem(["3g.40gb", "3g.40gb"], []) is None
    assert "2 types (2g.20gb, 3g.40gb)" in str(single_strategy_problem(["3g.40gb", "2g.20gb"], []))
    assert "GPU 1, 3 has MIG disabled" in str(single_strategy_problem(["3g.40gb"], [3, 1]))
    with pytest.raises(ValueError, match="unknown MIG strategy 'none'"):
        resource_name("3g.40gb", "none")
