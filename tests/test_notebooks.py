"""Every lecture and every nbgrader source notebook executes top to bottom in smoke mode.

The notebook runs in a temporary folder holding a copy of its siblings (no file is written
next to the committed notebook); DGMCOURSE_SMOKE=1 shrinks epochs and sample counts.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("lectures/*.ipynb")) + sorted(ROOT.glob("solutions/*/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("DGMCOURSE_SMOKE", "1")
    workdir = tmp_path / "run"
    shutil.copytree(path.parent, workdir, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS + sorted(ROOT.glob("assignments/*/*.ipynb")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
