"""Running a plan: each step journaled before and after, undone in reverse on any failure.

mig-parted leaves a GPU empty when every ordering fails and does not roll back; here a failure at
any step (a fault, a driver that disagrees, a verification that does not match) undoes this run's
own steps, newest first, so every GPU is left as it was found. A MIG mode that stays pending
because the GPU is not idle is not a failure: the GPU's remaining steps wait for a reset, which
``--reset`` does for that GPU alone (mig-parted #357 resets them all), with persistence mode off
for the reset since it holds the GPU open (gpu-operator #118).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count

from mig_exporter.model import Snapshot
from mig_exporter.nvml.write import HardwareWriter, MigModeChange, WriteFailed
from mig_exporter.remediate.journal import Journal
from mig_exporter.remediate.plan import GpuPlan, Plan
from mig_exporter.remediate.steps import (
    CreateComputeInstance,
    CreateGpuInstance,
    DestroyComputeInstance,
    DestroyGpuInstance,
    ResetGpu,
    SetMigMode,
    SetPersistence,
    Step,
    to_json,
    undo,
)
from mig_exporter.signals import handle_unless_ignored, restore


@dataclass(frozen=True)
class Executed:
    step: Step
    created_id: int | None = None  # the ID the driver gave a created GPU or compute instance
    gpu_instance_id: int | None = None  # for a created compute instance: the GPU instance it is in
    compute_start: int | None = None  # for a destroyed compute instance: the compute slice it began at
    mode_change: MigModeChange | None = None

    def inverse(self) -> Step | None:
        return undo(self.step, self.created_id, self.gpu_instance_id, self.compute_start)

    @property
    def in_effect(self) -> bool:
        """False for a MIG mode change the driver accepted but left pending: asked for, not done."""
        return self.mode_change is None or self.mode_change.activated


@dataclass(frozen=True)
class PendingMode:
    """A GPU whose MIG mode waits for a reset; its later steps were not run."""

    gpu_index: int
    reason: str
    failed: Failure | None = None  # the reset tried for it, refused because the GPU is held


@dataclass(frozen=True)
class Failure:
    what: str  # the step, or "verification"
    error: str


class StepFailed(Exception):
    """A step's mutation failed: the step, and the write side's error."""

    def __init__(self, step: Step, error: WriteFailed) -> None:
        super().__init__(f"{step.describe()}: {error.call}: {error.reason}")
        self.step = step
        self.error = error

    def failure(self) -> Failure:
        return Failure(self.step.describe(), f"{self.error.call}: {self.error.reason}")


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived during the run; acted on once the step under way has
    finished."""


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Note SIGINT, SIGTERM and SIGHUP (an ssh session gone) instead of letting them cut a step in
    half: a mutation interrupted inside the driver call is one the journal could not say was made.
    A signal this process ignores (SIGHUP under ``nohup``, SIGINT for a background job) stays
    ignored. The signals received are listed in the yielded list; outside the main thread (where
    handlers cannot be set) it is empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = handle_unless_ignored((signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                                     lambda got, _frame: received.append(got))
    try:
        yield received
    finally:
        restore(previous)


@dataclass(frozen=True)
class Outcome:
    executed: tuple[Executed, ...]  # the steps that ran and stay done (none after a rollback)
    pending: tuple[PendingMode, ...] = ()
    failure: Failure | None = None
    undone: tuple[Executed, ...] = ()  # the undo steps that ran, newest step first
    not_undone: tuple[Failure, ...] = ()  # undo steps that failed: the GPUs are not as found


class Applier:
    """Runs a plan's steps through the write side and keeps what it needs to undo them."""

    def __init__(
        self, writer: HardwareWriter, journal: Journal, found: Snapshot, *, allow_reset: bool,
    ) -> None:
        self._writer = writer
        self._journal = journal
        self._allow_reset = allow_reset
        self._sequence = count(1)
        # Live state the steps need: GPU instance IDs by (GPU, placement start), and persistence.
        self._gpu_instance_ids = {(gi.gpu_index, gi.placement_start): gi.gpu_instance_id
                                  for gpu in found.gpus for gi in gpu.gpu_instances}
        self._persistence = {gpu.index: bool(gpu.persistence_mode) for gpu in found.gpus}
        self._done: list[Executed] = []
        self._pending: list[PendingMode] = []
        self._signals: list[int] = []

    def apply(self, plan: Plan) -> Outcome:
        """Run every step; on the first failure or an interruption, undo what this run did.

        Any other exception is a fault of this program, not of the hardware; the GPUs are still
        put back before it is reported, rather than left half-changed behind a traceback.

        A plan with blockers has steps too (as they would run once the blockers are cleared), so
        the blockers, not an empty list of steps, are what stop it here, before any change."""
        if plan.blockers:
            reasons = "; ".join(blocker.reason for blocker in plan.blockers)
            raise ValueError(f"a plan with blockers is never applied: {reasons}")
        with deferred_signals() as self._signals:
            try:
                for gpu_plan in plan.gpus:
                    self._apply_gpu(gpu_plan)
            except StepFailed as failed:
                return self.roll_back(failed.failure())
            except Interrupted as interrupted:
                return self.roll_back(Failure("interrupted", str(interrupted)))
            except Exception as error:  # a bug here: see the docstring
                return self.roll_back(Failure("internal error", f"{type(error).__name__}: {error}"))
        return Outcome(tuple(self._done), tuple(self._pending))

    def roll_back(self, failure: Failure) -> Outcome:
        """Undo this run's steps, newest first. An undo that fails is reported and the rest go on;
        signals wait until the undo is over."""
        with deferred_signals():
            return self._roll_back(failure)

    def _roll_back(self, failure: Failure) -> Outcome:
        self._journal.record("rollback", reason=f"{failure.what}: {failure.error}")
        undone, not_undone = [], []
        for executed in reversed(self._done):
            inverse = executed.inverse()
            if inverse is None:
                continue
            try:
                result = self._run(inverse, undoing=True)
            except StepFailed as failed:
                not_undone.append(failed.failure())
                continue
            except Exception as error:  # one undo's fault must not stop the others
                why = f"internal error: {type(error).__name__}: {error}"
                not_undone.append(Failure(inverse.describe(), why))
                continue
            undone.append(result)
            if result.mode_change is not None and not result.mode_change.activated:
                pending = f"the mode stays pending: {result.mode_change.reason}"
                not_undone.append(Failure(inverse.describe(), pending))
        self._done.clear()
        self._pending.clear()
        return Outcome((), (), failure, tuple(undone), tuple(not_undone))

    def _apply_gpu(self, gpu_plan: GpuPlan) -> None:
        for step in gpu_plan.steps:
            executed = self._run(step)
            change = executed.mode_change
            if change is None or change.activated:
                continue
            why = change.reason or "the GPU did not apply it"
            pending: PendingMode | None
            if gpu_plan.kept:
                # A reset clears every instance, and the plan promised to keep these (busy ones
                # among them): only the operator can decide to lose them.
                kept = ", ".join(f"{gi.profile}@{gi.placement_start}" for gi in gpu_plan.kept)
                why = f"{why}; not reset, which would destroy the GPU instances {kept}"
                pending = PendingMode(step.gpu_index, why)
            elif self._allow_reset:
                pending = self._reset(step.gpu_index)
            else:
                pending = PendingMode(step.gpu_index, why)
            if pending is not None:
                self._pending.append(pending)
                return

    def _reset(self, gpu_index: int) -> PendingMode | None:
        """Reset the GPU to apply its pending mode; why it stays pending when the GPU is held."""
        held_open = self._persistence.get(gpu_index, False)
        if held_open:
            self._run(SetPersistence(gpu_index, False))
        try:
            self._run(ResetGpu(gpu_index))
            refused = None
        except StepFailed as failed:
            if not failed.error.in_use:
                raise
            why = f"the reset was refused: {failed.error.reason}"
            refused = PendingMode(gpu_index, why, failed.failure())
        if held_open:
            self._run(SetPersistence(gpu_index, True))
        return refused

    def _run(self, step: Step, undoing: bool = False) -> Executed:
        sequence = next(self._sequence)
        self._journal.record("undo-begin" if undoing else "begin", seq=sequence, step=to_json(step))
        try:
            executed = self._perform(step)
        except WriteFailed as error:
            self._journal.record("failed", seq=sequence, call=error.call, error=error.reason)
            raise StepFailed(step, error) from None
        change = executed.mode_change
        self._journal.record("done", seq=sequence, created_id=executed.created_id,
                             gpu_instance_id=executed.gpu_instance_id,
                             activated=None if change is None else change.activated,
                             pending_reason=None if change is None else change.reason)
        if not undoing:
            self._done.append(executed)
            if self._signals:
                names = ", ".join(signal.Signals(number).name for number in self._signals)
                raise Interrupted(f"{names} received after: {step.describe()}")
        return executed

    def _perform(self, step: Step) -> Executed:
        writer, gpu = self._writer, step.gpu_index
        match step:
            case SetPersistence():
                writer.set_persistence(gpu, step.enabled)
                self._persistence[gpu] = step.enabled
            case SetMigMode():
                return Executed(step, mode_change=writer.set_mig_mode(gpu, step.enabled))
            case CreateGpuInstance():
                created = writer.create_gpu_instance(gpu, step.profile_enum, step.start, step.size)
                self._gpu_instance_ids[gpu, step.start] = created
                return Executed(step, created_id=created)
            case DestroyGpuInstance():
                writer.destroy_gpu_instance(gpu, step.gpu_instance_id)
                del self._gpu_instance_ids[gpu, step.start]
            case CreateComputeInstance():
                gpu_instance_id = self._gpu_instance_ids.get((gpu, step.gpu_instance_start))
                if gpu_instance_id is None:  # an undo whose GPU instance could not be re-created
                    missing = f"not called: no GPU instance at memory slice {step.gpu_instance_start}"
                    raise WriteFailed("nvmlGpuInstanceCreateComputeInstance", gpu, missing)
                created = writer.create_compute_instance(gpu, gpu_instance_id, step.slices, step.start)
                return Executed(step, created_id=created, gpu_instance_id=gpu_instance_id)
            case DestroyComputeInstance():
                start = writer.destroy_compute_instance(gpu, step.gpu_instance_id, step.compute_instance_id)
                return Executed(step, compute_start=start)
            case ResetGpu():
                writer.reset_gpu(gpu)
                # a reset clears every GPU and compute instance of the GPU
                self._gpu_instance_ids = {key: value for key, value in self._gpu_instance_ids.items()
                                          if key[0] != gpu}
        return Executed(step)
