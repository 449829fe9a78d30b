"""Writing a new state back over a fleet file a person keeps, changing as little of it as possible.

A fleet file is often written by hand: comments say why a GPU is there, values the canonical dump
would leave out (``utilization_gpu_percent: 0``, ``env: {}``) are kept for the reader. So after a
mutation only the entries of ``gpus:`` whose state changed are replaced, each re-dumped canonically
as block YAML at the indentation of the entry it replaces; every other byte stays (comments, the
GPUs the run never touched, ``faults:``, the top-level keys). The spliced text is parsed again and
must give exactly the new state.

Where a splice is not possible, the whole file is written as canonical YAML (``dump_fleet``), as
before: ``gpus`` in flow style (``gpus: [...]``) or not a list, a GPU entry that shares a line
with anything but its own ``- `` and comments (``- - …``), a GPU added or removed, a change
outside ``gpus`` (description, versions, faults), line breaks other than ``\\n`` and ``\\r\\n``,
and any spliced text that does not read back to the new state (an anchor defined in a replaced
entry and used in a kept one, an attribution the kept text contradicts).
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import yaml

from mig_exporter.errors import UniqueKeyLoader
from mig_exporter.sim.fleet import FleetSource
from mig_exporter.sim.fleet_checks import FleetError
from mig_exporter.sim.fleet_dump import dump_fleet, gpu_entry
from mig_exporter.sim.fleet_reader import parse_fleet
from mig_exporter.sim.process_reader import ATTRIBUTION_KEYS
from mig_exporter.sim.state import Fleet

log = logging.getLogger(__name__)

_ENTRY_START = re.compile(r"^( *)-[ \t]+$")  # what may come before a GPU's first key on its line
_ENTRY_END = re.compile(r"^[ \t]*(?:#.*)?\r?$")  # what may come after its last value on its line


def updated_fleet_file(source: FleetSource, fleet: Fleet) -> bytes:
    """The fleet file ``source`` with ``fleet`` as its new state: ``source.data`` itself when the
    state is the state as loaded, else the file with only the changed GPUs' entries replaced, or
    the canonical dump where that is not possible (see the module docstring)."""
    if fleet == source.fleet:
        return source.data
    try:
        spliced, reason = _splice(source.data.decode(), source.fleet, fleet)
    except (UnicodeDecodeError, yaml.YAMLError) as error:  # it was read before; be safe all the same
        spliced, reason = None, f"cannot read it again ({error})"
    if spliced is not None:
        try:
            if parse_fleet(spliced, source.spec) == fleet:
                return spliced.encode()
            reason = "the spliced text does not read back to the new state"
        except FleetError as error:
            reason = f"the spliced text is not a valid fleet ({error})"
    log.debug("%s: writing the whole fleet file as canonical YAML: %s", source.spec, reason)
    return dump_fleet(fleet).encode()


def _splice(text: str, loaded: Fleet, fleet: Fleet) -> tuple[str | None, str]:
    """``text`` (which reads as ``loaded``) with the entries of the GPUs that differ in ``fleet``
    replaced; None and why when a splice is not possible."""
    if len(fleet.gpus) != len(loaded.gpus):
        return None, "GPUs were added or removed"
    if (fleet.description, fleet.driver_version, fleet.cuda_version, fleet.faults) != (
        loaded.description,
        loaded.driver_version,
        loaded.cuda_version,
        loaded.faults,
    ):
        return None, "something outside gpus changed"
    if any(c in text.replace("\r\n", "\n") for c in "\r\x85\u2028\u2029"):
        return None, "line breaks other than \\n and \\r\\n"
    changed = [i for i, (old, new) in enumerate(zip(loaded.gpus, fleet.gpus, strict=True)) if old != new]
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    gpus_node = _value_of(root, "gpus")
    if not isinstance(gpus_node, yaml.SequenceNode) or gpus_node.flow_style:
        return None, "gpus is not a block list"
    if len(gpus_node.value) != len(fleet.gpus):
        return None, "gpus does not match the state as loaded"
    lines = text.split("\n")  # a line of a \r\n file keeps its \r

    spans: dict[int, tuple[int, int, str]] = {}  # GPU index → first line, last line, indentation
    for index in changed:
        node = gpus_node.value[index]
        first, column = node.start_mark.line, node.start_mark.column
        last, end_column = _content_end(node)
        start = _ENTRY_START.match(lines[first][:column])
        if start is None or last < first or not _ENTRY_END.match(lines[last][end_column:]):
            return None, f"gpus[{index}] shares its lines with other YAML"
        spans[index] = (first, last, start.group(1))

    attributed = _attributed_by_kept_entries(document, fleet, set(range(len(fleet.gpus))) - set(changed))
    entries = {index: _block_yaml(gpu_entry(fleet, index, attributed)) for index in changed}
    cr = "\r" if "\r\n" in text else ""
    for index in sorted(spans, reverse=True):  # from the end, so earlier line numbers still hold
        first, last, indent = spans[index]
        lines[first : last + 1] = [f"{indent}{line}{cr}" for line in entries[index].splitlines()]
    return "\n".join(lines), ""


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _content_end(node: yaml.Node) -> tuple[int, int]:
    """Line and column just after a node's last character. A block collection's own end mark is
    where the next token starts (past comments and blank lines), so it ends where its last child
    does; a block scalar's end mark is at the start of the line after it."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _content_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _content_end(node.value[-1])
    mark = node.end_mark
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">") and mark.column == 0:
        return mark.line - 1, 10**9  # the whole of its last line
    return mark.line, mark.column


