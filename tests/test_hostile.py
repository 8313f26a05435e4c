"""Hostile submissions of the real assignment a1_vae, graded by `dgmcourse.grading.grade` and by
plain `nbgrader autograde` (the formgrader's Autograde button).

All submissions are built from the real release/solution in a temporary course directory and
graded in ONE run (smoke mode, one job: the other xdist worker has the other core), so one broken
submission can be seen not to stop the others. For each, the test asserts what the instructor gets:
the score (0 where nothing was earned, full marks where the answer is right despite the noise), the
status and notes, and that grading kept to its time limit; every run checks live that nothing outside
the submissions changed and nothing reached the network.

The outcomes are evidence cached by digest (tests/evidence/hostile.json, see ``_graded``): when nothing
they depend on changed, a sample chosen afresh is re-graded on each route and must agree with the store.
"""

import hashlib
import json
import os
import random
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry

from dgmcourse import assessment, grading
from test_grading_support import REAL, cell_ids, make_course, nbgrader, release, solved, submit

pytestmark = pytest.mark.skipif(not (Path(__file__).parents[1] / "solutions" / REAL).is_dir()
                                or not grading.bwrap_available(),
                                reason="needs solutions/a1_vae and bubblewrap")
# one module fixture: keep on one xdist worker
pytestmark = [pytestmark, pytest.mark.grading, pytest.mark.xdist_group("hostile")]
LIMITS = grading.Policy(wall_s=240.0, cell_s=40.0, memory_mb=3072)
EVIDENCE = Path(__file__).parent / "evidence" / "hostile.json"
SAMPLE = {"dgmcourse": 6, "nbgrader": 3}   # submissions re-graded per route when the stored outcomes are current


