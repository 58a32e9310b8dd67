"""The package's layout rules, checked on its source: one concept a module (none past 500
lines), and the layers' arrows pointing one way (the IR and the analyses import no consumer,
no torch and no matplotlib; the compiler imports no torch)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import ctopt

PACKAGE = pathlib.Path(ctopt.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def _imports(path: pathlib.Path, package: tuple | None = None) -> set[str]:
    """Modules imported anywhere in ``path`` (relative imports resolved inside ``package``,
    by default the one ``path`` lies in)."""
    if package is None:
        package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def test_the_package_is_found():
    assert len(MODULES) > 60 and PACKAGE / "ops.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_past_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concept"


def _layer(*parts) -> list[pathlib.Path]:
    return [p for p in MODULES if p.relative_to(PACKAGE).parts[:len(parts)] == parts]


@pytest.mark.parametrize("path", [PACKAGE / "ops.py", PACKAGE / "design.py",
                                  PACKAGE / "filters.py", *_layer("analysis")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_ir_and_the_analyses_import_no_consumer(path):
    bad = {m for m in _imports(path)
           if m.split(".")[0] in ("torch", "matplotlib")
           or m.startswith(("ctopt.zoo", "ctopt.plot", "ctopt.export", "ctopt.report"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["codegen", "printers", "inplace", "source"])
def test_the_compiler_imports_no_torch(name):
    assert not any(m.split(".")[0] == "torch" for m in _imports(PACKAGE / "export" / f"{name}.py"))


def test_the_rules_can_fail(tmp_path):
    """The import reader sees a relative import of the zoo and a nested torch import."""
    module = tmp_path / "probe.py"
    module.write_text("from ..zoo import registry\n\ndef f():\n    import torch\n")
    found = _imports(module, ("ctopt", "analysis"))
    assert "ctopt.zoo.registry" in found and "torch" in found