def _attributed_by_kept_entries(document: Any, fleet: Fleet, kept: set[int]) -> set[int]:
    """The pids whose attribution in ``fleet`` the kept GPU entries already give in full, so a
    replaced entry need not repeat it (a conflict is caught when the spliced text is read back)."""
    given: dict[int, set[str]] = {}
    raw_gpus = document.get("gpus") if isinstance(document, dict) else None
    for index in kept:
        for entry in _process_entries(raw_gpus[index] if isinstance(raw_gpus, list) else None):
            pid = entry.get("pid")
            if isinstance(pid, int):
                given.setdefault(pid, set()).update(k for k in ATTRIBUTION_KEYS if k in entry)
    return {
        a.pid
        for a in fleet.attributions
        if {k for k in ATTRIBUTION_KEYS if getattr(a, k) is not None} <= given.get(a.pid, set())
    }


def _process_entries(raw_gpu: Any) -> list[dict]:
    def listed(holder: Any, key: str) -> list:
        items = holder.get(key) if isinstance(holder, dict) else None
        return items if isinstance(items, list) else []

    entries = list(listed(raw_gpu, "processes"))
    for instance in listed(raw_gpu, "instances"):
        entries += listed(instance, "processes")
        for compute_instance in listed(instance, "compute_instances"):
            entries += listed(compute_instance, "processes")
    return [e for e in entries if isinstance(e, dict)]


def _block_yaml(entry: dict[str, Any]) -> str:
    """``entry`` as one item of a block list: the entry itself always in block style (canonically a
    GPU with nothing but scalars would be a one-line flow mapping), what is inside it as in
    ``dump_fleet``."""
    node = _BlockDumper(io.StringIO(), default_flow_style=None, sort_keys=False).represent_data([entry])
    assert isinstance(node, yaml.SequenceNode) and isinstance(node.value[0], yaml.MappingNode)
    node.flow_style = node.value[0].flow_style = False
    return yaml.serialize(node, Dumper=_BlockDumper, width=110)


class _BlockDumper(yaml.SafeDumper):
    """Lists inside a GPU entry indented under their key, as in the built-in fleets and most
    hand-written files (PyYAML's default puts the ``-`` at the key's column)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)
