"""The report for scripts and webhooks: the Report tree as JSON, keys as the dataclass fields.

``docs/diagnose.schema.json`` describes it and a test validates real output against it, so a
renamed field fails the tests instead of a consumer. ``schema_version`` changes when a key does.
"""

from __future__ import annotations

import dataclasses
import json

from mig_exporter.diagnose.report import Report


def render_json(report: Report) -> str:
    return json.dumps(dataclasses.asdict(report), indent=2) + "\n"
