"""Parsing of ``serve``'s flag values as node_exporter and Prometheus write them.

Each parser raises ``InputError`` naming the flag, so a bad value stops ``serve`` with one line
and exit status 2 before NVML is opened or a port is bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mig_exporter.errors import InputError
from mig_exporter.numbers import is_whole_number

# Prometheus durations (model.ParseDuration): units in decreasing order, each at most once.
_DURATION = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$",
    re.ASCII,  # \d would otherwise take any script's digits
)
_UNIT_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
# The scheduler's timedelta and the thread waits overflow on durations far longer than this, and
# no collection interval or timeout is meant to be longer.
_MAX_DURATION_SECONDS = _UNIT_SECONDS["y"]


def parse_duration(flag: str, text: str, why_not_zero: str = "") -> float:
    """Seconds in a positive Prometheus duration of at most a year: ``500ms``, ``5s``, ``1m30s``.

    ``0`` is a duration, as Prometheus parses it, and refused as one: a duration flag never takes
    0 for "no limit" (``why_not_zero`` says what it would cost)."""
    match = _DURATION.match(text.strip())
    if text.strip() != "0" and (not text.strip() or match is None):
        raise InputError(f"{flag}: {text!r} is not a duration (write it as Prometheus does: 500ms, 5s, 1m)")
    seconds = 0 if match is None else sum(
        int(value) * _UNIT_SECONDS[unit] for unit, value in match.groupdict().items() if value)
    if seconds <= 0:
        raise InputError(f"{flag}: {text!r} must be longer than zero{why_not_zero}")
    if seconds > _MAX_DURATION_SECONDS:
        raise InputError(f"{flag}: {text!r} is too long (at most 1y)")
    return float(seconds)


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" for every interface
    port: int

    def url_host(self) -> str:
        """The host as it goes in a URL, IPv6 in brackets; every interface as localhost."""
        if not self.host or self.host in ("0.0.0.0", "::"):
            return "localhost"
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_listen_address(flag: str, text: str) -> ListenAddress:
    """``host:port``, ``:port`` (every interface) or ``[v6 address]:port``."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not is_whole_number(port_text) or int(port_text) > 65535:
        raise InputError(f"{flag}: {text!r} is not host:port or :port "
                         "(e.g. :9458, 127.0.0.1:9458, [::1]:9458)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InputError(f"{flag}: {text!r}: write an IPv6 address in brackets, e.g. [::1]:9458")
    return ListenAddress(host, int(port_text))


def parse_count(flag: str, text: str) -> int:
    """A whole number, zero or more."""
    if not is_whole_number(text.strip()):
        raise InputError(f"{flag}: {text!r} is not a whole number (0 or more)")
    return int(text)


def parse_limit(flag: str, text: str) -> int | None:
    """A cap that can be lifted: a whole number, 0 for no limit (None), as node_exporter's
    ``--web.max-requests`` and Prometheus' ``sample_limit`` take it. A cap that must hold refuses
    0 instead (``--web.max-connections``); 0 never means "none at all"."""
    count = parse_count(flag, text)
    return count or None


def parse_telemetry_path(flag: str, text: str) -> str:
    """A path the server can match: requests are routed on the path alone, so a query (``?``) or a
    fragment (``#``) in the flag would make the metrics unreachable."""
    if (not text.startswith("/") or text in ("/", "/health")
            or any(c.isspace() or c in "?#" for c in text)):
        raise InputError(f"{flag}: {text!r} must be a path starting with / other than / and /health, "
                         "without spaces, ? or #")
    return text
