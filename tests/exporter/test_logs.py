"""Log lines in logfmt and JSON with the keys Prometheus exporters use."""

from __future__ import annotations

import json
import logging

import pytest

from mig_exporter.exporter.logs import JsonFormatter, LogfmtFormatter, configure_logging


def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("mig_exporter.test", level, __file__, 1, message, None, None)


def test_logfmt_quotes_only_what_needs_it() -> None:
    line = LogfmtFormatter().format(record('collection "abandoned" after 10s'))
    assert line.startswith("ts=") and " level=warn logger=mig_exporter.test " in line
    assert line.endswith(r'msg="collection \"abandoned\" after 10s"')
    plain = LogfmtFormatter().format(record("started", logging.INFO))
    assert plain.endswith("level=info logger=mig_exporter.test msg=started")


def test_json_lines() -> None:
    fields = json.loads(JsonFormatter().format(record("listening", logging.ERROR)))
    assert {k: fields[k] for k in ("level", "logger", "msg")} == {
        "level": "error", "logger": "mig_exporter.test", "msg": "listening"}
    assert fields["ts"].endswith("+00:00")


@pytest.mark.parametrize(("level", "expected"), [("debug", logging.DEBUG), ("warn", logging.WARNING)])
def test_configure_sets_level_and_one_handler(level: str, expected: int) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging(level, "json")
        assert root.level == expected and len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
