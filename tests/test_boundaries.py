"""The seam of DESIGN.md, enforced: who may import pynvml, and nvml/ and sim/ apart.

Only ``nvml/`` (the real read and write sides) and ``sim/`` (the simulated library) touch pynvml,
and the two never import each other, so one place opens a host and the product cannot come to
lean on the simulator by accident.
"""

from __future__ import annotations

import ast
import socket
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


# What only diagnose, remediate or a kubelet lookup needs: grpc and protobuf (10 MiB of a 45 MiB
# goal, issue 12), jinja2 (remediate's artifacts), and grpc_tools, which grpc imports by itself
# whenever it is installed (a test dependency, for the kubelet stubs).
NOT_FOR_SERVE = ("grpc", "grpc_tools", "google.protobuf", "jinja2", "mig_exporter.kubelet.v1",
                 "mig_exporter.diagnose", "mig_exporter.remediate")

# Runs `mig-exporter serve` through cli.main in the main thread (its signal handlers need it); a
# thread scrapes until a collection has reached NVML, prints the modules loaded, and stops serve
# with SIGTERM. The scrape is a bare socket so that the probe loads nothing serve does not.
SERVE_PROBE = r"""
import os, signal, socket, sys, threading, time
from mig_exporter import cli

def scrape(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return b"".join(iter(lambda: connection.recv(65536), b""))

def watch(port):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if b"\nnvml_up 1.0\n" in scrape(port):
                print(sorted(sys.modules), flush=True)
                break
        except OSError:
            pass
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)

port = int(sys.argv[1])
threading.Thread(target=watch, args=(port,), daemon=True).start()
sys.exit(cli.main(["serve", "--fleet", "seed-incident", "--web.listen-address", f"127.0.0.1:{port}",
                   "--kubernetes.pod-resources-socket", sys.argv[2], "--log.level", "warn"]))
"""


def modules_of_serve(tmp_path: Path) -> list[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = subprocess.run([sys.executable, "-c", SERVE_PROBE, str(port), str(tmp_path / "kubelet.sock")],
                            capture_output=True, text=True, timeout=120, check=True)
    assert served.stdout.startswith("["), served.stderr
    loaded: list[str] = ast.literal_eval(served.stdout.splitlines()[0])
    return loaded


def test_serve_loads_nothing_only_diagnose_remediate_or_the_kubelet_need(tmp_path: Path) -> None:
    loaded = modules_of_serve(tmp_path)
    assert "mig_exporter.exporter.server" in loaded and "mig_exporter.kubelet.podresources" in loaded
    assert sorted(m for m in loaded if any(imports(p, {m}) for p in NOT_FOR_SERVE)) == []


def test_the_cli_imports_only_the_chosen_subcommand() -> None:
    probe = ("import sys, mig_exporter.cli as cli; cli.build_parser(sys.argv[1:]); "
             "print(sorted({m for m in sys.modules if m.startswith(('mig_exporter.diagnose', "
             "'mig_exporter.remediate', 'mig_exporter.exporter.command', 'jinja2'))}))")
    loaded = {command: subprocess.run([sys.executable, "-c", probe, command], capture_output=True,
                                      text=True, check=True).stdout.strip()
              for command in ("serve", "remediate")}
    assert loaded["serve"] == "['mig_exporter.exporter.command']"
    assert "'jinja2'" in loaded["remediate"] and "mig_exporter.exporter.command" not in loaded["remediate"]
