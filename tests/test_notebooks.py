"""Every lecture executes top to bottom in smoke mode, and every notebook is committed without outputs.

The lectures are executed once per test run, by the smoke-mode site build (conftest.py's ``smoke_site``,
as ``make site SMOKE=1``): these tests read the executions from its jupyter-cache, keyed by each lecture's
code and the library code the lectures reach (dgmcourse.assessment.lecture_cache), and check that the
lecture as committed was executed there without an error. The solution notebooks are executed by the
assessment tier (dgmcourse.assessment.check_evidence: each reference run must raise in no cell).
"""

from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

from dgmcourse.assessment import lecture_cache

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted(ROOT.glob("lectures/*.ipynb"))
SOURCES = sorted(ROOT.glob("solutions/*/*.ipynb"))


@pytest.mark.notebooks
@pytest.mark.xdist_group("site")
@pytest.mark.parametrize("path", LECTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lecture_executes(path, smoke_site):
    cache = get_cache(lecture_cache(smoke=True, root=ROOT))
    try:
        record = cache.match_cache_file(path)
    except KeyError:
        pytest.fail(f"the smoke site build left no execution of {path.name} as committed")
    notebook = cache.get_cache_bundle(record.pk).nb
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip())


@pytest.mark.parametrize("path", LECTURES + SOURCES + sorted(ROOT.glob("assignments/*/*.ipynb")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
