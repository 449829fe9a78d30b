"""The contract between the project, the installed nvidia-ml-py and the simulator.

DESIGN.md: "every NVML symbol the project calls exists in the installed pynvml, and every one the
simulator implements has the C signature pynvml passes". Read from the source as it is when the
test runs, so code added anywhere under ``mig_exporter/`` is covered without editing this test:

(a) every ``pynvml.<name>`` the project's code uses exists in the installed pynvml;
(b) every C symbol those pynvml functions reach (``_nvmlGetFunctionPointer("…")``, following the
    pynvml functions they call) is implemented by the simulator;
(c) each of those simulator functions takes as many arguments as the pynvml wrapper passes it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from mig_exporter.sim import SimulatedNvml

PACKAGE = Path(__file__).resolve().parent.parent / "mig_exporter"


def project_references() -> dict[str, list[str]]:
    """Every pynvml attribute the package uses → where (``file:line``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = f"{path.relative_to(PACKAGE.parent)}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "pynvml"
            ):
                found.setdefault(node.attr, []).append(f"{where}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "pynvml":
                for alias in node.names:
                    found.setdefault(alias.name, []).append(f"{where}:{node.lineno}")
    return found


def wrapper_tree(function_name: str) -> ast.Module:
    """The source of a pynvml function, parsed (decorators unwrapped by ``inspect``)."""
    return ast.parse(inspect.cleandoc("\n" + inspect.getsource(getattr(pynvml, function_name))))


def pynvml_functions_reached(name: str, seen: set[str] | None = None) -> Iterator[str]:
    """``name`` and every pynvml ``nvml*`` function it calls, transitively (``nvmlInit`` calls
    ``nvmlInitWithFlags``; the unversioned process list calls ``_v3``)."""
    seen = set() if seen is None else seen
    if name in seen or not inspect.isfunction(getattr(pynvml, name, None)):
        return
    seen.add(name)
    yield name
    for node in ast.walk(wrapper_tree(name)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("nvml"):
            yield from pynvml_functions_reached(node.func.id, seen)


def c_calls(function_name: str) -> list[tuple[str, int]]:
    """(C symbol, number of arguments) for each call a pynvml wrapper makes through a function
    pointer: ``fn = _nvmlGetFunctionPointer("X")`` then ``fn(a, b, c)``."""
    tree = wrapper_tree(function_name)
    symbols_by_variable: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "_nvmlGetFunctionPointer"
            and isinstance(node.value.args[0], ast.Constant)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    symbols_by_variable.setdefault(target.id, set()).add(node.value.args[0].value)
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in symbols_by_variable
        ):
            calls.extend((symbol, len(node.args)) for symbol in symbols_by_variable[node.func.id])
    return calls


def reached_c_calls() -> dict[str, set[tuple[str, int]]]:
    """C symbol → {(pynvml wrapper, arguments passed)} over everything the project calls."""
    reached: dict[str, set[tuple[str, int]]] = {}
    for name in project_references():
        for function in pynvml_functions_reached(name):
            for symbol, arguments in c_calls(function):
                reached.setdefault(symbol, set()).add((function, arguments))
    return reached


@pytest.fixture(scope="module")
def simulator() -> SimulatedNvml:
    return SimulatedNvml.open("seed-incident")


def test_the_scan_sees_the_project_calling_nvml() -> None:
    """Guard for the scan itself: the simulator and the reader call NVML, so it must find calls
    (an empty scan would make the tests below pass vacuously)."""
    references = project_references()
    assert "NVML_ERROR_NOT_SUPPORTED" in references
    assert len(reached_c_calls()) >= 5


def test_every_pynvml_name_the_project_uses_exists() -> None:
    """(a) every `pynvml.<name>` referenced under mig_exporter/ exists in the installed pynvml."""
    missing = {name: where for name, where in project_references().items() if not hasattr(pynvml, name)}
    assert missing == {}


def test_the_simulator_implements_every_c_symbol_the_project_reaches(simulator: SimulatedNvml) -> None:
    """(b) every C symbol the project's pynvml calls reach is implemented by the simulator."""
    implemented = set(simulator.c_function_names())
    missing = {symbol: sorted(by) for symbol, by in reached_c_calls().items() if symbol not in implemented}
    assert missing == {}


def test_each_simulated_function_takes_the_arguments_pynvml_passes(simulator: SimulatedNvml) -> None:
    """(c) the simulator's function for each reached C symbol has as many parameters as the pynvml
    wrapper passes to ``fn(...)``; checked over every symbol the simulator implements that any
    pynvml function calls, not only those the project reaches today."""
    every_call: dict[str, set[tuple[str, int]]] = {}
    for name, member in vars(pynvml).items():
        if name.startswith("nvml") and inspect.isfunction(member):
            for symbol, arguments in c_calls(name):
                every_call.setdefault(symbol, set()).add((name, arguments))
    implemented = set(simulator.c_function_names())
    assert implemented <= set(every_call), sorted(implemented - set(every_call))
    mismatched = {}
    for symbol in sorted(implemented):
        parameters = len(inspect.signature(getattr(simulator, symbol)).parameters)
        wrong = sorted((wrapper, count) for wrapper, count in every_call[symbol] if count != parameters)
        if wrong:
            mismatched[symbol] = (parameters, wrong)
    assert mismatched == {}
