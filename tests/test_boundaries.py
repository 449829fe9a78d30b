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


def product_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "sim"]


def test_nothing_outside_the_simulator_imports_its_model_tables() -> None:
    # issue 8: the product learns every GPU's MIG profiles from NVML (the Snapshot's capability).
    assert importers_of("mig_exporter.sim.models", product_files()) == []
    assert importers_of("mig_exporter.profiles", product_files()) == []
    assert not (PACKAGE / "profiles.py").exists()


def model_names_in(source: str) -> list[str]:
    """String literals of ``source`` (docstrings aside) that hold a built-in model's key or NVML name."""
    from mig_exporter.sim.models import MODELS

    names = {name for model in MODELS.values() for name in (model.key, model.nvml_name)}
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and any(name in node.value for name in names)]


def test_no_product_string_names_a_gpu_model() -> None:
    """No code outside sim/ compares with, or looks up, a model's key or NVML name: a GPU no table
    knows must work the same. Docstrings and comments may name models; string literals may not."""
    found = {str(path.relative_to(PACKAGE)): names for path in product_files()
             if (names := model_names_in(path.read_text(encoding="utf-8")))}
    assert found == {}


def test_the_model_name_check_sees_a_lookup_and_spares_a_docstring() -> None:
    lookup = ('def f(gpu):\n    """For an NVIDIA A100-SXM4-80GB."""\n'
              '    return gpu.name == "NVIDIA A100-SXM4-80GB"\n')
    assert model_names_in(lookup) == ["NVIDIA A100-SXM4-80GB"]
