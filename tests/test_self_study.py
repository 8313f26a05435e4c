"""Every lecture carries the self-study layer (issue: the course as a self-study path).

* right after the title: "## Before you start" with learning objectives, prerequisites and the run time
  measured in full mode (tests/test_run_times.py checks it against benchmarks/reports/notebooks.json);
* a "Predict, then run" section with 2-4 exercises, each answered by a self-check (an assert in the code
  cell that follows it, or a revealable <details> answer);
* "## Takeaways" at the end;
* the Colab install cell, whose address is the repository's (pyproject.toml).
"""

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted(ROOT.glob("lectures/*.ipynb"))
RUN_TIME = re.compile(r"\*\*Run time\.\*\*\s+About (\d+(?:\.\d+)?) (s|min)\b", re.IGNORECASE)


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_before_you_start_states_objectives_prerequisites_and_measured_run_time(path):
    cells = nbformat.read(path, as_version=4).cells
    first = cells[1].source
    assert cells[1].cell_type == "markdown" and first.startswith("## Before you start"), \
        "the cell after the title must be '## Before you start'"
    for part in ("**Learning objectives.**", "**Prerequisites.**", "**Run time.**"):
        assert part in first, f"'## Before you start' lacks {part}"
    match = RUN_TIME.search(first)
    assert match, "run time must read '**Run time.** About N s' or '... About N min'"
    # its value against benchmarks/reports/notebooks.json: tests/test_run_times.py


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_predict_then_run_exercises_have_self_checks(path):
    cells = nbformat.read(path, as_version=4).cells
    assert any(c.cell_type == "markdown" and re.search(r"^##+ .*Predict, then run", c.source, re.M | re.I)
               for c in cells), "no 'Predict, then run' section"
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "**Exercise " in c.source]
    assert 2 <= len(exercises) <= 4, f"{len(exercises)} exercises, expected 2 to 4"
    for i in exercises:
        follows = cells[i + 1] if i + 1 < len(cells) else None
        checked = "<details>" in cells[i].source or (
            follows is not None and follows.cell_type == "code" and re.search(r"^\s*assert\b", follows.source, re.M))
        assert checked, f"exercise in cell {i} has no self-check (an assert in the next code cell or <details>)"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_takeaways_close_the_lecture(path):
    cells = nbformat.read(path, as_version=4).cells
    headings = [line for c in cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert headings and re.match(r"## (\d+\. )?Takeaways", headings[-1]), \
        f"last section is {headings[-1:]}, not Takeaways"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_colab_cell_installs_from_the_repository(path):
    repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    cells = nbformat.read(path, as_version=4).cells
    (install,) = [c for c in cells if c.cell_type == "code" and 'find_spec("dgmcourse") is None' in c.source]
    assert f"git+{repository}" in install.source
    assert cells.index(install) < min(i for i, c in enumerate(cells) if c.cell_type == "code" and c is not install)
