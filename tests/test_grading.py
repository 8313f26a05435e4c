"""Unit tests of dgmcourse.grading: submission repair, the sandboxed harness and its signed
verdicts, score validation, and `dgmcourse grade` end to end on a tiny assignment."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from dgmcourse import cli, grading
from dgmcourse.grading.runner import _valid_score
from test_grading_support import make_course, nbgrader, release, solved, submit, tiny_source

pytestmark = pytest.mark.grading   # nbgrader courses, the sandbox and the CLI on them
SANDBOX = pytest.mark.skipif(not grading.bwrap_available(), reason="needs bubblewrap")
TESTS = [{"kind": "instructor", "source": "import numpy as np", "grade_id": "setup"},
         None,
         {"kind": "test", "source": "assert add(1, 2) == 3\nprint('checked')", "grade_id": "t1"},
         {"kind": "test", "source": "assert np.allclose(add(np.ones(2), np.ones(2)), 2 * np.ones(2))",
          "grade_id": "t2"}]


def _run(student_code, tmp_path, **limits):
    cells = [dict(c) if c else {"kind": "student", "source": student_code, "grade_id": "sol"}
             for c in TESTS]
    work = tmp_path / "work"
    work.mkdir(parents=True)
    return grading.run_sandboxed(cells, work, grading.Policy(**{"wall_s": 60, "cell_s": 20, **limits}))


def _passed(run):
    return {k: v["passed"] for k, v in run["verdicts"].items()}


# --- repair ------------------------------------------------------------------------------------
@pytest.fixture
def release_dir(tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    nbformat.write(tiny_source(), folder / "tiny.ipynb")
    return folder


def _graded_meta(nb):
    return [(c.cell_type, dict(c.metadata.nbgrader)) for c in nb.cells if "nbgrader" in c.metadata]


def test_repair_finds_renamed_notebook_and_ignores_other_files(tmp_path, release_dir):
    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(tiny_source(), sub / "tiny (1).ipynb")
    (sub / "numpy.py").write_text("allclose = lambda *a: True")
    notes = grading.repair_submission(sub, release_dir, tmp_path / "out")
    assert notes == ["renamed 'tiny (1).ipynb' to tiny.ipynb", "ignored file numpy.py"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.ipynb"]


def test_repair_rejects_invalid_json_and_reports_missing(tmp_path, release_dir):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "tiny.ipynb").write_text('{"cells": [')
    notes = grading.repair_submission(sub, release_dir, tmp_path / "out")
    assert len(notes) == 1 and notes[0].startswith("rejected tiny.ipynb: not valid JSON")
    assert not (tmp_path / "out" / "tiny.ipynb").exists()
    assert grading.repair_submission(tmp_path / "nothing", release_dir, tmp_path / "o2") == \
        ["missing notebook tiny.ipynb"]
    with pytest.raises(ValueError, match="release="):
        grading.repair_submission(sub, tmp_path / "nothing", tmp_path / "o3")


def test_repair_restores_release_metadata(tmp_path, release_dir):
    nb = tiny_source()
    nb.cells[3].metadata.nbgrader["schema_version"] = 99          # from the future
    nb.cells[4].metadata.nbgrader["points"] = 100                  # edited points
    nb.cells[4] = nbformat.v4.new_markdown_cell(nb.cells[4].source, metadata=nb.cells[4].metadata)
    fake = nbformat.v4.new_code_cell("pass", metadata=json.loads(json.dumps(nb.cells[3].metadata)))
    nb.cells.insert(0, fake)                                       # duplicated grade_id, first
    nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {
        "grade": True, "grade_id": "invented", "points": 5, "schema_version": 3}}))
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "tiny.ipynb").write_text(nbformat.writes(nbformat.convert(nb, 3)))
    notes = grading.repair_submission(sub, release_dir, tmp_path / "out")
    repaired = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    assert _graded_meta(repaired) == _graded_meta(tiny_source())
    assert repaired.cells[0].source == "pass" and "nbgrader" not in repaired.cells[0].metadata
    assert "converted tiny.ipynb from nbformat 3" in notes
    assert "restored cell type of test_mul (markdown -> code)" in notes
    assert "removed nbgrader metadata from a cell with grade_id 'invented'" in notes


def test_repair_restores_deleted_locked_and_test_cells(tmp_path, release_dir):
    nb = tiny_source()
    nb.cells = [nb.cells[i] for i in (1, 2, 5)]   # set-up and both tests deleted
    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(nb, sub / "tiny.ipynb")
    notes = grading.repair_submission(sub, release_dir, tmp_path / "out")
    assert notes == ["restored deleted cell setup", "restored deleted cell test_add",
                     "restored deleted cell test_mul"]
    repaired = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    assert [c.metadata.nbgrader["grade_id"] for c in repaired.cells] == \
        ["setup", "add", "mul", "test_add", "test_mul", "why"]


def test_scores_are_validated_against_points():
    assert _valid_score(2, 2.0) == 2.0 and _valid_score(None, 1.0) is None
    for bad in (2.5, -1, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="outside"):
            _valid_score(bad, 2.0)


# --- harness: signed, unforgeable verdicts --------------------------------------------------------
@SANDBOX
def test_honest_code_passes_and_wrong_code_fails(tmp_path):
    run = _run("import sys, warnings\ndef add(a, b):\n    warnings.warn('w')\n"
               "    print('noise', file=sys.stderr)\n    return a + b", tmp_path)
    assert run["status"] == "ok" and _passed(run) == {"t1": True, "t2": True}
    (stream,) = run["outputs"][2]  # stderr is shown as text on stdout: it never costs points
    assert stream["name"] == "stdout" and stream["text"].startswith("checked\n\n[stderr]\n")
    assert "noise" in stream["text"]
    run = _run("def add(a, b):\n    return a - b", tmp_path / "b")
    assert _passed(run) == {"t1": False, "t2": False}
    assert run["verdicts"]["t1"]["message"].startswith("AssertionError")


@SANDBOX
@pytest.mark.parametrize("attack", [
    "import numpy, builtins\nnumpy.allclose = lambda *a, **k: True\n"
    "builtins.AssertionError = type('E', (Exception,), {})\ndef add(a, b): return 0",
    "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
    "ip.set_custom_exc((BaseException,), lambda *a, **k: None)\ndef add(a, b): return 0",
    "class A:\n    def __eq__(self, o): return True\n    def __bool__(self): return True\n"
    "def add(a, b): return A()",
    # patched during a test: t1 would pass with an honest add, so the patch must void it
    "import numpy as np\ndef add(a, b):\n    np.allclose = lambda *x, **k: True\n"
    "    return a + b if isinstance(a, int) else 0",
    "import sys\ndef add(a, b):\n    sys._getframe(1).f_globals['np'] = None\n    return 0",
], ids=["patch_numpy_builtins", "patch_ipython", "eq_always_true", "patch_during_test", "frame_globals"])
def test_monkeypatching_never_earns_points(tmp_path, attack):
    run = _run(attack, tmp_path)
    assert _passed(run) == {"t1": False, "t2": False}, run


@SANDBOX
def test_forged_verdicts_are_detected(tmp_path):
    forge = ("import json, os\nfor i, g in enumerate(['t1', 't2']):\n"
             "    os.write(3, (json.dumps({'payload': {'kind': 'verdict', 'index': i, 'grade_id': g,"
             " 'passed': True, 'score': None, 'message': ''}, 'mac': '0' * 64}) + '\\n').encode())\n"
             "os._exit(0)")
    run = _run(forge, tmp_path)
    assert run["status"] == "tampered" and run["verdicts"] == {}
    run = _run("import dgmcourse.grading as g, sys\n"
               "sys.audit('dgmcourse.verdict', 0, 't1', '', True, None, '')", tmp_path / "b")
    assert run["status"] == "tampered"


@SANDBOX
def test_time_limits(tmp_path):
    run = _run("while True:\n    pass", tmp_path, cell_s=2)
    assert run["status"] == "ok" and _passed(run) == {"t1": False, "t2": False}
    assert run["outputs"][1][-1]["ename"] == "CellTimeout"
    run = _run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
               tmp_path / "b", cell_s=1, wall_s=8)  # the soft limit is disabled: the hard one kills
    assert run["status"] == "timeout" and run["time_s"] < 12


def test_unsafe_mode_runs_without_bubblewrap_but_keeps_signed_verdicts(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    cells = [dict(c) if c else {"kind": "student", "source": "def add(a, b): return a + b",
                                "grade_id": "sol"} for c in TESTS]
    (tmp_path / "w").mkdir()
    run = grading.run_sandboxed(cells, tmp_path / "w", grading.Policy(wall_s=60, unsafe=True))
    assert run["status"] == "ok" and _passed(run) == {"t1": True, "t2": True}


def test_refuses_without_isolation(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="--unsafe"):
        grading.run_sandboxed(TESTS[:1], tmp_path)
    with pytest.raises(RuntimeError, match="refusing"):
        grading.grade(tmp_path, "tiny")


# --- dgmcourse grade end to end -----------------------------------------------------------------
@SANDBOX
def test_grade_command_tiny_course(tmp_path, capsys):
    course = make_course(tmp_path, ("tiny",))
    submit(course, "full", "tiny", solved(course, "tiny"))
    submit(course, "part", "tiny", solved(course, "tiny", keep_unanswered=("mul",)))
    submit(course, "zero", "tiny", release(course, "tiny"))
    assert cli.main(["grade", "tiny", "--course-dir", str(course), "--jobs", "0"]) == 2
    assert cli.main(["grade", "tiny", "--course-dir", str(course), "--jobs", "2",
                     "--no-progress"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["student", "score", "max", "status", "time", "notes"]
    rows = {line.split()[0]: line.split()[1:4] for line in table[1:]}
    assert rows == {"full": ["3", "4", "graded"], "part": ["1", "4", "graded"],
                    "zero": ["0", "4", "graded"]}
    expected = {"full": {"test_add": 1, "test_mul": 2}, "part": {"test_add": 1, "test_mul": 0},
                "zero": {"test_add": 0, "test_mul": 0}}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, cells in expected.items():
            for grade_id, points in cells.items():
                assert gb.find_grade(grade_id, "tiny", "tiny", student).auto_score == points
            assert gb.find_grade("why", "tiny", "tiny", student).needs_manual_grade == (student != "zero")
    assert (course / "autograded" / "part" / "tiny" / "tiny.ipynb").is_file()

    # the per-student report and the sandbox logs are kept next to the gradebook
    report = {row["student"]: row for row in json.loads((course / "grading-report-tiny.json").read_text())}
    assert {s: (r["status"], r["score"], r["max_score"]) for s, r in report.items()} == {
        "full": ("graded", 3, 4), "part": ("graded", 1, 4), "zero": ("graded", 0, 4)}
    assert all(Path(log).is_file() for row in report.values() for log in row["logs"]) and report["full"]["logs"]
    assert (course / "grading-report-tiny.csv").read_text().startswith("student,status,score,max_score")

    # feedback: refused while the written answer awaits manual grading, then for exactly the students named
    capsys.readouterr()
    assert cli.main(["feedback", "tiny", "--course-dir", str(course), "--student", "full"]) == 2
    assert "still need manual grading" in capsys.readouterr().err
    assert cli.main(["feedback", "tiny", "--course-dir", str(course), "--student", "full",
                     "--student", "part", "--allow-pending"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {course / 'feedback' / s / 'tiny' / 'tiny.html'}" for s in ("full", "part")]
    assert sorted(p.name for p in (course / "feedback").iterdir()) == ["full", "part"]
    assert (course / "feedback" / "part" / "tiny" / "tiny.html").is_file()
    assert cli.main(["feedback", "tiny", "--course-dir", str(course), "--student", "nobody"]) == 2
    assert "no autograded submission of tiny for nobody" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["grade", "no_such"], "no {course}/solutions/no_such (assignments of this course: tiny)"),
    (["grade", "tiny"], "no submissions of tiny: nothing in {course}/submitted/<student>/tiny/"),
    (["feedback", "tiny"], "nothing of tiny is autograded in {course}/autograded"),
])
def test_wrong_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    course = make_course(tmp_path, ("tiny",))
    assert cli.main([*args, "--course-dir", str(course)]) == 2
    err = capsys.readouterr().err
    assert message.format(course=course) in err and len(err.strip().splitlines()) == 1, err


def test_grading_before_release_or_outside_a_course_says_what_to_do(tmp_path, capsys):
    course = make_course(tmp_path, ("tiny",))
    submit(course, "alice", "tiny", solved(course, "tiny"))
    (course / "gradebook.db").unlink()
    assert cli.main(["grade", "tiny", "--course-dir", str(course)]) == 2
    assert "release tiny first (make release" in capsys.readouterr().err
    assert cli.main(["grade", "tiny", "--course-dir", str(tmp_path)]) == 2
    assert "is not a course directory (no nbgrader_config.py)" in capsys.readouterr().err


def test_version_and_defaults_in_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("dgmcourse 0.")
    with pytest.raises(SystemExit):
        cli.main(["grade", "--help", "--course-dir", str(tmp_path)])   # no nbgrader_config.py: the defaults
    out = " ".join(capsys.readouterr().out.split())
    assert "Now 600, from default" in out and "RLIMIT_DATA), MiB. Now 4096, from default" in out


# --- the course library's own answer is not an answer -------------------------------------------
def _library_verdict(tmp_path, answer: str, test: str) -> dict:
    """The verdict of one test cell run after one student cell in the sandbox."""
    run = grading.run_sandboxed([{"kind": "student", "source": answer, "grade_id": "sol"},
                                 {"kind": "test", "source": test, "grade_id": "t"}],
                                tmp_path, grading.Policy(wall_s=120))
    return run["verdicts"]["t"]


LIBRARY_TEST = ("# Not an answer: dgmcourse.vae.gaussian_kl\nimport torch\n"
                "assert torch.allclose(kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))")
OWN_KL = "import torch\ndef kl(mu, logvar):\n    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)"


@SANDBOX
@pytest.mark.parametrize("answer, verdict", [
    (OWN_KL, "passed"),
    ("from dgmcourse.device import get_device\n" + OWN_KL.replace("    return", "    get_device()\n    return"),
     "passed"),                                                               # allowed helpers are fine
    ("from dgmcourse.vae import gaussian_kl\ndef kl(mu, logvar):\n    return gaussian_kl(mu, logvar)",
     "LibraryAnswer"),                                                        # called directly
    ("import dgmcourse.vae as v\nkl = v.gaussian_kl", "LibraryAnswer"),       # an alias
    ("import importlib\ndef kl(mu, logvar):\n    return getattr(importlib.import_module('dgmcourse.vae'),"
     " 'gaussian_kl')(mu, logvar)", "LibraryAnswer"),                         # through importlib
    ("import types, dgmcourse.vae as v\nf = v.gaussian_kl\nkl = types.FunctionType(f.__code__, f.__globals__)",
     "LibraryAnswer"),                                                        # a copied function object
    ("import sys, dgmcourse.vae as v\ndef kl(mu, logvar):\n    for c in sys.getprofile().__closure__:\n"
     "        if isinstance(c.cell_contents, dict): c.cell_contents = {}\n    return v.gaussian_kl(mu, logvar)",
     "Tampering"),                                                            # disabling the check
], ids=["own", "allowed_helper", "direct", "alias", "importlib", "copied_code", "tamper"])
def test_library_answer_earns_nothing(tmp_path, answer, verdict):
    result = _library_verdict(tmp_path, answer, LIBRARY_TEST)
    if verdict == "passed":
        assert result["passed"], result
    else:
        assert not result["passed"] and result["message"].startswith(verdict), result
        if verdict == "LibraryAnswer":
            assert "dgmcourse.vae.gaussian_kl" in result["message"]


DECORATED_TEST = ("# Not an answer: dgmcourse.autoregressive.sample\nimport torch\n"
                  "class Half(torch.nn.Module):\n    def forward(self, x):\n        return torch.zeros_like(x)\n"
                  "x = draw(Half(), 3, (2, 2))\n"
                  "assert x.shape == (3, 1, 2, 2) and set(x.unique().tolist()) <= {0.0, 1.0}")
OWN_DRAW = ("import torch\n@torch.no_grad()\ndef draw(model, n, shape):\n    x = torch.zeros(n, 1, *shape)\n"
            "    for i in range(shape[0] * shape[1]):\n"
            "        p = torch.sigmoid(model(x)).flatten(1)[:, i]\n"
            "        x.view(n, -1)[:, i] = torch.bernoulli(p)\n    return x")


@SANDBOX
@pytest.mark.parametrize("answer, verdict", [
    (OWN_DRAW, "passed"),           # the student's own @torch.no_grad() function shares only the decorator
    ("import torch, dgmcourse.autoregressive as ar\n@torch.no_grad()\ndef draw(model, n, shape):\n"
     "    return ar.sample(model, n, shape)", "LibraryAnswer"),             # called inside the student's own
    ("from dgmcourse.autoregressive import sample as draw", "LibraryAnswer"),  # an alias of the decorated one
], ids=["own_decorated", "called_decorated", "alias_decorated"])
def test_library_answer_behind_a_decorator(tmp_path, answer, verdict):
    """A library answer decorated with ``@torch.no_grad()`` is recognised by its own code, not by
    the decorator's, which every decorated function shares."""
    result = _library_verdict(tmp_path, answer, DECORATED_TEST)
    assert result["passed"] == (verdict == "passed"), result
    if verdict != "passed":
        assert result["message"].startswith(verdict) and "dgmcourse.autoregressive.sample" in result["message"]


