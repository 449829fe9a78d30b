"""The shipped systemd unit starts a command line the CLI accepts, flag values included, and is
hardened: ``systemd-analyze security`` rates it 2.0 or lower, ``systemd-analyze verify`` is clean."""

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from mig_exporter.cli import build_parser
from mig_exporter.exporter.command import serve_config

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "mig-exporter.service"


def test_systemd_unit_exec_start_parses():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    program, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert program.endswith("/mig-exporter")
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    config = serve_config(args)  # raises InputError on a value serve would refuse
    assert config.listen_address.port == 9458
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: scripts/test installs Debian's systemd"
    return found


def _exposure(unit: Path) -> tuple[int, float]:
    """``systemd-analyze security``'s exit status with the issue's threshold (2.0, which the
    command writes as 20) and the overall exposure it prints."""
    result = subprocess.run([_systemd_analyze(), "security", "--offline=true", "--threshold=20", str(unit)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return result.returncode, float(match.group(1))


def test_systemd_unit_is_hardened_to_an_exposure_of_2_or_less() -> None:
    returncode, exposure = _exposure(UNIT)
    assert returncode == 0 and exposure <= 2.0, exposure


def test_the_exposure_check_fails_without_the_hardening(tmp_path: Path) -> None:
    """The check above can fail: the same unit without its sandboxing lines is rated exposed."""
    sandboxing = re.compile(r"(Protect|Private|Restrict|SystemCall|Capability|Device|NoNew|Lock|UMask)")
    kept = [line for line in UNIT.read_text().splitlines() if not sandboxing.match(line)]
    bare = tmp_path / "mig-exporter.service"
    bare.write_text("\n".join(kept) + "\n")
    returncode, exposure = _exposure(bare)
    assert returncode != 0 and exposure > 2.0


def test_nvml_device_nodes_stay_readable() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    service = unit["Service"]
    assert service["DevicePolicy"] == "closed"
    assert "PrivateDevices" not in service  # it would hide /dev/nvidia*
    allowed = _all_values(UNIT, "DeviceAllow")
    assert "char-nvidia-frontend rw" in allowed  # /dev/nvidiactl, /dev/nvidia0..N (major 195)


def _all_values(unit: Path, key: str) -> list[str]:
    """Every value of a key that a unit repeats (configparser keeps only the last)."""
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """verify also checks that ExecStart's program is executable: the unit is checked with its
    program path replaced by where this checkout's venv installed mig-exporter."""
    program = Path(sys.executable).parent / "mig-exporter"
    assert program.exists()
    unit = tmp_path / "mig-exporter.service"
    unit.write_text(UNIT.read_text().replace("/opt/mig-exporter/bin/mig-exporter", str(program)))
    assert str(program) in unit.read_text()
    result = subprocess.run([_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not output.strip(), output
    unit.write_text(unit.read_text().replace("ProtectClock=yes", "ProtectClocks=yes"))
    misspelt = subprocess.run([_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True)
    assert "Unknown key" in misspelt.stderr  # the cleanliness check can fail
