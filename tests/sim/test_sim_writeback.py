"""Write-back over a fleet file a person keeps: only the changed GPUs' entries are replaced, every
other byte (comments, untouched GPUs, faults, top-level keys) stays, and where that is not possible
the whole file is written as canonical YAML, which still reads back to the state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pynvml
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig_exporter.cli import main
from mig_exporter.sim import builtin_text, dump_fleet, install, load_fleet, parse_fleet, uninstall
from sim.conftest import StartNvml

GPU_HEADER = "  - model: A100-SXM4-80GB\n"
SPARE_COMMENT = "  # GPUs 2 and 3 belong to the batch team: leave them alone\n"


def gpu_texts(text: str) -> list[str]:
    """The text of each entry of ``gpus:`` in a file written like the built-in fleets, up to the
    next entry (so comments between entries belong to the entry before them)."""
    body = text[text.index("gpus:\n") + len("gpus:\n") :]
    body = body[: body.index("faults:")] if "faults:" in body else body
    return [GPU_HEADER + part for part in body.split(GPU_HEADER)[1:]]


def commented_incident(without_processes_on: tuple[int, ...]) -> str:
    """``fleet show seed-incident`` with the processes of some GPUs stopped, commented by hand."""
    text = builtin_text("seed-incident")
    head, _ = text.split("gpus:\n")
    entries = gpu_texts(text)
    for index in without_processes_on:
        entries[index] = "".join(
            line
            for line in entries[index].splitlines(keepends=True)
            if not line.startswith(("    processes:", "      - {pid", "    memory_used_mib"))
        )
    entries[1] += SPARE_COMMENT
    entries[3] = entries[3].replace("utilization_gpu_percent: 0\n", "utilization_gpu_percent: 0   # idle\n")
    return head + "gpus:\n" + "".join(entries) + "# end of the lab host\n"


def remediate(directory: Path, fleet: Path, *arguments: str) -> int:
    journal, lock = str(directory / "journal.jsonl"), str(directory / "remediate.lock")
    return main(["remediate", "--fleet", str(fleet), "--journal", journal, "--lock", lock, *arguments])


def test_apply_on_a_commented_incident_changes_only_the_gpus_it_partitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 4: apply changes the fleet file "and nothing else": the comments and the text of GPUs 2
    and 3 stay byte for byte (``utilization_gpu_percent: 0`` and ``env: {}`` included), and the
    entries of GPUs 0 and 1 carry their new instances."""
    before = commented_incident(without_processes_on=(0, 1))
    path = tmp_path / "fleet.yaml"
    path.write_text(before)
    assert remediate(tmp_path, path, "--gpu", "0,1", "--layout", "3g,3g", "--apply") == 0
    capsys.readouterr()
    after = path.read_text()

    head = before[: before.index("gpus:\n")]
    assert after.startswith(head) and head.count("#") == 4
    assert after.endswith("# end of the lab host\n")
    assert gpu_texts(after)[2:] == gpu_texts(before)[2:]
    assert "utilization_gpu_percent: 0   # idle\n" in after and after.count("env: {}}") == 4
    assert after.count(SPARE_COMMENT) == 1
    state = load_fleet(str(path))
    for index, entry in enumerate(gpu_texts(after)[:2]):
        # The MIG devices' UUIDs, made at creation, and the creation count that made them.
        uuids = [gi.compute_instances[0].uuid for gi in state.gpus[index].instances]
        assert "persistence: true\n    mig: enabled\n    mig_devices_created: 2\n" in entry
        assert entry.endswith(
            "    instances:\n"
            f"      - {{profile: 3g.40gb, placement: 0, uuid: {uuids[0]}}}\n"
            f"      - {{profile: 3g.40gb, placement: 4, uuid: {uuids[1]}}}\n"
            + (SPARE_COMMENT if index == 1 else "")
        )
    assert [len(g.instances) for g in state.gpus] == [2, 2, 0, 0]
    assert state.gpus[2:] == load_fleet("seed-incident").gpus[2:]


