"""The example notebooks: committed without outputs, and each one runs headless from top to
bottom in a fresh kernel (marked slow: about two minutes for the five; CI runs them with
``pytest -m slow tests/test_notebooks.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = (
    "01_transfer_functions.ipynb",
    "02_stability_proofs.ipynb",
    "03_design_and_export.ipynb",
    "04_scaling_rule.ipynb",
    "05_dynamics.ipynb",
    "06_edge_of_stability.ipynb",
)
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def test_the_five_notebooks_exist():
    assert set(EXPECTED) <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless(name, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                  for o in c.outputs)
    assert figures >= 1, f"{name} drew no figure"
