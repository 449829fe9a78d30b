"""Fleet file snippets for the simulator's tests."""

from __future__ import annotations


def gpu(model: str = "A100-SXM4-80GB", mig: str = "enabled", extra: str = "") -> str:
    """One entry of a fleet file's ``gpus`` list; ``extra`` is more YAML under it (indent 4)."""
    return f"  - model: {model}\n    mig: {mig}\n{extra}"


def fleet(*gpus: str) -> str:
    """A fleet file with these ``gpu(...)`` entries, in order."""
    return "gpus:\n" + "".join(gpus)


def one_gpu(model: str = "A100-SXM4-80GB", mig: str = "enabled", extra: str = "") -> str:
    return fleet(gpu(model, mig, extra))