def test_a_change_to_every_gpu_keeps_the_comments_and_reads_back(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """Every entry replaced (persistence on everywhere; the processes of pid 78914 and their
    attributions re-dumped) still reads back to the state; comments between entries stay."""
    path = fleet_file(commented_incident(without_processes_on=()))
    simulator = start_nvml(str(path))
    for index in range(4):
        device = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceSetPersistenceMode(device, pynvml.NVML_FEATURE_ENABLED)
    assert load_fleet(str(path)) == simulator.fleet
    text = path.read_text()
    assert [("persistence: true" in entry) for entry in gpu_texts(text)] == [True] * 4
    assert text.startswith("# The incident this project exists for") and SPARE_COMMENT in text
    simulator.fleet = simulator.fleet.without_process(78914)
    assert load_fleet(str(path)) == simulator.fleet
    assert "pid: 78914" not in path.read_text() and SPARE_COMMENT in path.read_text()


def test_an_attribution_only_the_replaced_entry_gave_is_written_again(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """A pid's user, cmdline and env may be given on any of its entries: re-dumping GPU 0 keeps
    those only GPU 0 gave, and does not repeat those a kept GPU gives."""
    path = fleet_file(
        "# two GPUs\ngpus:\n"
        "  - model: A100-SXM4-80GB\n"
        "    processes:\n"
        "      - {pid: 7, name: python, used_memory_mib: 10, user: ann}\n"
        "      - {pid: 8, name: python, used_memory_mib: 10}\n"
        "  - model: A100-SXM4-80GB\n"
        "    processes:\n"
        "      - {pid: 8, name: python, used_memory_mib: 10, env: {CUDA_VISIBLE_DEVICES: '1'}}\n"
    )
    kept = path.read_text().split("  - model")[2]
    simulator = start_nvml(str(path))
    pynvml.nvmlDeviceSetPersistenceMode(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_FEATURE_ENABLED)
    text = path.read_text()
    assert text.startswith("# two GPUs\n") and text.endswith(kept)
    assert "user: ann" in text and text.count("CUDA_VISIBLE_DEVICES") == 1
    assert load_fleet(str(path)) == simulator.fleet


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "# flow style\ngpus: [{model: A100-SXM4-80GB, mig: enabled}, {model: A30}]\n",
            "gpus is not a block list",
        ),
        (
            "# an anchor a kept GPU uses\ngpus:\n"
            "  - model: A100-SXM4-80GB\n    mig: enabled\n    held_by: &clients [dcgm]\n"
            "  - model: A100-SXM4-80GB\n    held_by: *clients\n",
            "the spliced text is not a valid fleet",
        ),
    ],
)
def test_where_a_splice_is_not_possible_the_canonical_dump_is_written(
    start_nvml: StartNvml,
    fleet_file: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
    text: str,
    reason: str,
) -> None:
    """``gpus`` in flow style, or a splice that would not read back (an
    anchor defined in the replaced entry): the whole file as canonical YAML, which reads back."""
    path = fleet_file(text)
    simulator = start_nvml(str(path))
    with caplog.at_level(logging.DEBUG, logger="mig_exporter.sim.writeback"):
        pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(0), 9)
    assert path.read_text() == dump_fleet(simulator.fleet)
    assert load_fleet(str(path)) == simulator.fleet
    assert f"writing the whole fleet file as canonical YAML: {reason}" in caplog.text


def test_a_file_with_windows_line_ends_keeps_them(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    path = fleet_file("")
    path.write_bytes(
        b"# lab\r\ngpus:\r\n  - model: A100-SXM4-80GB\r\n    mig: enabled\r\n  - model: A30  # spare\r\n"
    )
    simulator = start_nvml(str(path))
    pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(0), 9)
    data = path.read_bytes()
    assert data.startswith(b"# lab\r\ngpus:\r\n") and data.endswith(b"\r\n  - model: A30  # spare\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert load_fleet(str(path)) == simulator.fleet


def test_a_change_outside_gpus_writes_the_canonical_dump(
    start_nvml: StartNvml, fleet_file: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    path = fleet_file("# lab\ngpus:\n  - model: A30\n")
    simulator = start_nvml(str(path))
    with caplog.at_level(logging.DEBUG, logger="mig_exporter.sim.writeback"):
        simulator.fleet = replace(simulator.fleet, driver_version="580.65.06")
    assert path.read_text() == dump_fleet(simulator.fleet)
    assert "canonical YAML: something outside gpus changed" in caplog.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["persistence", "stop 78914", "stop 81007", "mig", "reset", "create", "destroy"]),
        ),
        max_size=10,
    )
)
def test_any_mutations_on_a_commented_file_read_back_and_keep_its_comments(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, str]]
) -> None:
    """Whatever changed on whichever GPUs, the file reads back to the state, the comments outside
    the changed entries stay, and the entries of GPUs never changed stay byte for byte."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    original = commented_incident(without_processes_on=())
    path.write_text(original)
    simulator = install(str(path))
    pynvml.nvmlInit()
    try:
        for index, step in steps:
            device = pynvml.nvmlDeviceGetHandleByIndex(index)
            try:
                if step == "persistence":
                    on = not simulator.fleet.gpus[index].persistence
                    pynvml.nvmlDeviceSetPersistenceMode(device, int(on))
                elif step.startswith("stop"):
                    simulator.fleet = simulator.fleet.without_process(int(step.split()[1]))
                elif step == "mig":
                    pynvml.nvmlDeviceSetMigMode(device, int(not simulator.fleet.gpus[index].mig.pending))
                elif step == "reset":
                    simulator.reset_gpu(index)
                elif step == "create":
                    pynvml.nvmlDeviceCreateGpuInstance(device, 9)
                elif simulator.fleet.gpus[index].instances:
                    gpu = simulator.fleet.gpus[index]
                    simulator.fleet = simulator.fleet.with_gpu(index, gpu.with_instances(gpu.instances[1:]))
            except pynvml.NVMLError:
                continue
        text = path.read_text()
        assert load_fleet(str(path)) == simulator.fleet
        assert text.startswith(original[: original.index("gpus:")])
        assert text.endswith("# end of the lab host\n")
        as_loaded = parse_fleet(original, "original")
        for index, (entry, before) in enumerate(zip(gpu_texts(text), gpu_texts(original), strict=True)):
            if simulator.fleet.gpus[index] == as_loaded.gpus[index]:
                assert entry == before
    finally:
        pynvml.nvmlShutdown()
        uninstall()
