"""``mig-exporter serve``'s refusals: one line, exit status 2, before NVML or a port is touched."""

from __future__ import annotations

import pynvml
import pytest

from mig_exporter.cli import main

pytestmark = pytest.mark.usefixtures("restore_logging")  # serve configures the root logger


@pytest.mark.parametrize(("flags", "message"), [
    (["--collect.interval", "5x"], "--collect.interval: '5x' is not a duration"),
    (["--collect.timeout", "0s"], "--collect.timeout: '0s' must be longer than zero"),
    (["--collect.interval", "2y"], "--collect.interval: '2y' is too long (at most 1y)"),
    (["--collect.interval", "1ms"], "--collect.interval: '1ms' is too short (at least 100ms)"),
    (["--web.listen-address", "9458"], "--web.listen-address: '9458' is not host:port or :port"),
    (["--web.telemetry-path", "metrics"], "--web.telemetry-path: 'metrics' must be a path"),
    (["--web.max-requests", "many"], "--web.max-requests: 'many' is not a whole number"),
    (["--web.max-connections", "-1"], "--web.max-connections: '-1' is not a whole number"),
    (["--web.max-connections", "0"], "--web.max-connections: '0': at least 1 (0 would mean unbounded"),
    (["--collect.max-process-series", "-5"], "--collect.max-process-series: '-5' is not a whole number"),
    (["--log.level", "verbose"], "--log.level: 'verbose' is not one of debug, info, warn, error"),
    (["--log.format", "xml"], "--log.format: 'xml' is not one of logfmt, json"),
    (["--web.config.file", "/nonexistent/web.yml"], "/nonexistent/web.yml: cannot read the web config"),
])
def test_bad_flags_are_one_line_and_exit_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_initialise() -> None:
        raise AssertionError("NVML opened before the flags were checked")

    monkeypatch.setattr(pynvml, "nvmlInit", must_not_initialise)
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mig-exporter serve: error: {message}") and err.count("\n") == 1


def test_without_a_driver_it_says_how_to_try_a_simulated_fleet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_library() -> None:  # what pynvml raises where libnvidia-ml.so.1 cannot be loaded
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    assert main(["serve", "--web.listen-address", "127.0.0.1:0"]) == 2
    assert capsys.readouterr().err == (
        "mig-exporter serve: error: no NVIDIA driver found (NVML: Library Not Found); "
        "to try mig-exporter without a GPU, use --fleet seed-incident\n")