def _insert(nb, index, source):
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def _first_solution_index(nb):
    return next(i for i, c in enumerate(nb.cells)
                if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")


def _replace_solution(nb, grade_id, source):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
    return nb


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hostile(tmp_path_factory, route, students=None):
    """Build every hostile submission, grade ``students`` (default: all) at once, return what the instructor sees.

    ``route`` is "dgmcourse" (``dgmcourse.grading.grade``, 2 jobs) or "nbgrader" (plain
    ``nbgrader autograde``, which the formgrader's Autograde button runs: ``nbgrader_config.py``
    puts the sandbox in it too).
    """
    tmp = tmp_path_factory.mktemp(f"hostile-{route}")
    course = make_course(tmp)
    full, blank = solved(course, REAL), release(course, REAL)
    tests = cell_ids(blank, "test")
    first_solution = cell_ids(blank, "solution")[0]
    canary = tmp / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("instructor file")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.5)
    port, hits = server.getsockname()[1], []

    def accept():
        deadline = time.time() + 900
        while time.time() < deadline and not getattr(server, "_closed", False):
            try:
                hits.append(server.accept())
            except (socket.timeout, OSError):
                continue
    threading.Thread(target=accept, daemon=True).start()

    def nb(base):
        return nbformat.from_dict(json.loads(json.dumps(base)))

    subs = {}
    subs["honest_full"] = nb(full)
    subs["honest_blank"] = nb(blank)
    edited = nb(blank)
    for cell in edited.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in tests:
            cell.source, cell.metadata.nbgrader["points"] = "pass", 100
    subs["edited_tests_and_points"] = edited
    markdown = nb(full)
    markdown.cells = [nbformat.v4.new_markdown_cell(c.source, metadata=c.metadata)
                      if c.metadata.get("nbgrader", {}).get("grade_id") == tests[0] else c
                      for c in markdown.cells]
    subs["test_cell_made_markdown"] = markdown
    deleted = nb(full)
    deleted.cells = [c for c in deleted.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") not in tests]
    subs["deleted_test_cells"] = deleted
    stripped = nb(blank)
    for cell in stripped.cells:
        cell.metadata.pop("nbgrader", None)
    subs["stripped_metadata"] = stripped
    duplicate = nb(full)
    fake = nbformat.from_dict(json.loads(json.dumps(
        next(c for c in duplicate.cells if c.metadata.get("nbgrader", {}).get("grade_id") == tests[0]))))
    fake.source, fake.metadata.nbgrader["points"] = "pass", 50
    duplicate.cells.insert(0, fake)
    subs["duplicated_grade_id"] = duplicate
    future = nb(full)
    for cell in future.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["schema_version"] = 99
    subs["schema_from_the_future"] = future
    subs["renamed_notebook"] = ("a1_vae (1).ipynb", nb(full))
    subs["missing_notebook"] = ("notes.txt", "I forgot to upload it")
    subs["invalid_json"] = (f"{REAL}.ipynb", '{"cells": [ {"cell_type": "code", ')
    subs["nbformat_3"] = (f"{REAL}.ipynb", nbformat.writes(nbformat.convert(nb(full), 3)))
    subs["non_ascii_code"] = _insert(nb(full), _first_solution_index(full),
                                     "μ = 'Größe — 変分オートエンコーダ ✓'\nprint(μ)")
    loop = nb(blank)
    subs["infinite_loop_in_solution_cell"] = _insert(loop, _first_solution_index(loop),
                                                     "while True:\n    pass")
    subs["infinite_loop_in_tested_function"] = _replace_solution(
        nb(blank), first_solution,
        "def reparameterize(mu, logvar, generator=None):\n    while True:\n        pass")
    subs["memory_bomb"] = _insert(nb(blank), 2, "hog = []\nwhile True:\n"
                                  "    hog.append(bytearray(256 * 2**20))")
    subs["fork_bomb"] = _insert(nb(blank), 2, "import os\nwhile True:\n    os.fork()")
    subs["os_exit"] = _insert(nb(blank), 2, "import os\nos._exit(0)")
    subs["kill_kernel"] = _insert(nb(blank), 2, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    subs["output_flood"] = _insert(nb(full), 2, "for i in range(200_000):\n    print('spam ' * 20)")
    paths = {"solution": course / "solutions" / REAL / f"{REAL}.ipynb",
             "gradebook": course / "gradebook.db", "canary": canary,
             "other": course / "submitted" / "honest_full" / REAL / f"{REAL}.ipynb"}
    probe = "\n".join(
        [f"for name, path in {[(k, str(v)) for k, v in paths.items()]!r}:",
         "    for mode in ('r', 'a'):",
         "        try:",
         "            with open(path, mode) as fh:",
         "                fh.write('pwned') if mode == 'a' else fh.read(10)",
         "            print('PROBE', name, mode, 'ALLOWED')",
         "        except Exception as err:",
         "            print('PROBE', name, mode, 'blocked', type(err).__name__)"])
    subs["read_write_solutions_and_gradebook"] = _insert(nb(blank), 2, probe)
    subs["network_access"] = _insert(nb(blank), 2, "\n".join([
        "import socket", "try:",
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'scores')",
        "    print('PROBE net ALLOWED')", "except Exception as err:",
        "    print('PROBE net blocked', type(err).__name__)"]))
    subs["write_outside_submission"] = _insert(nb(blank), 2, "\n".join([
        "import os, pathlib",
        f"for target in ['{course}/pwned.txt', '{tmp}/outside/pwned.txt', '/root/pwned.txt',",
        f"               '/usr/pwned.txt', '{course}/submitted/honest_blank/{REAL}/{REAL}.ipynb']:",
        "    try:", "        pathlib.Path(target).write_text('x'); print('PROBE', target, 'ALLOWED')",
        "    except Exception as err:", "        print('PROBE', target, 'blocked', type(err).__name__)"]))
    subs["shadowing_module"] = ("torch.py", nb(blank))
    subs["monkeypatch_torch_and_numpy"] = _insert(nb(blank), 2, "\n".join([
        "import torch, numpy", "torch.allclose = lambda *a, **k: True",
        "torch.testing.assert_close = lambda *a, **k: None",
        "numpy.allclose = lambda *a, **k: True", "torch.Tensor.__eq__ = lambda *a: True",
        "torch.Tensor.__bool__ = lambda *a: True"]))
    subs["monkeypatch_ipython_and_builtins"] = _insert(nb(blank), 2, "\n".join([
        "import builtins, sys", "ip = get_ipython()",
        "ip.showtraceback = lambda *a, **k: None",
        "ip.set_custom_exc((BaseException,), lambda *a, **k: None)",
        "sys.excepthook = lambda *a: None", "builtins.AssertionError = type('AE', (Exception,), {})",
        "builtins.isinstance = lambda *a: True", "builtins.abs = lambda x: 0"]))
    subs["eq_always_true_objects"] = _replace_solution(nb(blank), first_solution, "\n".join([
        "class Anything:", "    def __eq__(self, other): return True",
        "    __le__ = __lt__ = __ge__ = __gt__ = __eq__", "    def __bool__(self): return True",
        "    def __getattr__(self, name): return lambda *a, **k: self",
        "    def __call__(self, *a, **k): return self",
        "    def __getitem__(self, key): return self",
        "def reparameterize(mu, logvar, generator=None):", "    return Anything()"]))
    forged = nb(blank)
    for i, cell in enumerate(forged.cells):
        if cell.cell_type == "code":
            cell.execution_count = i
            cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "100"},
                                                   execution_count=i)]
    subs["forged_outputs"] = forged
    subs["forged_verdict_channel"] = _insert(nb(blank), 2, "\n".join([
        "import json, os",
        f"for i, g in enumerate({tests!r}):",
        "    msg = {'payload': {'kind': 'verdict', 'index': i, 'grade_id': g, 'passed': True,",
        "                       'score': None, 'message': ''}, 'mac': '0' * 64}",
        "    os.write(3, (json.dumps(msg) + '\\n').encode())",
        "os.write(3, b'{\"payload\": {\"kind\": \"end\"}, \"mac\": \"\"}\\n')"]))
    subs["stderr_warnings_correct"] = _insert(nb(full), 2, "\n".join([
        "import sys, warnings, torch", "_orig = torch.exp",
        "warnings.warn('this is only a warning')",
        "print('noise on stderr', file=sys.stderr)"]))

    for student, spec in subs.items():
        if isinstance(spec, tuple):
            name, content = spec
            folder = submit(course, student, REAL)
            if isinstance(content, str):
                (folder / name).write_text(content, encoding="utf-8")
            else:
                nbformat.write(content, folder / name)
            if name == "torch.py":
                nbformat.write(content, folder / f"{REAL}.ipynb")
                (folder / "torch.py").write_text("allclose = lambda *a, **k: True\n")
        else:
            submit(course, student, REAL, spec)
    protected = {"solutions": _digest(course / "solutions"),
                 "release": _digest(course / "assignments"),
                 "submitted": _digest(course / "submitted"), "canary": canary.read_text()}
    students = sorted(subs) if students is None else students
    log = ""
    if route == "dgmcourse":
        results = {r.student: r for r in grading.grade(course, REAL, students, jobs=1, policy=LIMITS, progress=False)}
    else:
        # one student per command, as the formgrader's per-row Autograde button does (a single
        # `nbgrader autograde` stops at the first notebook whose metadata nbgrader rejects)
        results = {}
        for student in students:
            run = nbgrader(["autograde", REAL, "--force", "--student", student,
                            f"--SandboxedExecute.timeout={LIMITS.wall_s}",
                            f"--SandboxedExecute.cell_timeout={LIMITS.cell_s}",
                            f"--SandboxedExecute.memory_mb={LIMITS.memory_mb}"], cwd=course, check=False)
            log += f"--- {student}: exit {run.returncode}\n{run.stderr[-1500:]}"
    server.close()
    max_points = sum(c.metadata.nbgrader["points"] for c in blank.cells
                     if c.metadata.get("nbgrader", {}).get("grade")
                     and not c.metadata.nbgrader.get("solution"))
    outcomes = {student: _outcome(course, tmp, student, results.get(student)) for student in students}
    return {"outcomes": outcomes, "safety": _safety_problems(course, tmp, canary, protected, hits),
            "tests": tests, "max": max_points, "n": len(subs), "log": log}


