"""The NVML fault matrix (issue 11, docs/reliability.md): each C function that serve's collections,
``diagnose`` and ``remediate``'s plan call, failing with each error NVML can answer (always, on one
GPU, once), and hung; no crash, DESIGN.md's exit statuses, nothing made up, nothing changed.

The functions come from clean runs (the simulator counts the calls each path makes). At CI size
each function meets two (error, variant) pairs; ``MIG_EXPORTER_LONG_SCALE=10`` tries twenty each,
every error on every call among them. A run's violations are gathered, so one failure lists all."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from long import scaled

from mig_exporter.exporter.schedule import CollectionJob
from mig_exporter.exporter.service import Exporter
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.sim import simulator as simulator_module

from . import invariants
from .invariants import Clean
from .matrix import ERRORS, PAIRS_PER_FUNCTION, VARIANTS, Fault, faults, write_fleet
from .paths import DIAGNOSE, REMEDIATE_PLAN, Hang, Run, run_command, run_serve, wait_until

pytestmark = pytest.mark.long

COLLECTIONS = 3  # the first reads everything, the second what a collection re-reads; fault gone for the third
SHOWN = 40  # violations printed when a path fails


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Clean, dict[str, list[str]]]:
    """Clean runs of each path, and the C functions each calls (in the order first counted)."""
    fleet = write_fleet(tmp_path_factory.mktemp("clean"))
    serve, again = run_serve(fleet, COLLECTIONS), run_serve(fleet, COLLECTIONS)
    scrapes = [*serve.scrapes[1:], *again.scrapes[1:]]
    volatile = frozenset(name for a in scrapes for b in scrapes for (name, labels), value in a.items()
                         if b.get((name, labels)) != value)
    diagnose, plan = run_command(fleet, DIAGNOSE), run_command(fleet, REMEDIATE_PLAN)
    assert (serve.tracebacks, diagnose.status, plan.status) == ([], 1, 0)
    state = Clean(serve.scrapes[-1], volatile, json.loads(diagnose.out), json.loads(plan.out)["plan"])
    opened = run_serve(fleet, 0).calls  # serve opening and closing NVML, no collection
    return state, {"serve": list(serve.calls), "diagnose": list(diagnose.calls), "plan": list(plan.calls),
                   "serve without collections": list(opened)}


def _serve(fleet: Path, fault: Fault, clean: Clean, opening: list[str]) -> tuple[Run, list[str]]:
    def fault_gone(i: int, _exporter: Exporter, session: NvmlSession) -> None:
        if i == COLLECTIONS - 1:
            without_faults(session)

    run = run_serve(fleet, COLLECTIONS, fault_gone)
    found = invariants.no_crash(run)
    for scrape, fired in zip(run.scrapes[:-1], run.fired_by_collection, strict=False):
        found += invariants.nothing_made_up(scrape, clean, fault, run, fired)
    found += invariants.failure_shown(run.scrapes[:-1], fault, run, opening)
    found += invariants.recovered(run.scrapes[-1], clean, fault)
    return run, found


def without_faults(session: NvmlSession) -> None:
    """The fault is gone from the next call on (the fleet file is written without it). The slow
    health counters are due at once: they are read once a minute by design, and a failed read of
    them stays absent until then."""
    simulator = session.simulator
    assert simulator is not None
    simulator.fleet = replace(simulator.fleet, faults=())  # type: ignore[attr-defined]
    session.health.slow_seconds = 0


def _diagnose(fleet: Path, fault: Fault, clean: Clean, _opening: list[str]) -> tuple[Run, list[str]]:
    run = run_command(fleet, DIAGNOSE)
    return run, invariants.no_crash(run) + invariants.diagnose_truthful(run, clean, fault)


def _plan(fleet: Path, fault: Fault, clean: Clean, _opening: list[str]) -> tuple[Run, list[str]]:
    run = run_command(fleet, REMEDIATE_PLAN)
    return run, invariants.no_crash(run) + invariants.plan_safe(run, clean)


PATHS: dict[str, Callable[[Path, Fault, Clean, list[str]], tuple[Run, list[str]]]] = {
    "serve": _serve, "diagnose": _diagnose, "plan": _plan,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_call_failing_with_every_error(
    path: str, clean: tuple[Clean, dict[str, list[str]]], tmp_path: Path,
) -> None:
    state, functions = clean
    assert len(functions[path]) >= 30, functions[path]  # the clean run was counted
    violations: list[str] = []
    runs = 0
    for fault in faults(functions[path]):
        directory = tmp_path / f"run-{runs}"
        directory.mkdir()
        fleet = write_fleet(directory, fault)
        before = {p.name: p.read_bytes() for p in directory.iterdir()}
        opening = functions["serve without collections"]
        run, found = PATHS[path](fleet, fault, state, opening)
        if path != "serve":  # serve's third collection runs on the fleet written without the fault
            found += invariants.unchanged(before, directory)
        closing = fault.call in opening  # serve closes NVML after its fault is gone
        if fault.variant == "always" and not run.fired and not closing:
            found.append("the fault never fired")
        violations += [f"{fault}: {line}" for line in found]
        runs += 1
    print(f"{path}: {runs} runs over {len(functions[path])} C functions, {len(violations)} violations")
    assert runs == len(functions[path]) * min(scaled(PAIRS_PER_FUNCTION), len(ERRORS) * len(VARIANTS))
    assert not violations, "\n".join(violations[:SHOWN]) + f"\n({len(violations)} in {runs} runs)"


def test_a_hung_call_in_serve(
    clean: tuple[Clean, dict[str, list[str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call hung in NVML (the simulator's ``delay_seconds``, held until released): the collection
    publishes without the hung GPU (stale) or is abandoned at ``--collect.timeout``; no second read
    of it starts meanwhile; nothing made up; once it returns, the next collection reads it all."""
    state, functions = clean
    collected = [f for f in functions["serve"] if f not in functions["serve without collections"]]
    hung = collected[::max(1, len(collected) // scaled(4))][:scaled(4)]
    violations: list[str] = []
    for n, call in enumerate(hung):
        hang = Hang()
        monkeypatch.setattr(simulator_module, "time", types.SimpleNamespace(sleep=hang.sleep))
        directory = tmp_path / f"hang-{n}"
        directory.mkdir()
        fleet = directory / "fleet.yaml"
        fleet.write_text(write_fleet(directory).read_text()
                         + f"faults:\n  - {{call: {call}, delay_seconds: {Hang.SECONDS}, count: 1}}\n")

        def let_go(i: int, exporter: Exporter, session: NvmlSession, hang: Hang = hang) -> None:
            if i == 1:
                assert hang.entered.wait(60)  # the read reached the hung call
            if i == COLLECTIONS - 1:
                hang.release()
                assert wait_until(lambda: not exporter.job.read_in_flight
                                  and all(f.done() for f in session.gpu_reads.values()))
                without_faults(session)
                # the next read without a time limit: whatever the machine's load, it reads everything
                exporter.job = CollectionJob(lambda: read_snapshot(session), exporter.state, 600)

        run = run_serve(fleet, COLLECTIONS, let_go, timeout_seconds=0.5)
        fault = Fault(call, "hang", "once")
        found = invariants.no_crash(run)
        for scrape, fired in zip(run.scrapes[:-1], run.fired_by_collection, strict=False):
            found += invariants.nothing_made_up(scrape, state, fault, run, fired)
        found += invariants.recovered(run.scrapes[-1], state, fault)
        violations += [f"{call} hung: {line}" for line in found]
    print(f"serve: {len(hung)} hung calls of {len(collected)}, {len(violations)} violations")
    assert len(hung) == min(len(collected), scaled(4))
    assert not violations, "\n".join(violations[:SHOWN])


@pytest.mark.parametrize("path", ["diagnose", "plan"])
def test_a_hung_call_in_a_command(
    path: str, clean: tuple[Clean, dict[str, list[str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``diagnose`` and ``remediate``'s plan have no time limit of their own (as ``nvidia-smi``): a
    hung call holds the command, which neither gives up nor fails meanwhile, and once it returns
    the command answers as a clean run does, verified."""
    state, functions = clean
    hung = functions[path][::max(1, len(functions[path]) // scaled(2))][:scaled(2)]
    violations: list[str] = []
    for n, call in enumerate(hung):
        hang = Hang()
        monkeypatch.setattr(simulator_module, "time", types.SimpleNamespace(sleep=hang.sleep))
        directory = tmp_path / f"hang-{n}"
        directory.mkdir()
        fleet = directory / "fleet.yaml"
        fleet.write_text(write_fleet(directory).read_text()
                         + f"faults:\n  - {{call: {call}, delay_seconds: {Hang.SECONDS}, count: 1}}\n")
        runs: list[Run] = []
        command = threading.Thread(target=lambda *a: runs.append(run_command(*a)),  # noqa: B023 (joined below)
                                   args=(fleet, DIAGNOSE if path == "diagnose" else REMEDIATE_PLAN))
        command.start()
        assert hang.entered.wait(60), f"{call} was never called"
        still_waiting = command.is_alive() and not runs
        hang.release()
        command.join(60)
        assert runs, f"{path} did not return after {call} did"
        run, fault = runs[0], Fault(call, "hang", "once")
        found = invariants.no_crash(run) + ([] if still_waiting else ["gave up while the call hung"])
        if path == "diagnose":
            found += invariants.diagnose_truthful(run, state, fault)
            found += [] if json.loads(run.out)["verified"] else ["not verified after a hang alone"]
        else:
            found += invariants.plan_safe(run, state)
            found += [] if json.loads(run.out)["plan"] == state.plan else ["another plan after a hang"]
        violations += [f"{call} hung: {line}" for line in found]
    print(f"{path}: {len(hung)} hung calls of {len(functions[path])}, {len(violations)} violations")
    assert len(hung) == min(len(functions[path]), scaled(2))
    assert not violations, "\n".join(violations[:SHOWN])