CLASS_TEST = ("# Not an answer: dgmcourse.flows.AffineCoupling\nimport torch\n"
              "z, log_det = couple(torch.ones(3, 2))\nassert z.shape == (3, 2) and log_det.shape == (3,)")
OWN_COUPLE = "import torch\ndef couple(x):\n    return x * 1.0, torch.zeros(len(x))"


@SANDBOX
@pytest.mark.parametrize("answer, verdict", [
    (OWN_COUPLE, "passed"),
    ("import torch\nfrom dgmcourse.flows import AffineCoupling\nlayer = AffineCoupling(torch.tensor([1, 0]))\n"
     "def couple(x):\n    return layer(x)", "LibraryAnswer"),                 # its forward, through the module call
    ("import torch, dgmcourse.flows as fl\nlayer = fl.AffineCoupling(torch.tensor([0, 1]))\n"
     "couple = layer.forward", "LibraryAnswer"),                                # a bound method
], ids=["own", "module_call", "bound_method"])
def test_library_answer_of_a_class(tmp_path, answer, verdict):
    """A class named in ``# Not an answer:`` stands for the methods it defines: calling a library
    layer's ``forward`` (directly or through ``nn.Module.__call__``) from student code earns nothing."""
    result = _library_verdict(tmp_path, answer, CLASS_TEST)
    assert result["passed"] == (verdict == "passed"), result
    if verdict != "passed":
        assert result["message"].startswith(verdict) and "dgmcourse.flows.AffineCoupling." in result["message"]


