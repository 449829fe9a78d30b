"""The renderers on reports built by hand: 80 columns, colour rules, commands that survive
wrapping, and JSON that matches docs/diagnose.schema.json in every branch."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from mig_exporter.advice import DEFAULT_HEADROOM_RATIO
from mig_exporter.diagnose.command import encodable, parse_headroom, use_color
from mig_exporter.diagnose.render_json import render_json
from mig_exporter.diagnose.render_text import render_text
from mig_exporter.diagnose.report import build_report
from mig_exporter.errors import InputError
from mig_exporter.hostinfo import Attribution, Container
from mig_exporter.model import CollectionError

from .reports import report_of, too_big_for_any_instance
from .snapshots import (
    empty_mig,
    fleet_attributions,
    healthy,
    incident,
    lost,
    partitioned_gpu,
    pending_enable,
    shared_gpu,
    snapshot,
)

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "diagnose.schema.json").read_text())
LONG_COMMAND = "python -m vllm.entrypoints.openai.api_server --model /models/llama-3-70b-instruct " * 2


def every_kind_of_report():
    """Reports that between them reach every branch of the schema and the renderer."""
    host_process = Attribution(
        pid=1, source="host", user="a-very-long-user-name", cmdline=tuple(LONG_COMMAND.split()),
        started_at=1_699_999_000.0,
        container=Container("containerd", "ab" * 32, "5c1e9a3b-7d2f-4e8a-9b6c-0f1e2d3c4b5a"),
        environment_read=True, cuda_visible_devices="0,1",
    )
    too_big = snapshot(*too_big_for_any_instance().gpus, lost(2))
    attributions = {**fleet_attributions(too_big, LONG_COMMAND), 1: host_process}
    errors = (
        CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 0),
        CollectionError("nvmlInit", "x"),
    )
    yield "incident", report_of(incident(), fleet="seed")
    yield "healthy", report_of(healthy(), fleet=None)
    empty_and_persistence_off = snapshot(empty_mig(0), partitioned_gpu(1, persistence=False))
    yield "empty and persistence", report_of(empty_and_persistence_off, fleet=None)
    yield "pending", report_of(pending_enable(), fleet=None, headroom=0.5)
    yield "whole GPU, lost, errors", build_report(replace(too_big, errors=errors), attributions, 0.2)
    unreadable = {pid: Attribution(pid, "none", notes=("process not found on this host",)) for pid in (1, 2)}
    no_memory = snapshot(replace(shared_gpu(0, {1: 100, 2: 100}), name=None))
    yield "unknowns", build_report(no_memory, unreadable, DEFAULT_HEADROOM_RATIO)


REPORTS = dict(every_kind_of_report())


@pytest.mark.parametrize("name", REPORTS)
def test_text_fits_80_columns_without_colour_codes(name):
    """Without colour, every report renders as ASCII lines of at most 80 columns, no escape codes."""
    text = render_text(REPORTS[name], color=False)
    assert "\x1b[" not in text
    for line in text.splitlines():
        assert len(line) <= 80, line
    assert text.isascii()


@pytest.mark.parametrize("name", REPORTS)
def test_json_matches_the_schema(name):
    """Every report's JSON validates against docs/diagnose.schema.json and carries its exit status."""
    document = json.loads(render_json(REPORTS[name]))
    jsonschema.validate(document, SCHEMA)
    assert document["exit_status"] == REPORTS[name].exit_status


def test_colour_marks_severities_and_headings():
    """With colour, CRITICAL is bold red, WARNING bold yellow and headings bold."""
    text = render_text(REPORTS["incident"], color=True)
    assert "\x1b[1;31mCRITICAL" in text and "\x1b[1;33mWARNING " in text
    assert "\x1b[1mGPUs\x1b[0m" in text


def test_wrapped_commands_paste_back_as_the_same_command():
    """A command too long for a line is wrapped with backslashes and pastes back as the same words."""
    text = render_text(REPORTS["whole GPU, lost, errors"])
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("CUDA_VISIBLE_DEVICES=GPU-"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith(" \\"))
    pasted = " ".join(line.removesuffix(" \\").strip() for line in lines[start:end + 1])
    assert end > start  # it did need wrapping
    assert shlex.split(pasted) == ["CUDA_VISIBLE_DEVICES=GPU-test-0", *LONG_COMMAND.split()]


def test_host_attribution_is_printed():
    """The text shows the container and pod, CUDA_VISIBLE_DEVICES, a lost GPU, the calls that
    failed and a whole-GPU placement."""
    text = render_text(REPORTS["whole GPU, lost, errors"])
    assert "containerd abababababab\n  in Kubernetes pod 5c1e9a3b-7d2f-4e8a-9b6c-0f1e2d3c4b5a" in text
    assert "CUDA_VISIBLE_DEVICES=0,1: this process sees 2 GPUs" in text
    assert "GPU 2  unknown model  GPU-test-2\n  lost: NVML answers GPU_IS_LOST" in text
    assert "Could not read\n  nvmlDeviceGetPowerUsage on GPU 0: Unknown Error\n  nvmlInit: x" in text
    assert "-> GPU 0, whole" in text


def test_use_color():
    """--color auto colours a terminal unless NO_COLOR is set and not empty; always and never win."""
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal, open(os.devnull, "w") as not_a_terminal:
        assert use_color("auto", terminal, {}) is True
        assert use_color("auto", terminal, {"NO_COLOR": "1"}) is False
        assert use_color("auto", terminal, {"NO_COLOR": ""}) is True  # no-color.org: empty means unset
        assert use_color("auto", not_a_terminal, {}) is False
        assert use_color("always", not_a_terminal, {"NO_COLOR": "1"}) is True
        assert use_color("never", terminal, {}) is False
    os.close(primary)


@pytest.mark.parametrize(("text", "ratio"), [("20%", 0.2), ("20", 0.2), ("0%", 0.0), ("12.5 %", 0.125)])
def test_parse_headroom(text, ratio):
    """--headroom takes a percentage, with or without the % sign."""
    assert parse_headroom(text) == ratio


@pytest.mark.parametrize("text", ["0.2x", "-1", "401%", "twenty", "", "\u0665%"])
def test_parse_headroom_refuses(text):
    """--headroom refuses what is not a percentage from 0 to 400, naming the flag."""
    with pytest.raises(InputError, match="--headroom"):
        parse_headroom(text)


def test_characters_the_terminal_cannot_show_are_escaped_not_fatal():
    """A host's command line may hold characters an ASCII locale cannot print."""
    escaped = encodable("user j\u00f6rg: python \u6a21\u578b.py", "ascii")
    assert escaped == "user j\\xf6rg: python \\u6a21\\u578b.py"
    assert encodable("j\u00f6rg", "utf-8") == "j\u00f6rg"
    assert encodable("j\u00f6rg", None) == "j\u00f6rg"
