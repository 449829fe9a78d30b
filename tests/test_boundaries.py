"""The seam of DESIGN.md, enforced: who may import pynvml, and nvml/ and sim/ apart.

Only ``nvml/`` (the real read and write sides) and ``sim/`` (the simulated library) touch pynvml,
and the two never import each other, so one place opens a host and the product cannot come to
lean on the simulator by accident.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mig_exporter"


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).parts[:-1])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module the source imports, absolute, relative imports resolved against its package."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def importers_of(prefix: str, files: list[Path]) -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in files
        if imports(prefix, imported_modules(path.read_text(encoding="utf-8"), package_of(path)))
    )


def imports(prefix: str, modules: set[str]) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


def files_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_only_nvml_and_sim_import_pynvml() -> None:
    outside = [p for p in PACKAGE.rglob("*.py")
               if p.relative_to(PACKAGE).parts[0] not in {"nvml", "sim"}]
    assert importers_of("pynvml", outside) == []


def test_nvml_does_not_import_the_simulator() -> None:
    assert importers_of("mig_exporter.sim", files_under("nvml")) == []


def test_the_simulator_does_not_import_the_real_nvml_side() -> None:
    assert importers_of("mig_exporter.nvml", files_under("sim")) == []


def test_the_checker_sees_relative_and_aliased_imports() -> None:
    # The rule must fail where it should: a relative import from nvml/ into sim/ is a leak too.
    modules = imported_modules("from ..sim import fleet\nimport pynvml as nv\n", "mig_exporter.nvml")
    assert imports("mig_exporter.sim", modules)
    assert imports("pynvml", modules)
    assert not imports("mig_exporter.nvml", imported_modules("from . import state\n", "mig_exporter.sim"))


def test_the_cli_loads_no_simulator_until_a_fleet_is_used() -> None:
    # issue 8: a real host never imports the simulator, its model tables or its fleet files.
    probe = ("import sys, mig_exporter.cli as cli; cli.build_parser(); "
             "print(sorted(m for m in sys.modules if m.startswith('mig_exporter.sim')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
