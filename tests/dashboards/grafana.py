"""The shipped Grafana dashboards, read as data: their panels, and each panel query with the
dashboard variables substituted as Grafana would.

The dashboard tests lint these; the end-to-end test runs the same substituted queries against a
Prometheus that scraped the exporter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "dashboards"

# $name, ${name} and ${name:format}: Grafana's variable syntaxes in a query.
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # the dashboard's uid
    panel: str  # the panel's title
    ref_id: str
    expr: str  # as written, with variables


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those collapsed inside rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"])
        for dashboard in map(load, dashboard_files())
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def all_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each multi-value variable's value when All is selected (its allValue)."""
    return {
        variable["name"]: variable["allValue"]
        for variable in dashboard["templating"]["list"]
        if variable.get("includeAll") and "allValue" in variable
    }


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """The query as Grafana sends it, for variables given in ``values`` (``__rate_interval`` too);
    a variable not in ``values`` is a KeyError, so a query cannot keep an unexpanded one."""
    return _VARIABLE.sub(lambda match: values[match.group(1) or match.group(2)], expr)
