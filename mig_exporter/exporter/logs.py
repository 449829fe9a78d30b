"""``--log.level`` and ``--log.format`` as Prometheus exporters spell them: logfmt or JSON lines
on stderr, with the same keys (``ts``, ``level``, ``logger``, ``msg``), so the exporter's logs
parse with the rest of a monitoring stack's."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
FORMATS = ("logfmt", "json")
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
                logging.ERROR: "error", logging.CRITICAL: "error"}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    message = record.getMessage()
    if record.exc_info:
        message = f"{message}: {logging.Formatter().formatException(record.exc_info)}"
    return {
        "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": _LEVEL_NAMES.get(record.levelno, "info"),
        "logger": record.name,
        "msg": message,
    }


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\\'):
        return value
    return json.dumps(value)  # a quoted string with \" \n \\ escapes, as logfmt readers expect


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record))


def configure_logging(level: str, log_format: str) -> None:
    """Send every logger's records at ``level`` and above to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # apscheduler logs two info lines per run; below debug, only its warnings (a run skipped
    # behind a hung one) are worth a line.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
