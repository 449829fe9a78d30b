"""Reports built from the hand-made Snapshots of ``snapshots.py``, with the attribution a fleet file
gives, for the report's and the renderers' tests."""

from __future__ import annotations

from mig_exporter.advice import DEFAULT_HEADROOM_RATIO
from mig_exporter.diagnose.report import FindingSection, Report, build_report
from mig_exporter.model import Snapshot

from .snapshots import fleet_attributions, shared_gpu, snapshot


def report_of(
    snap: Snapshot, fleet: str | None = "test-fleet", headroom: float = DEFAULT_HEADROOM_RATIO,
    built_in: bool = False,
) -> Report:
    """The report on ``snap`` with every process attributed as a fleet file would, its commands
    naming ``fleet`` (None: as on a real host; ``built_in``: a copy of the read-only fleet)."""
    return build_report(snap, fleet_attributions(snap), headroom, fleet, fleet_built_in=built_in)


def commands(finding: FindingSection) -> list[str]:
    """The commands of a finding's next steps, in order (steps without one left out)."""
    return [step.command for step in finding.next_steps if step.command]


def finding_of(report: Report, kind: str) -> FindingSection:
    """The report's one finding of this kind."""
    (found,) = [f for f in report.findings if f.kind == kind]
    return found


def too_big_for_any_instance() -> Snapshot:
    """PID 1 needs 68010 MiB × 1.2 = 81612 MiB: more than a 7g.80gb (80896), less than a GPU."""
    return snapshot(shared_gpu(0, {1: 68000, 2: 100}), shared_gpu(1, {1: 10, 3: 100}))
