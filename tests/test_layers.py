"""Imports run one way: the layer picture of the README, checked from the source with ``ast``.

    software    cdm_qta.sw      compiler, runtime, back ends, CLI, benchmarks, traces
       |
    simulation  cdm_qta.tb      toolchain, targets, job sessions, cocotb drivers, lint
       |
    gateware    cdm_qta.hw.*    Amaranth components and Verilog generation
       |
    contracts   cdm_qta.hw.{config,isa,regs,timing,checks,files}, cdm_qta.golden

A module may import its own layer and the layers below it, never one above; no product
module imports a test (``tests/``, ``test_*``, ``conftest``, pytest); contracts and golden
models import no HDL or simulator; the gateware imports no simulator.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import cdm_qta.hw

#: Source folder -> package, as pyproject's package-dir maps them.
PACKAGES = {"hw": "cdm_qta.hw", "golden": "cdm_qta.golden", "tb": "cdm_qta.tb", "sw": "cdm_qta.sw"}
LAYERS = ("contracts", "gateware", "simulation", "software")
CONTRACTS = {f"cdm_qta.hw.{m}" for m in ("config", "isa", "regs", "timing", "checks", "files")}
#: Third-party packages a layer must not import, whatever its position.
FORBIDDEN = {
    "contracts": ("amaranth", "cocotb", "cocotb_tools", "cocotbext", "pytest"),
    "gateware": ("cocotb", "cocotb_tools", "cocotbext", "pytest"),
    "simulation": ("pytest",),
    "software": ("pytest",),
}
TEST_MODULE = re.compile(r"^(tests(\..*)?|.*\.?test_\w+|.*\.?conftest|regression)$")
MODULE_STRING = re.compile(r"^(cdm_qta(\.\w+)+)(:\w+)?$")


def layer_of(module: str) -> str | None:
    """The layer of a product module, ``None`` for anything outside ``cdm_qta``."""
    if module in CONTRACTS or module == "cdm_qta.golden" or module.startswith("cdm_qta.golden."):
        return "contracts"
    for prefix, layer in (("cdm_qta.hw", "gateware"), ("cdm_qta.tb", "simulation")):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    if module == "cdm_qta.sw" or module.startswith("cdm_qta.sw."):
        return "software"
    return None


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports (also inside functions), plus module paths it names in
    strings (``importlib`` targets such as ``"cdm_qta.tb.accel_jobs:AcceleratorJobs"``).
    ``from P import name`` counts ``P.name`` only if that is one of the ``known`` modules."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from cdm_qta import golden` imports a package
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        ):
            match = MODULE_STRING.match(node.value)
            if match:
                found.add(match[1])
    return found


def product_modules(root: Path) -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def violations(root: Path) -> list[str]:
    """Every import of the tree at ``root`` that breaks the layer rules, as readable lines."""
    modules = product_modules(root)
    problems = []
    for module, path in modules.items():
        layer = layer_of(module)
        assert layer is not None, module
        if TEST_MODULE.match(module.removeprefix("cdm_qta.").split(".", 1)[-1]):
            problems.append(f"{module}: a test module inside the product")
        for target in sorted(imports_of(path, module, set(modules))):
            top = target.split(".")[0]
            if TEST_MODULE.match(target) or target.startswith("tests."):
                problems.append(f"{module} imports the test module {target}")
            elif top in FORBIDDEN[layer]:
                problems.append(f"{module} ({layer}) imports {top}")
            elif (other := layer_of(target)) is not None and target != "cdm_qta":
                if LAYERS.index(other) > LAYERS.index(layer):
                    problems.append(f"{module} ({layer}) imports {target} ({other}), a layer above")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles among product modules (module-level, function-level and string imports alike):
    one module per cycle is reported with the loop it closes."""
    modules = product_modules(root)
    graph = {
        m: sorted(t for t in imports_of(p, m, set(modules)) if t in modules and t != m)
        for m, p in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


ROOT = Path(cdm_qta.hw.__file__).resolve().parent.parent


def test_the_tree_keeps_its_layers() -> None:
    assert violations(ROOT) == []


def test_no_import_cycles() -> None:
    """A cycle (even through a lazy import) means two modules are one: name the shared part."""
    assert import_cycles(ROOT) == []


def test_every_product_module_has_a_layer() -> None:
    mods = product_modules(ROOT)
    assert {layer_of(m) for m in mods} == set(LAYERS)
    assert "cdm_qta.hw.isa" in mods and layer_of("cdm_qta.hw.isa") == "contracts"
    assert layer_of("cdm_qta.hw.accelerator") == "gateware"


@pytest.mark.parametrize(
    ("folder", "source", "expect"),
    [
        ("tb", "from cdm_qta.sw.runtime import run_gemm\n", "a layer above"),
        ("hw", "def f():\n    from cdm_qta.tb import session\n", "a layer above"),
        ("hw", "import cocotb\n", "imports cocotb"),
        ("golden", "from amaranth.hdl import Module\n", "imports amaranth"),
        ("golden", "from cdm_qta.hw.pe import ProcessingElement\n", "a layer above"),
        ("sw", "import pytest\n", "imports pytest"),
        ("sw", "from test_array import WsOp\n", "the test module test_array"),
        ("tb", 'HANDLERS = {"x": "cdm_qta.sw.bench:Thing"}\n', "a layer above"),
        ("sw", "from ..tb.session import run_job\n", ""),
    ],
)
def test_the_checker_catches_each_kind_of_violation(
    tmp_path: Path, folder: str, source: str, expect: str
) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text('"""package"""\n')
    (tmp_path / folder / ("bad.py" if folder != "hw" else "gate.py")).write_text(source)
    found = violations(tmp_path)
    if expect:
        assert len(found) == 1 and expect in found[0], found
    else:
        assert found == []
