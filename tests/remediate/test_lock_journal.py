"""Issue 11 item 7: the lock and journal edges (symlinked fleet file, leftovers, missing
directories, a re-run after an interrupted --apply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mig_exporter.errors import InputError
from mig_exporter.remediate.command import default_journal, default_lock
from mig_exporter.remediate.journal import Journal, unfinished_runs
from mig_exporter.remediate.lock import HostLock

from .fleets import incident_document, remediate, write_fleet


def test_a_symlink_to_the_fleet_file_shares_its_lock_and_journal(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("gpus: []\n")
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.yaml"
    link.symlink_to(fleet)
    assert default_lock(str(link)) == default_lock(str(fleet))
    assert default_journal(str(link)) == default_journal(str(fleet))
    with HostLock(default_lock(str(fleet))), pytest.raises(InputError, match="another mig-exporter"):
        HostLock(default_lock(str(link))).__enter__()


def test_the_lock_file_is_removed_on_release(tmp_path: Path) -> None:
    """A run refused for bad input (an invalid fleet file) left a new .lock behind."""
    path = tmp_path / "fleet.yaml.lock"
    with pytest.raises(InputError), HostLock(path):
        assert path.exists()
        raise InputError("fleet.yaml: bad")
    assert not path.exists()
    with HostLock(path):  # and it can be taken again
        pass


@pytest.mark.parametrize("kind", ["lock", "journal"])
def test_a_given_path_in_a_missing_directory_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "typo" / "file"
    opener = HostLock(path) if kind == "lock" else Journal(path)
    with pytest.raises(InputError, match=rf"^--{kind} .*: the directory .*typo does not exist$"):
        opener.__enter__()
    assert not (tmp_path / "typo").exists()
    with HostLock(path, create_parent=True) if kind == "lock" else Journal(path, create_parent=True):
        assert (tmp_path / "typo").is_dir()  # the defaults' directories are made


def test_a_run_after_an_interrupted_one_names_it_in_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as killed:
        killed.record("run-start", steps=2)
        killed.record("step-begin", step=0)  # SIGKILL here: no run-end
    path.write_text(path.read_text() + '{"cut short')
    assert unfinished_runs(path) == [killed.run_id]
    with Journal(path) as rerun:
        rerun.record("run-start", steps=1)
        rerun.record("run-end", failed=False)
    lines = [json.loads(t) for t in path.read_text().splitlines()[3:]]
    assert lines[0] == {**lines[0], "run": rerun.run_id, "event": "unfinished-run-found",
                        "unfinished_run": killed.run_id}
    assert unfinished_runs(path) == []  # reported once


def test_a_rerun_with_nothing_left_to_do_names_the_unfinished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed after its last step, before it verified, leaves nothing to do: the re-run says
    so and closes the killed run in the journal; with nothing unfinished, it journals nothing."""
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply", "--yes") == 0
    journal = tmp_path / "journal.jsonl"
    with Journal(journal) as killed:
        killed.record("run-start", steps=4)  # SIGKILL after its last step: no run-end
    written = journal.read_text()
    capsys.readouterr()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply", "--yes") == 0
    assert "Nothing to do: the GPUs already have this layout." in capsys.readouterr().out
    rerun = [json.loads(t) for t in journal.read_text()[len(written):].splitlines()]
    assert [(e["event"], e.get("unfinished_run")) for e in rerun] == [
        ("unfinished-run-found", killed.run_id), ("run-start", None), ("run-end", None)]
    assert rerun[1]["steps"] == 0 and rerun[2]["failed"] is False
    written = journal.read_text()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply", "--yes") == 0
    assert journal.read_text() == written
