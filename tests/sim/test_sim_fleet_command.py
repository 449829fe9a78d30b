"""``mig-exporter fleet list | show NAME`` through the real entry point."""

from __future__ import annotations

import pytest

from mig_exporter.cli import main
from mig_exporter.sim import builtin_names, load_fleet, parse_fleet


def test_list_names_every_built_in_fleet_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN.md: "`mig-exporter fleet list | show NAME`: the built-in fleets"; one line each."""
    assert main(["fleet", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(builtin_names())
    seed = next(line for line in lines if line.startswith("seed-incident "))
    assert seed.split(None, 1)[1] == load_fleet("seed-incident").description


@pytest.mark.parametrize("name", builtin_names())
def test_show_prints_yaml_ready_to_save_and_use(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN.md: "`show` prints the fleet's YAML, ready to save and edit": read back, it is the
    same fleet, comments and all."""
    assert main(["fleet", "show", name]) == 0
    text = capsys.readouterr().out
    assert parse_fleet(text, f"{name}.yaml") == load_fleet(name)
    assert text.startswith("#")


def test_show_of_an_unknown_fleet_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN.md exit codes: an error is exit 2, with one line naming the input and the choices."""
    assert main(["fleet", "show", "seed"]) == 2
    assert capsys.readouterr().err == (
        "mig-exporter fleet: error: seed: not a built-in fleet (built-in: h100-mixed, healthy-mig, large, "
        "large-1000, mig-pending, mig-pending-disable, mixed-models, seed-incident)\n"
    )
