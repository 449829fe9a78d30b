"""Errors reach the user as one line that names the input and the reason, never quoting a file
that may be secret, never as a traceback."""

import subprocess
import sys

import pytest

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


def test_a_yaml_error_in_the_web_config_does_not_quote_the_file(tmp_path, capsys):
    """PyYAML's message quotes the offending line; the one-line error keeps line and column only."""
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: x\nsecret: [hunter2\n")
    assert main(["serve", "--fleet", "seed-incident", "--web.config.file", str(config)]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert err.count("\n") == 1 and "not valid YAML: line 4, column 1:" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--fleet", "seed-incident", "--web.max-requests", "²"],
        ["serve", "--fleet", "seed-incident", "--web.listen-address", ":²"],
        ["serve", "--fleet", "seed-incident", "--collect.interval", "٥s"],
        ["remediate", "--fleet", "seed-incident", "--gpu", "²", "--layout", "3g"],
    ],
)
def test_digits_other_than_ascii_are_refused_in_one_line(argv, capsys):
    """``str.isdigit`` takes ``²`` (which ``int`` refuses) and ``\\d`` takes ``٥``: flags are ASCII."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


def test_a_closed_pipe_ends_quietly():
    """``mig-exporter fleet list | head -0``: the reader is gone before the first write; the
    command ends with 141 (128 + SIGPIPE) and no traceback."""
    child = subprocess.Popen([sys.executable, "-m", "mig_exporter", "fleet", "list"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    status = child.wait(timeout=60)
    assert child.stderr.read() == b""
    assert status == 141


@pytest.mark.parametrize(
    ("flag", "text"),
    [
        ("--web.config.file", "basic_auth_users:\n  alice: x\nbasic_auth_users:\n  bob: y\n"),
        ("--mig-parted-config", "mig-configs: {}\nversion: v1\nmig-configs: {}\n"),
    ],
)
def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, capsys, flag, text):
    """Issue 11, item 8: PyYAML keeps the last of two equal keys silently; every YAML file the
    product reads (read_yaml_file, like fleet files) refuses it with the key and both lines."""
    path = tmp_path / "config.yml"
    path.write_text(text)
    argv = {"--web.config.file": ["serve", "--fleet", "seed-incident", flag, str(path)],
            "--mig-parted-config": ["remediate", "--fleet", "seed-incident", flag, str(path),
                                    "--config", "x"]}[flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}: not valid YAML: line 3, column 1: duplicate key " in err
    assert "(first on line 1)" in err
