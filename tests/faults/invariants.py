"""What must hold of a run with a fault, against a clean run of the same fleet: nothing crashes,
exit statuses are DESIGN.md's, and nothing is made up: a failed read only ever takes values away
(a value not read is absent, and so is everything derived from it), and says that it failed.

Each check returns the violations it found, as lines naming the metric, GPU or field."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from .matrix import PARTITIONED_GPU, SHARED_GPUS, Fault
from .paths import Run, Samples

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "diagnose.schema.json").read_text())
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)  # built once: the matrix validates hundreds

# The series that report a failure rather than a value read: they may differ from a clean run.
FAILURE_SERIES = frozenset({
    "nvml_up", "nvml_gpu_lost", "mig_exporter_gpu_stale", "mig_exporter_collection_errors_total",
    "mig_exporter_collection_timeouts_total", "mig_exporter_collection_nvml_calls",
})
# The advice: re-made for the GPUs left when NVML says one is lost (its processes lost it too),
# or for a GPU that answers NOT_SUPPORTED (one without MIG profiles is advised differently).
ADVICE_SERIES = frozenset({"mig_exporter_advised_layout_info", "mig_exporter_advised_freed_gpu_info"})
# Series read from what a process listing gives: absent for a GPU whose listing failed.
PROCESS_COUNT_SERIES = ("nvml_gpu_processes", "nvml_gpu_unpartitioned_sharing")
# What identifies a process and a MIG device in diagnose's JSON.
ITEM_KEYS = {"processes": ("pid",), "instances": ("gpu_instance_id", "compute_instance_id")}


@dataclass
class Clean:
    """A clean run of each path, and the series whose values change between clean runs (time,
    energy): of those only the presence is compared."""

    serve: Samples
    volatile: frozenset[str]
    diagnose: dict[str, Any]
    plan: dict[str, Any]

    @functools.cached_property
    def by_name(self) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]]:
        keys: dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
        for key in self.serve:
            keys.setdefault(key[0], []).append(key)
        return keys


def no_crash(run: Run) -> list[str]:
    found = [f"logged a traceback: {t.splitlines()[-1]}" for t in run.tracebacks]
    if "Traceback" in run.err:
        found.append(f"traceback on stderr: {run.err.splitlines()[-1]}")
    return found


def lost_gpus(fault: Fault, run: Run) -> set[int]:
    """The GPUs NVML told the reader were lost."""
    if fault.error != "GPU_IS_LOST":
        return set()
    return {gpu for (_call, gpu), n in run.fired.items() if n and gpu is not None}


def listing_failed_on(fired: Counter[tuple[str, int | None]]) -> set[int]:
    """GPUs on which a process listing (``nvmlDeviceGet*RunningProcesses*``) was answered with an
    error: their process counts were not read."""
    return {gpu for (call, gpu), n in fired.items()
            if n and "RunningProcesses" in call and gpu is not None}


def nothing_made_up(
    scrape: Samples, clean: Clean, fault: Fault, run: Run, fired: Counter[tuple[str, int | None]],
) -> list[str]:
    """Every series of the scrape is one of the clean run's with its value, but for those that
    report the failure; process counts are absent where a listing failed in its collection
    (``fired``); sharing is never cleared; a GPU is lost only where NVML said so."""
    if fault.describes_another_gpu:
        return []
    found = []
    lost = lost_gpus(fault, run)
    for (name, labels), value in scrape.items():
        gpu = dict(labels).get("gpu")
        if name in FAILURE_SERIES:
            if name == "nvml_gpu_lost" and value == 1 and (gpu is None or int(gpu) not in lost):
                found.append(f"nvml_gpu_lost{{gpu={gpu}}} 1 but NVML did not say so")
            continue
        if name in ADVICE_SERIES and (lost or fault.error == "NOT_SUPPORTED"):
            continue
        truths = [clean.serve[k] for k in clean.by_name.get(name, ()) if _unread_or_equal(labels, k[1])]
        if not truths:
            found.append(f"{name}{dict(labels)} = {value:g}: not a series of the clean run")
        elif name not in clean.volatile and value not in truths:
            found.append(f"{name}{dict(labels)} = {value:g}, read {truths[0]:g} without the fault")
    by_gpu = {(name, dict(labels).get("gpu")) for name, labels in scrape}
    # pynvml sizes a listing by asking with no buffer first: INSUFFICIENT_SIZE once is its own protocol
    retried = fault.error == "INSUFFICIENT_SIZE" and fault.variant == "once"
    for unlisted in set() if retried else listing_failed_on(fired):
        found += [f"{name}{{gpu={unlisted}}} exported although its process listing failed"
                  for name in PROCESS_COUNT_SERIES if (name, str(unlisted)) in by_gpu]
        if ("nvml_processes_spanning_gpus", None) in by_gpu:
            found.append(f"nvml_processes_spanning_gpus exported although GPU {unlisted}'s listing failed")
    for shared in SHARED_GPUS:
        if scrape.get(_key(clean.serve, "nvml_gpu_unpartitioned_sharing", shared)) == 0:
            found.append(f"GPU {shared} shared without MIG, cleared to 0 by a failed read")
    return found


def failure_shown(scrapes: list[Samples], fault: Fault, run: Run, opening: list[str]) -> list[str]:
    """An error NVML answered is counted (or NVML reported down, or the GPU lost), never hidden.
    Not those of ``opening`` (the calls serve makes to open and close NVML, outside collections):
    a failure to initialise at start is logged, and the first collection initialises again."""
    fired = sum(n for (call, _gpu), n in run.fired.items() if call not in opening)
    if not fired or fault.error in ("NOT_SUPPORTED", "INSUFFICIENT_SIZE"):
        return []  # unsupported is an answer; pynvml itself retries a short buffer once
    last = scrapes[-1]
    errors = sum(v for (name, _), v in last.items() if name == "mig_exporter_collection_errors_total")
    down = any(s.get(("nvml_up", ())) == 0 for s in scrapes)
    lost = any(v == 1 for s in scrapes for (name, _), v in s.items() if name == "nvml_gpu_lost")
    return [] if errors or down or lost else [f"{fired} calls failed, no error counted"]


def recovered(scrape: Samples, clean: Clean, fault: Fault) -> list[str]:
    """After the fault is gone, the next collection reads what a clean one does (NOT_SUPPORTED is
    remembered for the session by design: the GPU said it does not have that value)."""
    if fault.error == "NOT_SUPPORTED":
        return []
    return [f"{name}{dict(labels)} not read again after the fault was gone"
            for (name, labels) in clean.serve
            if name not in clean.volatile and name not in FAILURE_SERIES and (name, labels) not in scrape]


def diagnose_truthful(run: Run, clean: Clean, fault: Fault) -> list[str]:
    """Exit 1 (the fleet has problems: a fault can only hide them, never make it healthy) with a
    report, or 2 with one line on stderr; the report's values, processes and findings are the
    clean report's or absent; ``verified`` only when the findings are all of the clean ones."""
    if run.status == 2:
        return _one_line_error(run, "diagnose")
    if run.status != 1:
        return [f"diagnose exit {run.status}: the fleet has problems, 1 or 2 expected"]
    report = json.loads(run.out)
    VALIDATOR.validate(report)
    if fault.describes_another_gpu:
        return []
    found = []
    clean_gpus = {g["index"]: g for g in clean.diagnose["gpus"]}
    lost = lost_gpus(fault, run)
    for gpu in report["gpus"]:
        truth = clean_gpus.get(gpu["index"])
        if truth is None:
            found.append(f"diagnose reports GPU {gpu['index']}, which does not exist")
            continue
        where = f"diagnose GPU {gpu['index']}"
        for field, value in gpu.items():
            if field == "lost" and value and gpu["index"] in lost:
                continue
            if field in ITEM_KEYS:
                found += _items_read(f"{where} {field}", value, truth[field], ITEM_KEYS[field])
            elif value not in (None, "") and value != truth[field]:
                found.append(f"{where} {field} = {value!r}, clean {truth[field]!r}")
    findings = set(_findings(report))
    truth_findings = set(_findings(clean.diagnose))
    made_up = {f for f in findings - truth_findings if not (f[0] == "gpu_lost" and f[1] in lost)}
    found += [f"diagnose finding {f} not in the clean report" for f in sorted(made_up)]
    if report["verified"] and findings != truth_findings:
        found.append(f"diagnose verified, yet its findings differ: {sorted(truth_findings ^ findings)}")
    return found


