"""Helpers shared by the grading, classroom, formgrader and JupyterLab tests (no tests here).

Every helper works in a temporary course directory copied from the repository: the repo's
solutions/, assignments/ and gradebook are never written.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DGMCOURSE_SMOKE": "1", "OMP_NUM_THREADS": "1",
       "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
SOLUTION = re.compile(r"[ \t]*### BEGIN SOLUTION\n(.*?)[ \t]*### END SOLUTION\n?", re.S)
REAL = "a1_vae"


def nbgrader(args, cwd, check=True):
    """Run the nbgrader command line in ``cwd`` (smoke mode, venv on PATH)."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=ENV,
                            capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"nbgrader {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def nbgrader_meta(grade_id, grade=False, solution=False, locked=False, points=None):
    """Cell metadata of an nbgrader source notebook (schema 3)."""
    meta = {"grade": grade, "solution": solution, "locked": locked, "task": False,
            "grade_id": grade_id, "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def tiny_source() -> nbformat.NotebookNode:
    """A cheap nbgrader source notebook: set-up, two solution cells, two tests, one answer."""
    new_code, new_md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    cells = [
        new_code("import numpy as np\nfrom dgmcourse.device import smoke_mode\nSMOKE = smoke_mode()",
                 metadata=nbgrader_meta("setup", locked=True)),
        new_code("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n",
                 metadata=nbgrader_meta("add", solution=True)),
        new_code("def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n    ### END SOLUTION\n",
                 metadata=nbgrader_meta("mul", solution=True)),
        new_code("assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\n"
                 "assert np.allclose(add(np.ones(2), np.ones(2)), 2 * np.ones(2))\n"
                 "### END HIDDEN TESTS", metadata=nbgrader_meta("test_add", grade=True, locked=True,
                                                       points=1)),
        new_code("assert mul(2, 3) == 6\nassert np.allclose(mul(np.arange(3), 2), [0, 2, 4])",
                 metadata=nbgrader_meta("test_mul", grade=True, locked=True, points=2)),
        new_md("Addition is commutative because ...", metadata=nbgrader_meta("why", grade=True,
                                                                    solution=True, points=1)),
    ]
    return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})


def make_course(tmp: Path, assignments=(REAL,), config: str = "", sources: dict | None = None) -> Path:
    """Temporary course: the repo's nbgrader_config.py (``config`` appended) and the assignments'
    sources, released.

    ``"tiny"`` is written from :func:`tiny_source`, a name of ``sources`` from its notebook; other
    names are copied from solutions/.
    """
    course = tmp / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    if config:
        with open(course / "nbgrader_config.py", "a", encoding="utf-8") as fh:
            fh.write("\n" + config + "\n")
    sources = {"tiny": tiny_source(), **(sources or {})}
    for name in assignments:
        folder = course / "solutions" / name
        if name in sources:
            folder.mkdir(parents=True)
            nbformat.write(sources[name], folder / f"{name}.ipynb")
        else:
            shutil.copytree(ROOT / "solutions" / name, folder,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        nbgrader(["generate_assignment", name, "--force"], cwd=course)
    return course


def release(course: Path, assignment: str) -> nbformat.NotebookNode:
    """The student release of the assignment's (only) notebook."""
    return nbformat.read(course / "assignments" / assignment / f"{assignment}.ipynb", as_version=4)


def solved(course: Path, assignment: str, keep_unanswered=()) -> nbformat.NotebookNode:
    """The release with every solution cell answered from the source, except ``keep_unanswered``."""
    source = nbformat.read(course / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = release(course, assignment)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id not in keep_unanswered:
            cell.source = SOLUTION.sub(lambda m: m.group(1), answers[grade_id])
    return nb


def submit(course: Path, student: str, assignment: str, nb=None, name=None, text=None) -> Path:
    """Place a submission in submitted/<student>/<assignment>/ (a notebook or raw text)."""
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{assignment}.ipynb")
    if text is not None:
        path.write_text(text, encoding="utf-8")
    elif nb is not None:
        nbformat.write(nb, path)
    return folder


def cell_ids(nb, kind):
    """grade_ids of solution ("solution") or autograded test ("test") cells, in order."""
    out = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if kind == "solution" and meta.get("solution") and cell.cell_type == "code":
            out.append(meta["grade_id"])
        if kind == "test" and meta.get("grade") and not meta.get("solution"):
            out.append(meta["grade_id"])
    return out


def visible_text(html_page: str) -> str:
    """The text a reader sees in an HTML page: tags (syntax highlighting spans) removed, entities decoded."""
    import html
    return html.unescape(re.sub(r"<[^>]+>", "", html_page))


@contextlib.contextmanager
def jupyter_server(root: Path, env: dict, token: str, app: str = "lab"):
    """`jupyter lab` (or `jupyter server`) serving `root` on a free loopback port, like `make lab`;
    yields its base URL once /api/status answers, and stops the server afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