@SANDBOX
@pytest.mark.parametrize("student", [
    "import torch\ndef jac(f, x):\n    return torch.func.vmap(torch.func.jacfwd(f))(x)",
    "import torch\ndef jac(f, x):\n    return torch.func.jvp(f, (x,), (torch.ones_like(x),))[1][:, :, None]",
    "import torch\nfrom torch.autograd.functional import jacobian\ndef jac(f, x):\n"
    "    return torch.stack([jacobian(f, v, strategy='forward-mode', vectorize=True) for v in x])",
], ids=["jacfwd", "jvp", "forward_mode_strategy"])
def test_forward_mode_autodiff_in_a_test_cell(tmp_path, student):
    """Forward mode compiles its decompositions on first use, which reads frames: the harness does
    that up front whenever a cell names forward mode, so a correct answer built on it passes."""
    test = ("import torch\nx = torch.linspace(0, 1, 3, dtype=torch.float64)[:, None]\n"
            "assert torch.allclose(jac(torch.sin, x).flatten(), torch.cos(x).flatten())")
    run = grading.run_sandboxed([{"kind": "student", "source": student, "grade_id": "sol"},
                                 {"kind": "test", "source": test, "grade_id": "t"}], tmp_path,
                                grading.Policy(wall_s=120))
    assert run["status"] == "ok" and run["verdicts"]["t"]["passed"], run


