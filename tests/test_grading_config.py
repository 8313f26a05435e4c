"""One definition of the grading pipeline: ``nbgrader_config.py`` declares the pipeline and every
sandbox limit, and every route honours it -- ``dgmcourse grade`` (flags override a limit only
when given), plain ``nbgrader autograde`` and feedback; the sandbox imports the very
``dgmcourse`` the grader imported, wherever the course directory is."""

import json
import re
import resource
import shutil
import subprocess
import sys

import nbformat
import pytest

from dgmcourse import cli, grading
from dgmcourse.grading import pipeline, sandbox
from test_grading_support import ENV, ROOT, make_course, nbgrader, nbgrader_meta, solved, submit, \
    visible_text

pytestmark = pytest.mark.grading
SANDBOX = pytest.mark.skipif(not grading.bwrap_available(), reason="needs bubblewrap")

# Every limit, set in the course's nbgrader_config.py; each probe below exceeds one of them.
LIMITS = {"timeout": 12, "cell_timeout": 3, "memory_mb": 512, "fsize_mb": 1, "nofile": 32,
          "nproc_extra": 3000, "processes": 2, "output_chars": 100}
CONFIG = "\n".join(f"c.SandboxedExecute.{name} = {value}" for name, value in LIMITS.items())
PROBES = {
    "rlimits": "print('rlimits', *(resource.getrlimit(kind)[0] for kind in (resource.RLIMIT_DATA, "
               "resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC)))",
    "memory": "try:\n    np.empty(768 * 2**20, dtype=np.uint8)\n    print('memory: allowed')\n"
              "except MemoryError:\n    print('memory: refused')",
    "fsize": "try:\n    with open('big.bin', 'wb') as fh:\n        fh.write(bytes(2 * 2**20))\n"
             "    print('fsize: allowed')\nexcept OSError:\n    print('fsize: refused')",
    "nofile": "files = []\ntry:\n    for _ in range(64):\n        files.append(open(os.devnull))\n"
              "    print('nofile: allowed')\nexcept OSError:\n    print('nofile: refused')\n"
              "for fh in files:\n    fh.close()",
    "output": "print('x' * 500)",
    "cell": "time.sleep(60)",
    "processes": "children = []\ntry:\n    for _ in range(6):\n"
                 "        children.append(subprocess.Popen(['sleep', '60']))\nexcept OSError:\n    pass\ntime.sleep(9)",
}


def _limits_source() -> nbformat.NotebookNode:
    """An assignment of one solution cell per probe and one test cell."""
    new_code = nbformat.v4.new_code_cell
    cells = [new_code("import os, resource, subprocess, time\nimport numpy as np",
                      metadata=nbgrader_meta("setup", locked=True))]
    cells += [new_code("### BEGIN SOLUTION\npass\n### END SOLUTION", metadata=nbgrader_meta(name, solution=True))
              for name in PROBES]
    cells.append(new_code("assert True", metadata=nbgrader_meta("test", grade=True, locked=True, points=1)))
    return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})