def _outcome(course, tmp, student, result):
    """What the instructor sees of one graded submission, in a form the evidence store keeps (JSON)."""
    outcome = {"status": str(result.status) if result else None, "notes": list(result.notes) if result else [],
               "time_s": round(result.time_s, 1) if result else None,
               "auto": sum(g["auto_score"] or 0 for nb in result.notebooks.values() for g in nb["grades"].values()
                           if not g["needs_manual_grade"]) if result else None,
               "grades": {gid: [g["auto_score"], g["max_score"]] for nb in result.notebooks.values()
                          for gid, g in nb["grades"].items()} if result else {}}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            submission = gb.find_submission(REAL, student)
            outcome.update(code_score=submission.code_score, max_score=submission.max_score)
        except MissingEntry:
            outcome.update(code_score=None, max_score=None)
    path = course / "autograded" / student / REAL / f"{REAL}.ipynb"
    text = ""
    if path.is_file():
        nb = nbformat.read(path, as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    outcome.update(probes=[line.replace(str(course), "<course>").replace(str(tmp), "<tmp>")
                           for line in text.splitlines() if line.startswith("PROBE")],
                   truncated="output truncated" in text,
                   autograded_bytes=path.stat().st_size if path.is_file() else None)
    return outcome


def _safety_problems(course, tmp, canary, protected, hits):
    """Everything the run changed or reached outside the submissions (checked live on every run)."""
    problems = [f"{name} changed" for name, now in (
        ("solutions", _digest(course / "solutions")), ("release", _digest(course / "assignments")),
        ("submitted", _digest(course / "submitted")), ("canary", canary.read_text())) if now != protected[name]]
    problems += [f"{p} was written" for p in (course / "pwned.txt", tmp / "outside" / "pwned.txt",
                                              Path("/root/pwned.txt")) if p.exists()]
    return problems + [f"network connection {hit[1]}" for hit in hits]


COMPARED = ("status", "auto", "code_score", "max_score", "probes", "truncated")   # a re-run must agree on these


def _graded(tmp_path_factory, route):
    """The outcomes of every hostile submission on one route, with the evidence store (tests/evidence/hostile.json).

    Stored outcomes are keyed by the digest of what can change them (a1_vae's grading inputs, this module
    and its helpers). Digest unchanged: a sample chosen afresh is graded again (on this route) and must
    agree with the store; the tests then read the stored outcomes with the sample's. Changed: every
    submission is graded and the store is rewritten. Either way the run checks live that nothing outside
    the submissions changed and nothing reached the network.
    """
    inputs = {**assessment.evidence_inputs(REAL, "grading"),
              **{f"tests/{path.name}": assessment.file_digest(path)
                 for path in (Path(__file__), Path(__file__).with_name("test_grading_support.py"))}}
    digest = assessment.evidence_digest(inputs)
    store = json.loads(EVIDENCE.read_text()) if EVIDENCE.is_file() else {}
    stored = store.get(route)
    if stored and stored["digest"] == digest:
        sample = sorted(random.Random(os.urandom(8)).sample(sorted(stored["outcomes"]), SAMPLE[route]))
        run = _hostile(tmp_path_factory, route, sample)
        differ = [s for s in sample if {k: run["outcomes"][s][k] for k in COMPARED}
                  != {k: stored["outcomes"][s][k] for k in COMPARED}]
        line = (f"hostile submissions ({route}): unchanged (digest {digest}); re-graded {', '.join(sample)}: "
                + (f"DIFFER from the store: {differ}" if differ else "as stored"))
        return {**run, "outcomes": {**stored["outcomes"], **run["outcomes"]}, "line": line, "differ": differ}
    run = _hostile(tmp_path_factory, route)
    changed = sorted(k for k in set(inputs) | set(stored["inputs"]) if inputs.get(k) != stored["inputs"].get(k)) \
        if stored else ["nothing stored"]
    store[route] = {"digest": digest, "inputs": inputs, "outcomes": run["outcomes"],
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    EVIDENCE.parent.mkdir(parents=True, exist_ok=True)
    EVIDENCE.write_text(json.dumps(dict(sorted(store.items())), indent=1, sort_keys=True) + "\n")
    line = (f"hostile submissions ({route}): stale (changed: {', '.join(changed[:4])}"
            f"{' ...' if len(changed) > 4 else ''}); graded all {len(run['outcomes'])}: stored")
    return {**run, "line": line, "differ": []}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return _graded(tmp_path_factory, "dgmcourse")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _graded(tmp_path_factory, "nbgrader")


FULL = ["honest_full", "test_cell_made_markdown", "deleted_test_cells", "duplicated_grade_id",
        "schema_from_the_future", "renamed_notebook", "nbformat_3", "non_ascii_code",
        "output_flood", "stderr_warnings_correct"]
ZERO = ["honest_blank", "edited_tests_and_points", "stripped_metadata", "missing_notebook",
        "invalid_json", "infinite_loop_in_solution_cell", "infinite_loop_in_tested_function",
        "memory_bomb", "fork_bomb", "os_exit", "kill_kernel",
        "read_write_solutions_and_gradebook", "network_access", "write_outside_submission",
        "shadowing_module", "monkeypatch_torch_and_numpy", "monkeypatch_ipython_and_builtins",
        "eq_always_true_objects", "forged_outputs", "forged_verdict_channel"]


@pytest.mark.parametrize("route", ["dgmcourse", "nbgrader"])
def test_stored_outcomes_are_current_and_nothing_escaped(route, request, record_property):
    run = request.getfixturevalue("graded" if route == "dgmcourse" else "plain")
    record_property("evidence", run["line"])
    assert not run["differ"], run["line"]
    assert run["safety"] == [], (run["safety"], run["log"][-4000:])


def test_suite_is_large_and_everyone_is_graded(graded):
    assert graded["n"] >= 20 + 2
    assert set(graded["outcomes"]) == set(FULL) | set(ZERO)
    for student, outcome in graded["outcomes"].items():
        assert outcome["max_score"] == pytest.approx(graded["max"] + 4), student  # + 2 written answers
        assert outcome["status"] != "error", (student, outcome["notes"])


@pytest.mark.parametrize("student", FULL)
def test_right_answers_get_full_marks_despite_the_noise(graded, student):
    outcome = graded["outcomes"][student]
    assert outcome["auto"] == pytest.approx(graded["max"]), (student, outcome["status"], outcome["notes"])
    assert outcome["status"] in ("graded", "repaired"), outcome


@pytest.mark.parametrize("student", ZERO)
def test_nothing_earned_scores_zero(graded, student):
    outcome = graded["outcomes"][student]
    assert outcome["auto"] == 0, (student, outcome["status"], outcome["notes"])


@pytest.mark.parametrize("student, status, note", [
    ("renamed_notebook", "repaired", "renamed 'a1_vae (1).ipynb'"),
    ("missing_notebook", "missing", "missing notebook a1_vae.ipynb"),
    ("invalid_json", "rejected", "not valid JSON"),
    ("nbformat_3", "repaired", "converted a1_vae.ipynb from nbformat 3"),
    ("schema_from_the_future", "repaired", "restored nbgrader metadata"),
    ("test_cell_made_markdown", "repaired", "restored cell type"),
    ("duplicated_grade_id", "repaired", "removed nbgrader metadata"),
    ("edited_tests_and_points", "repaired", "restored nbgrader metadata"),
    ("shadowing_module", "repaired", "ignored file torch.py"),
    ("fork_bomb", "processes", "more than 64 processes"),
    ("os_exit", "crashed", "before the end of the notebook"),
    ("kill_kernel", "crashed", "before the end of the notebook"),
    ("forged_verdict_channel", "tampered", "unsigned message"),
])
def test_instructor_sees_a_clear_status(graded, student, status, note):
    outcome = graded["outcomes"][student]
    assert outcome["status"] == status, outcome
    assert any(note in n for n in outcome["notes"]), outcome["notes"]


def test_points_in_the_gradebook_are_the_release_points(graded):
    outcome = graded["outcomes"]["edited_tests_and_points"]
    assert outcome["max_score"] == pytest.approx(graded["max"] + 4)
    assert outcome["code_score"] == 0


def test_plain_nbgrader_autograde_runs_the_same_sandbox(plain):
    """The route the formgrader's Autograde button takes: nothing earns a point, nothing is
    written outside the submission, nothing reaches the network; an honest answer keeps its marks."""
    scores = {student: outcome["code_score"] for student, outcome in plain["outcomes"].items()}
    # RepairCells gives this route the CLI's cell repairs; file repairs (a renamed notebook) are the CLI's
    full = {student: scores.get(student) for student in FULL if student != "renamed_notebook"}
    assert full == {student: pytest.approx(plain["max"]) for student in full}, (scores, plain["log"][-4000:])
    earned = {student: scores[student] for student in ZERO if scores.get(student)}
    assert earned == {}, earned
    assert "PROBE net blocked" in " ".join(plain["outcomes"]["network_access"]["probes"])
    probes = plain["outcomes"]["write_outside_submission"]["probes"]
    assert len(probes) == 5 and not any("ALLOWED" in p for p in probes), probes


def test_sandbox_blocks_files_outside_the_submission(graded):
    probes = graded["outcomes"]["read_write_solutions_and_gradebook"]["probes"]
    assert len(probes) == 8 and not any("ALLOWED" in p for p in probes), probes
    probes = graded["outcomes"]["write_outside_submission"]["probes"]
    assert len(probes) == 5 and not any("ALLOWED" in p for p in probes), probes


def test_sandbox_has_no_network(graded):
    assert "PROBE net blocked" in " ".join(graded["outcomes"]["network_access"]["probes"])


def test_output_flood_is_truncated(graded):
    outcome = graded["outcomes"]["output_flood"]
    assert outcome["autograded_bytes"] < 2 * 2**20 and outcome["truncated"]


def test_hidden_tests_are_restored_and_points_never_exceed_the_cells(graded):
    for student, outcome in graded["outcomes"].items():
        assert set(graded["tests"]) <= set(outcome["grades"]), student
        for auto, points in outcome["grades"].values():
            assert auto is None or 0 <= auto <= points


def test_grading_kept_to_its_time_limits(graded):
    for student, outcome in graded["outcomes"].items():
        assert outcome["time_s"] < LIMITS.wall_s + 60, (student, outcome["time_s"])