@SANDBOX
def test_optimisers_created_in_a_test_cell_are_not_tampering(tmp_path):
    """torch wraps an optimiser class's step on first use; the harness does that before the
    library snapshot, so a test that builds L-BFGS or Adam (a geodesic, a training step) passes."""
    test = ("import torch\np = torch.nn.Parameter(torch.ones(2))\n"
            "for kind in (torch.optim.LBFGS, torch.optim.Adam, torch.optim.SGD):\n"
            "    opt = kind([p], lr=0.1)\n"
            "    def closure():\n"
            "        opt.zero_grad(); loss = (p ** 2).sum(); loss.backward(); return loss\n"
            "    opt.step(closure)\n"
            "assert float(p.abs().sum()) < 2")
    run = grading.run_sandboxed([{"kind": "test", "source": test, "grade_id": "t"}], tmp_path,
                                grading.Policy(wall_s=120))
    assert run["status"] == "ok" and run["verdicts"]["t"]["passed"], run


@SANDBOX
def test_plain_nbgrader_autograde_repairs_cells_like_dgmcourse_grade(tmp_path):
    """``RepairCells`` (nbgrader_config.py) gives the plain route the CLI's repairs: a copied test
    cell, metadata from a future nbgrader and edited points would otherwise make nbgrader reject
    the notebook or score it by the student's metadata."""
    course = make_course(tmp_path, ("tiny",))
    nb = solved(course, "tiny")
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_mul"]
    nb.cells.append(nbformat.from_dict({**tests[0], "id": "copied1"}))      # a copied test cell
    tests[0].metadata.nbgrader["points"] = 50                                 # edited points
    nb.cells[0].metadata.nbgrader["schema_version"] = 99                     # a future nbgrader
    submit(course, "noisy", "tiny", nb)
    submit(course, "clean", "tiny", solved(course, "tiny"))
    for student in ("noisy", "clean"):
        run = nbgrader(["autograde", "tiny", "--student", student], cwd=course, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s.student_id: (s.code_score, s.max_code_score) for s in gb.assignment_submissions("tiny")}
    assert scores == {"noisy": (3.0, 3.0), "clean": (3.0, 3.0)}