def _submission(course, sources: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(course / "assignments" / "limits" / "limits.ipynb", as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in sources:
            cell.source = sources[grade_id]
    return nb


@pytest.fixture(scope="module")
def limits_template(tmp_path_factory):
    """A course whose nbgrader_config.py sets every limit, with two submissions: ``probe`` runs one
    cell per limit (the last starts processes), ``slow`` sleeps 2.5 s per cell, past the wall time."""
    course = make_course(tmp_path_factory.mktemp("limits"), ("limits",), config=CONFIG,
                         sources={"limits": _limits_source()})
    submit(course, "probe", "limits", _submission(course, PROBES))
    submit(course, "slow", "limits", _submission(course, {name: "time.sleep(2.5)" for name in PROBES}))
    return course


@pytest.fixture
def limits_course(limits_template, tmp_path):
    """A fresh copy of :func:`limits_template` (its nbgrader_config.py finds the gradebook next to it)."""
    return shutil.copytree(limits_template, tmp_path / "course")


def _outputs(course, student) -> dict:
    """{grade_id: text of its outputs} of the autograded notebook."""
    nb = nbformat.read(course / "autograded" / student / "limits" / "limits.ipynb", as_version=4)
    return {c.metadata.get("nbgrader", {}).get("grade_id"): "".join(
        o.get("text", "") + o.get("evalue", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code"}


def _check_probe(outputs: dict, output_chars: int) -> None:
    """Every limit of LIMITS held in the probe's run (``output_chars``: the one in force)."""
    data, fsize, nofile, nproc = map(int, outputs["rlimits"].split()[1:])
    assert (data, fsize, nofile) == (LIMITS["memory_mb"] * 2**20, LIMITS["fsize_mb"] * 2**20, LIMITS["nofile"])
    with open("/proc/loadavg", encoding="ascii") as fh:   # RLIMIT_NPROC: the tasks running + nproc_extra
        tasks = int(fh.read().split()[3].split("/")[1])
    assert abs(nproc - min(tasks + LIMITS["nproc_extra"], resource.getrlimit(resource.RLIMIT_NPROC)[1])) < 1000
    assert outputs["memory"] == "memory: refused\n"
    assert outputs["fsize"] == "fsize: refused\n"
    assert outputs["nofile"] == "nofile: refused\n"
    assert outputs["output"] == "x" * output_chars + "\n... [output truncated by the grader]\n"
    assert f"cell ran longer than {LIMITS['cell_timeout']} s" in outputs["cell"]


@SANDBOX
def test_dgmcourse_grade_enforces_the_course_limits(limits_course, capsys):
    """`dgmcourse grade` without limit flags grades with nbgrader_config.py's limits, not defaults;
    a flag given overrides its limit only."""
    assert cli.main(["grade", "limits", "--course-dir", str(limits_course), "--jobs", "2", "--no-progress",
                     "--output-chars", "150", "--verbose"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["probe"].split()[3] == "processes" and "killed: more than 2 processes" in rows["probe"]
    assert rows["slow"].split()[3] == "timeout" and "killed after the 12 s wall-time limit" in rows["slow"]
    _check_probe(_outputs(limits_course, "probe"), output_chars=150)


@SANDBOX
def test_plain_nbgrader_autograde_enforces_the_course_limits(limits_course):
    for student, warning in (("probe", "processes: killed: more than 2 processes"),
                             ("slow", "timeout: killed after the 12 s wall-time limit")):
        run = nbgrader(["autograde", "limits", "--student", student], cwd=limits_course)
        assert warning in run.stderr, run.stderr[-2000:]
    _check_probe(_outputs(limits_course, "probe"), output_chars=LIMITS["output_chars"])


def test_help_shows_each_limit_with_its_value_and_source(tmp_path, capsys):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.SandboxedExecute.memory_mb = 8192\n"
                                                 "c.SandboxedExecute.cell_timeout = 120\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grade", "--course-dir", str(tmp_path), "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for flag, shown in [("--memory-mb", "Now 8192, from nbgrader_config.py (c.SandboxedExecute.memory_mb)"),
                        ("--cell-timeout", "Now 120, from nbgrader_config.py (c.SandboxedExecute.cell_timeout)"),
                        ("--timeout", "Now 600, from default (c.SandboxedExecute.timeout)"),
                        ("--fsize-mb", "Now 64, from default"), ("--nofile", "Now 256, from default"),
                        ("--nproc-extra", "Now 256, from default"), ("--processes", "Now 64, from default"),
                        ("--output-chars", "Now 20000, from default"),
                        ("--unsafe, --no-unsafe", "Now False, from default (c.SandboxedExecute.unsafe)")]:
        assert re.search(re.escape(flag) + r" (INT |FLOAT )?[^.]*\. " + re.escape(shown), help_text), (flag, help_text)


def test_limits_resolve_from_config_then_flags(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text(f"c = get_config()\n{CONFIG}\nc.SandboxedExecute.unsafe = True\n")
    policy, limits = grading.course_policy(tmp_path, {"memory_mb": 2048, "timeout": None})
    assert policy == grading.Policy(wall_s=12, cell_s=3, memory_mb=2048, fsize_mb=1, nofile=32, nproc_extra=3000,
                                    processes=2, output_chars=100, unsafe=True)
    assert limits["memory_mb"] == (2048, "command line") and limits["timeout"] == (12, "nbgrader_config.py")
    assert grading.course_policy(tmp_path / "elsewhere")[0] == grading.Policy()   # no nbgrader_config.py: defaults


@pytest.mark.parametrize("setting, message", [
    ("c.SandboxedExecute.cell_timeout = -1", "nbgrader_config.py: SandboxedExecute.cell_timeout must be a positive "
                                            "number, got -1.0"),
    ("c.SandboxedExecute.memory_mb = 'lots'", "nbgrader_config.py: The 'memory_mb' trait of a SandboxedExecute "
                                             "instance expected an int, not the str 'lots'."),
    ("c.SandboxedExecute.nofile = (", "nbgrader_config.py: SyntaxError: '(' was never closed"),
    ("c.Autograde.autograde_preprocessors = ['nbgrader.preprocessors.Execute']",
     "c.Autograde.autograde_preprocessors has no dgmcourse.grading.preprocessors.SandboxedExecute: "
     "student code would run outside the sandbox"),
])
def test_a_wrong_course_setting_is_one_line_and_exit_2(tmp_path, capsys, setting, message):
    (tmp_path / "nbgrader_config.py").write_text(f"c = get_config()\n{setting}\n")
    assert cli.main(["grade", "a1", "--course-dir", str(tmp_path), "--unsafe"]) == 2   # --unsafe: no bwrap needed
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("WARNING: unsafe")]
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("flag, value, message", [
    ("--memory-mb", "0", "argument --memory-mb: must be a positive number, got 0"),
    ("--cell-timeout", "-2", "argument --cell-timeout: must be a positive number, got -2"),
    ("--nofile", "many", "argument --nofile: invalid int value: 'many'"),
])
def test_a_wrong_limit_flag_is_one_line_and_exit_2(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grade", "a1", "--course-dir", str(tmp_path), flag, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"dgmcourse grade: error: {message}"]


def test_the_pipeline_is_declared_once(tmp_path):
    """nbgrader_config.py assigns pipeline's lists; a course that sets none gets the same; no
    other module writes them out again."""
    for course in (ROOT, tmp_path):   # tmp_path: no nbgrader_config.py at all
        config = grading.course_config(course)
        assert list(config.Autograde.sanitize_preprocessors) == list(pipeline.SANITIZE)
        assert list(config.Autograde.autograde_preprocessors) == list(pipeline.AUTOGRADE)
        assert list(config.GenerateFeedback.preprocessors) == list(pipeline.FEEDBACK)
    for path in (ROOT / "dgmcourse").rglob("*.py"):
        if path.name != "pipeline.py":
            text = path.read_text()
            assert "LimitOutput" not in text and "ClearHiddenTests" not in text, path


@SANDBOX
def test_grading_from_another_checkout_imports_its_dgmcourse(tmp_path):
    """A course directory outside this repository holding its own checkout of the package, graded
    with that checkout (`python -m dgmcourse.cli` there): the sandbox imports the same files (the
    editable install points at this repository's). Its feedback steps are its nbgrader_config.py's."""
    course = make_course(tmp_path, ("tiny",), config="c.GenerateFeedback.preprocessors = [\n"
                         "    p for p in pipeline.FEEDBACK if not p.endswith('ClearHiddenTests')]")
    shutil.copytree(ROOT / "dgmcourse", course / "dgmcourse", ignore=shutil.ignore_patterns("__pycache__"))
    nb = solved(course, "tiny")
    nb.cells[1].source += "\nimport dgmcourse\nprint(dgmcourse.__file__)"
    submit(course, "alice", "tiny", nb)
    for command in (["grade", "tiny", "--jobs", "1", "--no-progress"], ["feedback", "tiny", "--allow-pending"]):
        run = subprocess.run([sys.executable, "-m", "dgmcourse.cli", *command], cwd=course, env=ENV,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((course / "grading-report-tiny.json").read_text())
    assert [(r["status"], r["score"]) for r in report] == [("graded", 3)], report
    graded = nbformat.read(course / "autograded" / "alice" / "tiny" / "tiny.ipynb", as_version=4)
    assert graded.cells[1].outputs[0].text == f"{course.resolve() / 'dgmcourse' / '__init__.py'}\n"
    feedback = visible_text((course / "feedback" / "alice" / "tiny" / "tiny.html").read_text())
    assert "np.allclose(add(np.ones(2)" in feedback   # the hidden test: ClearHiddenTests left out


@SANDBOX
def test_a_sandbox_that_cannot_import_dgmcourse_says_so(tmp_path, monkeypatch):
    broken = tmp_path / "checkout" / "dgmcourse"
    (broken / "grading").mkdir(parents=True)
    shutil.copy(ROOT / "dgmcourse" / "grading" / "harness.py", broken / "grading")
    (broken / "__init__.py").write_text("raise ImportError('half-copied checkout')\n")
    monkeypatch.setattr(sandbox, "library_root", lambda: broken.parent)
    (tmp_path / "work").mkdir()
    run = grading.run_sandboxed([{"kind": "test", "source": "assert True", "grade_id": "t"}], tmp_path / "work",
                                grading.Policy(wall_s=60))
    assert run["status"] == "crashed" and run["detail"] == \
        "sandbox could not import dgmcourse: ImportError: half-copied checkout"
    table = grading.format_table([grading.Result("alice", run["status"], [f"crashed: {run['detail']}"])])
    assert len(table.splitlines()) == 2 and "crashed: sandbox could not import dgmcourse" in table.splitlines()[1]