def plan_safe(run: Run, clean: Clean) -> list[str]:
    """``remediate`` without ``--apply``: exit 0 with a plan, or 2 with one line. Both targeted GPUs
    run processes, so a plan must wait for blockers on each, naming no process that is not there."""
    if run.status == 2:
        return _one_line_error(run, "remediate")
    if run.status != 0:
        return [f"remediate plan exit {run.status}: 0 or 2 expected"]
    plan = json.loads(run.out)["plan"]
    blocked = {blocker.get("gpu") for blocker in plan["blockers"]}
    found = [f"plan for GPU {gpu} has no blocker, though processes run on it"
             for gpu in (SHARED_GPUS[0], PARTITIONED_GPU) if gpu not in blocked]
    if plan["steps"] and not plan["steps_wait_for_blockers"]:
        found.append("plan steps do not wait for its blockers")
    clean_pids = {p["pid"] for b in clean.plan["blockers"] for p in b.get("processes", ())}
    found += [f"plan names PID {p['pid']}, which runs nowhere"
              for b in plan["blockers"] for p in b.get("processes", ()) if p["pid"] not in clean_pids]
    return found


def unchanged(before: dict[str, bytes], directory: Path) -> list[str]:
    """Reading changes no file: the fleet file as written, and nothing new beside it."""
    after = {path.name: path.read_bytes() for path in directory.iterdir()}
    return [] if after == before else [f"files changed: {sorted(set(after) ^ set(before)) or 'contents'}"]


