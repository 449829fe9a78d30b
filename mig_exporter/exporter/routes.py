"""What each request is answered: ``/metrics`` (the telemetry path), ``/health``, a landing page.

Kept apart from the connection handling so that the answers are plain functions of the request
and the state, and the network side only moves bytes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from mig_exporter import __version__
from mig_exporter.exporter.state import ExporterState

HEALTH_PATH = "/health"
SERVER_HEADER = f"mig-exporter/{__version__}"
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def answer(state: ExporterState, telemetry_path: str, path: str, accept_encoding: str) -> Answer:
    """The answer to an authorised GET or HEAD of ``path`` (the query already stripped)."""
    if path == telemetry_path:
        exposition = state.exposition
        headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Vary": "Accept-Encoding"}
        if accepts_gzip(accept_encoding):
            return Answer(200, exposition.gzipped, {**headers, "Content-Encoding": "gzip"})
        return Answer(200, exposition.plain, headers)
    if path == HEALTH_PATH:
        health = state.health()
        return Answer(200 if health.healthy else 503, health.reason.encode() + b"\n", {"Content-Type": _TEXT})
    if path == "/":
        return Answer(200, _landing_page(telemetry_path), {"Content-Type": "text/html; charset=utf-8"})
    return text_answer(404, f"not found; the metrics are at {telemetry_path}")


def text_answer(status: int, text: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, text.encode() + b"\n", {"Content-Type": _TEXT, **(headers or {})})


def accepts_gzip(accept_encoding: str) -> bool:
    """RFC 9110 section 12.5.3: ``gzip`` is acceptable when it, or ``*`` in its absence, has a
    q-value above 0 (``gzip;q=0`` refuses it, as Go's and nginx's negotiation read it)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *parameters = (part.strip() for part in item.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def _landing_page(telemetry_path: str) -> bytes:
    path = html.escape(telemetry_path, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>mig-exporter</title></head>
<body>
<h1>mig-exporter</h1>
<p>GPU, MIG and process metrics from NVML, for Prometheus.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="{HEALTH_PATH}">Health</a></li>
</ul>
<p>Version {html.escape(__version__)}</p>
</body>
</html>
""".encode()
