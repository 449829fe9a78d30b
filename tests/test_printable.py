"""Issue 11 item 8: a process name with a newline broke the diagnose table. Text output escapes
every control character of what processes, users and fleet files name (as systemctl does); JSON
keeps the exact string."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import yaml

from mig_exporter.cli import main
from mig_exporter.printable import printable

NAME = "evil\nname\x1b[2J\u202e"  # a newline, a clear-screen escape, a right-to-left override
USER = "bob\tx\r"
CMDLINE = ["python", "serve.py", "--tag", "a\x07b"]


def unprintable(text: str) -> list[str]:
    """The control characters in ``text`` other than the newlines between its lines."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    process = {"pid": 4242, "name": NAME, "user": USER, "cmdline": CMDLINE, "used_memory_mib": 3000}
    gpus = [{"model": "A100-SXM4-80GB", "processes": [dict(process), {"pid": 4343, "name": "python",
                                                                        "used_memory_mib": 2000}]},
            {"model": "A100-SXM4-80GB", "processes": [dict(process)]}]
    Path("fleet.yaml").write_text(yaml.safe_dump({"gpus": gpus}))
    return "fleet.yaml"


def test_printable_escapes_control_characters_as_c_escapes() -> None:
    assert printable(NAME) == "evil\\nname\\x1b[2J\\u202e"
    assert printable(USER) == "bob\\tx\\r"
    assert printable("\x00\x7f\x85\u2028") == "\\x00\\x7f\\x85\\u2028"
    plain = "python3 é 数据"
    assert printable(plain) is plain


def test_diagnose_text_shows_each_row_on_one_line_and_json_the_exact_name(
    fleet: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["diagnose", "--fleet", fleet]) == 1
    text = capsys.readouterr().out
    assert unprintable(text) == []
    rows = [line for line in text.splitlines() if line.startswith("  4242 ")]
    assert len(rows) == 2  # one row per GPU, the name cut to its column, nothing spilled onto a next line
    assert all(row.split()[1] == "evil\\nname\\x1b[~" and "bob\\tx\\r" in row for row in rows)
    assert "PID 4242  evil\\nname\\x1b[2J\\u202e  on GPUs 0, 1" in text
    assert "python serve.py --tag 'a\\x07b'" in text
    assert main(["diagnose", "--fleet", fleet, "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    process = next(p for p in document["processes"] if p["pid"] == 4242)
    assert (process["name"], process["user"], process["cmdline"]) == (NAME, USER, CMDLINE)
    assert {p["name"] for g in document["gpus"] for p in g["processes"] if p["pid"] == 4242} == {NAME}


def test_remediate_plan_text_is_escaped_and_json_exact(
    fleet: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["remediate", "--fleet", fleet, "--gpu", "0", "--layout", "3g,3g"]) == 0
    text = capsys.readouterr().out
    assert unprintable(text) == []
    assert "4242 evil\\nname\\x1b[2J\\u202e 3000 MiB (user bob\\tx\\r, python serve.py --tag a\\x07b)" in text
    assert main(["remediate", "--fleet", fleet, "--gpu", "0", "--layout", "3g,3g", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert NAME in {p["name"] for blocker in plan["blockers"] for p in blocker["processes"]}


def test_an_error_quoting_a_name_stays_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"gpus": [{"model": "A100-SXM4-80GB"}]}))
    assert main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g\n\x1b[2J"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and unprintable(err) == []


def test_remediate_apply_text_is_escaped_and_json_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The outcome of an apply names the files written: a directory with a newline (a pasted
    name) is shown escaped, written and listed in JSON as it is."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"gpus": [{"model": "A100-SXM4-80GB"}]}))
    out_dir = tmp_path / "out\nx"
    assert main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g", "--apply",
                 "--output-dir", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert unprintable(text) == []
    (wrote,) = [line for line in text.splitlines() if line.startswith("Wrote: ")]
    assert "out\\nx/" in wrote
    fleet.write_text(yaml.safe_dump({"gpus": [{"model": "A100-SXM4-80GB"}]}))
    assert main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g", "--apply",
                 "--output-dir", str(out_dir), "--format", "json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert files and all(f.startswith(str(out_dir) + "/") and Path(f).is_file() for f in files)