def _items_read(where: str, items: list[dict], truth: list[dict], key: tuple[str, ...]) -> list[str]:
    """Each item (a process, a MIG device) is one of the clean report's, its fields equal or null."""
    clean = {tuple(item[k] for k in key): item for item in truth}
    found = []
    for item in items:
        match = clean.get(tuple(item[k] for k in key))
        if match is None:
            found.append(f"{where}: {item} not in the clean report")
            continue
        found += [f"{where} {item}: {field} = {value!r}, clean {match[field]!r}"
                  for field, value in item.items() if not _unread_or_equal_value(field, value, match[field])]
    return found


def _unread_or_equal(labels: tuple[tuple[str, str], ...], truth: tuple[tuple[str, str], ...]) -> bool:
    """The same labels as the clean series, but for those left empty: a label not read (a GPU
    whose UUID failed, a driver version NVML would not give) is empty, never another value."""
    truth_labels = dict(truth)
    return dict(labels).keys() == truth_labels.keys() and all(
        value in ("", truth_labels[label]) for label, value in labels)


def _unread_or_equal_value(field: str, value: Any, truth: Any) -> bool:
    """Null or empty (not read), or the clean value; a MIG device named without its unread profile
    (``GI 2, CI 0`` for ``3g.40gb (GI 2, CI 0)``) is the same device."""
    return value in (None, "") or value == truth or (field == "mig_device" and truth.endswith(f"({value})"))


def _one_line_error(run: Run, command: str) -> list[str]:
    lines = run.err.splitlines()
    if len(lines) == 1 and lines[0].startswith(f"mig-exporter {command}: error: "):
        return []
    return [f"{command} exit 2 without one error line: {run.err!r}"]


def _findings(report: dict[str, Any]) -> Iterable[tuple[str, int, int | None]]:
    """(kind, GPU, pid) of every finding: a finding about two GPUs and two pids is four claims."""
    for finding in report["findings"]:
        for gpu in finding["gpu_indices"]:
            for pid in finding["pids"] or [None]:
                yield finding["kind"], gpu, pid


def _key(samples: Samples, name: str, gpu: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    return next((key for key in samples if key[0] == name and dict(key[1]).get("gpu") == str(gpu)),
                (name, ()))
