"""Nodes' layouts from their ``mig-exporter diagnose --format json`` (docs/diagnose.schema.json).

For ``remediate --from-diagnose``: the GPUs the advice partitions get its layout, the others stay as
the reading found them (MIG off, or their MIG devices), GPUs without MIG are left out. A file with
only the advice (the JSON's ``advice`` object, ``{"layouts": [{"gpu_index": 0, "layout": [...]}]}``)
gives the advised GPUs alone, and mig-parted leaves the others as they are. The node is
``NODE=FILE``'s NODE, or the file's name without its extension.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mig_exporter.errors import InputError
from mig_exporter.remediate import migparted
from mig_exporter.remediate.operator import Busy, GpuLayout, NodeLayout


def read(spec: str) -> tuple[NodeLayout, tuple[Busy, ...]]:
    """The layout ``spec`` (``[NODE=]FILE``) asks for, and the processes on GPUs it changes."""
    node, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    node = node or Path(path).stem
    try:
        document = json.loads(Path(path).read_text())
    except OSError as error:
        raise InputError(f"--from-diagnose {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"--from-diagnose {path}: not JSON ({error.msg}, line {error.lineno})") from None
    if isinstance(document, dict) and "layouts" in document and "gpus" not in document:
        # only the advice (diagnose's "advice" object): the advised GPUs, the others left alone
        layouts = _advised({"advice": document}, path)
        return NodeLayout(node, tuple(GpuLayout(i, True, d) for i, d in sorted(layouts.items()))), ()
    if not isinstance(document, dict) or document.get("schema_version") != 1 or not isinstance(
            document.get("gpus"), list):
        raise InputError(f"{path}: not the output of mig-exporter diagnose --format json (schema_version 1) "
                         "nor its advice object")
    advised = _advised(document, path)
    gpus, busy = [], []
    for number, gpu in enumerate(document["gpus"]):
        where = f"{path}: gpus[{number}]"
        index, current = _field(gpu, "index", int, where), gpu.get("mig_mode_current")
        if index in advised:
            layout = GpuLayout(index, True, advised.pop(index))
        elif current is None:  # not MIG capable (or lost): no entry, mig-parted leaves it alone
            continue
        else:
            layout = GpuLayout(index, bool(current), _current_devices(gpu, where))
        gpus.append(layout)
        processes = [p for p in gpu.get("processes") or [] if isinstance(p, dict)]
        pids = tuple(sorted({p["pid"] for p in processes if isinstance(p.get("pid"), int)}))
        unchanged = layout.mig_enabled == bool(current) and layout.devices == _current_devices(gpu, where)
        if pids and not unchanged:
            busy.append(Busy(node, index, pids))
    if advised:
        raise InputError(f"{path}: advice.layouts names GPU {min(advised)}, which gpus does not list")
    return NodeLayout(node, tuple(sorted(gpus, key=lambda g: g.index))), tuple(busy)


def _advised(document: dict[str, Any], path: str) -> dict[int, tuple[str, ...]]:
    advice = document.get("advice") or {}
    layouts: dict[int, tuple[str, ...]] = {}
    for number, entry in enumerate(advice.get("layouts") or []):
        where = f"{path}: advice.layouts[{number}]"
        index = _field(entry, "gpu_index", int, where)
        names = entry.get("layout")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"{where}.layout: expected a list of MIG profile names")
        for name in names:
            try:
                migparted.check_profile(name)
            except ValueError as error:
                raise InputError(f"{where}.layout: {name}: {error}") from None
        layouts[index] = tuple(sorted(names))
    return layouts


def _current_devices(gpu: dict[str, Any], where: str) -> tuple[str, ...]:
    """The GPU's MIG devices as the reading found them."""
    if not gpu.get("mig_mode_current"):
        return ()
    return tuple(sorted(_field(i, "profile", str, f"{where}.instances") for i in gpu.get("instances") or []))


def _field(mapping: Any, key: str, kind: type, where: str) -> Any:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        wanted = "an integer" if kind is int else "a string"
        raise InputError(f"{where}.{key}: expected {wanted}, got {value!r}")
    return value
