"""Errors about a user's file echo only what looks like a key name (errors.shown_key)."""

from mig_exporter.cli import main

SHADOW_LINE = "root:$6$saltsalt$hashhashhash:20228:0:99999:7:::"


def test_a_wrong_file_given_as_fleet_is_not_echoed(tmp_path, capsys):
    wrong = tmp_path / "shadow"
    wrong.write_text(SHADOW_LINE + "\n")
    assert main(["diagnose", "--fleet", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "saltsalt" not in err and "root:" not in err
    assert err.count("\n") == 1 and "(not a key name): unknown key" in err


def test_a_mistyped_key_is_still_named(tmp_path, capsys):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("gpu:\n  - model: A100-SXM4-80GB\n")
    assert main(["diagnose", "--fleet", str(fleet)]) == 2
    assert "gpu: unknown key (did you mean gpus?)" in capsys.readouterr().err
