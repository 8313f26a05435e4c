"""Testing the tests of every assignment (dgmcourse.assessment; issue: grades that are right on
every machine).

* static: headers state the graded cells' points, written questions are task cells with a mark
  scheme (rubric, model answer, partial answers) that the release never shows, stochastic tests
  derive their seeds from SEED, and the fixtures in tests/assessment/ cover every cell;
* the grading evidence (tier ``assessment``, dgmcourse.assessment.check_evidence): through the real
  grading pipeline (smoke mode) the reference solution and every correct alternative earn full marks,
  every common mistake loses the points of the cell that targets it, and the reference solution passes
  every graded test on 3 other seeds with no cell raising. Stored in tests/evidence/ with the digest of
  everything it depends on: re-measured in full when the digest changed, else a fresh sample is
  re-graded and must match the store;
* the 20-seed reference runs of benchmarks/assessment.py (too long for a test run) were measured on the
  assignment's current inputs (their digest), else the run fails naming the command that refreshes them.
"""

import hashlib
import math
from pathlib import Path

import nbformat
import pytest

from dgmcourse import assessment
from dgmcourse.reports import read_report

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if list(p.glob("*.ipynb")))


def _source(name):
    return nbformat.read(assessment.notebooks(name)[0], as_version=4)


def _release(name):
    return nbformat.read(ROOT / "assignments" / name / assessment.notebooks(name)[0].name,
                         as_version=4)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_headers_rubrics_seeds_and_fixtures(name):
    source, release = _source(name), _release(name)
    assert assessment.points_problems(release) == []
    assert assessment.rubric_problems(source) == []
    assert assessment.seed_problems(source) == []
    assert assessment.scope_problems(source) == []
    assert assessment.fixture_problems(name) == []
    release_text = "\n".join(cell.source for cell in release.cells)
    assert "MARK SCHEME" not in release_text and "**Model answer" not in release_text
    assert release_text.count("YOUR ANSWER HERE") == sum(
        1 for cell in source.cells if cell.metadata.get("nbgrader", {}).get("task"))


@pytest.mark.assessment
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_grading_evidence(name, record_property):
    """Alternatives at full marks, mistakes caught, the reference passing on the CI seeds with no cell
    raising: re-measured in full when anything they depend on changed, else a fresh sample re-checked
    against the stored evidence (tests/evidence/; the decision is printed in the run's summary)."""
    line, problems = assessment.check_evidence(name)
    record_property("evidence", line)
    assert not problems, f"{line}\n" + "\n".join(problems)


def test_each_assignments_evidence_depends_on_its_own_files_only():
    """Changing one assignment's solution or fixtures re-measures that assignment's evidence and only that."""
    for name in ASSIGNMENTS:
        inputs = assessment.evidence_inputs(name, "grading")
        own = [k for k in inputs if k.startswith(("solutions/", "tests/assessment/"))]
        assert sorted(own) == [f"solutions/{name}/{name}.ipynb", f"tests/assessment/{name}.py"], own
        assert "dgmcourse/grading/runner.py" in inputs and "nbgrader_config.py" in inputs
        assert set(assessment.evidence_inputs(name, "reference")) < set(inputs)


@pytest.mark.assessment
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_twenty_seed_reference_runs_are_current(name):
    report = read_report("assessment").get("assignments", {}).get(name)
    problem = assessment.reference_evidence_problem(name, report)
    assert problem is None, problem


@pytest.mark.assessment
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_visible_tests_catch_half_of_each_functions_mistakes(name):
    """What a student learns before submitting: for every graded function, the release's visible tests alone
    catch >= 50 % of the fixture's mistakes (benchmarks/assessment.py --visible-only, measured on the
    assignment's current grading inputs; calls of the library's own answer are told, not tested)."""
    refresh = f".venv/bin/python benchmarks/assessment.py -k {name} --visible-only"
    entry = read_report("assessment").get("assignments", {}).get(name, {}).get("visible")
    assert entry, f"{name}: no visible-test measurement; run {refresh}"
    assert entry["digest"] == assessment.evidence_digest(assessment.evidence_inputs(name, "grading")), \
        f"{name}: the visible-test measurement predates the assignment's current notebook or fixtures; run {refresh}"
    _, mistakes = assessment.load_fixtures(name)
    assert entry["mistakes"] == sorted(m.name for m in mistakes)
    tested = {m.test for m in mistakes if not assessment.calls_library_answer(m)}
    assert set(entry["by_test"]) == tested
    low = {test: f"{r['caught']}/{r['mistakes']}, missed {r['uncaught']}"
           for test, r in entry["by_test"].items() if r["rate"] < 0.5}
    assert not low, f"{name}: visible tests catch under half of these functions' mistakes: {low}"


# --- the checks themselves, on small notebooks with known answers -----------------------------
def _nb(*cells):
    def cell(kind, source, **meta):
        make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        return make(source, metadata={"nbgrader": {"schema_version": 3, **meta}} if meta else {})
    return nbformat.v4.new_notebook(cells=[cell(*c[:2], **(c[2] if len(c) > 2 else {})) for c in cells])


INTRO = ("# Assignment 0 — Toy (5 points)\n\n1. `f` (3 points)\n2. Written (2 points)\n\n"
         "**Time to plan:** 1 h.\n**Imports:** numpy.\n`dgmcourse.toy.f` is not an answer.")
SCHEME = ("**(a)** (2 points) Why?\n\n### BEGIN MARK SCHEME\n**Rubric (2 points).** ...\n\n"
          "**Model answer.** ...\n\n**Partial answers.** ...\n### END MARK SCHEME")


def _toy(test_points=3, intro=INTRO, scheme=SCHEME, seed="SEED + 1"):
    return _nb(("md", intro),
               ("code", "import numpy as np\nSEED = 0\nrng = np.random.default_rng(SEED)",
                dict(grade_id="setup", locked=True)),
               ("md", "## 1. f (3 points)"),
               ("code", "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                dict(grade_id="f", solution=True)),
               ("code", "sample = rng.normal(size=10)", dict(grade_id="draw", locked=True)),
               ("code", f"assert f(1) == 2\nassert np.isfinite(sample).all()\ng = np.random.default_rng({seed})",
                dict(grade_id="test_f", grade=True, locked=True, points=test_points)),
               ("code", "assert f(0) == 0", dict(grade_id="test_f0", grade=True, locked=True, points=0)),
               ("md", "## 2. Written (2 points)"),
               ("md", scheme, dict(grade_id="why", task=True, locked=True, points=2)),
               ("md", "YOUR ANSWER HERE"))


def test_points_problems_finds_disagreeing_headers():
    assert assessment.points_problems(_toy()) == []
    problems = assessment.points_problems(_toy(test_points=4))
    assert problems == ["title '# Assignment 0 — Toy (5 points)' states 5 points, graded cells hold 6",
                        "'## 1. f (3 points)' states 3 points, its graded cells hold 4"]
    swapped = INTRO.replace("(3 points)\n2. Written (2 points)", "(2 points)\n2. Written (3 points)")
    assert assessment.points_problems(_toy(intro=swapped)) == [
        "the introduction lists points [2.0, 3.0], the parts state [3.0, 2.0]"]


def test_rubric_problems_requires_mark_schemes_and_intro_rules():
    assert assessment.rubric_problems(_toy()) == []
    bare = _toy(scheme="**(a)** (2 points) Why?", intro=INTRO.split("\n\n**Time")[0])
    assert assessment.rubric_problems(bare) == [
        "why: mark scheme lacks **Rubric, **Model answer, **Partial answers",
        "introduction lacks '**Time to plan:**'", "introduction lacks '**Imports:**'",
        "introduction lacks 'is not an answer'"]


def test_stochastic_tests_follow_random_draws_through_names():
    nb = _toy()
    assert assessment.stochastic_tests(nb) == {"test_f": ["draw", "setup", "test_f"]}
    assert assessment.seed_problems(nb) == []
    assert assessment.seed_problems(_toy(seed="7")) == [
        "test_f: test_f seeds with 'default_rng(7)'; use SEED + k"]


def test_scope_problems_finds_names_only_a_test_cell_bound():
    nb = _toy()
    assert assessment.scope_problems(nb) == []
    nb.cells[6].source = "import math\nassert f(0) == 0 and g.random() < 1"   # g: bound by test_f only
    nb.cells.append(nbformat.v4.new_code_cell("y = math.pi + f(1)", metadata={"nbgrader": {"grade_id": "late"}}))
    assert assessment.scope_problems(nb) == [
        "test_f0 reads 'g', which only a test cell bound before it",
        "late reads 'math', which only a test cell bound before it"]
    nb.cells.insert(7, nbformat.v4.new_code_cell("import math"))               # bound by a plain cell too
    assert assessment.scope_problems(nb) == ["test_f0 reads 'g', which only a test cell bound before it"]


def test_submission_answers_every_solution_cell():
    source = _toy()
    release = nbformat.from_dict(source)
    release.cells[3].source = "def f(x):\n    raise NotImplementedError()"
    assert assessment.submission(source, release).cells[3].source == "def f(x):\n    return 2 * x\n"
    other = assessment.submission(source, release, {"f": "f = lambda x: x + x"})
    assert other.cells[3].source == "f = lambda x: x + x" and release.cells[3].source.endswith("Error()")
    with pytest.raises(ValueError, match="overrides: \\['draw'\\] are not solution cells"):
        assessment.submission(source, release, {"draw": "pass"})
    assert assessment.cell_digest(source, "f") == hashlib.sha256(source.cells[3].source.encode()).hexdigest()[:16]
    with pytest.raises(ValueError, match="no cell 'nope'"):
        assessment.cell_digest(source, "nope")


# --- evidence digests and the cached evidence, on a toy course -------------------------------------
TOY_LIBRARY = '''"""A toy library module."""


def double(x):
    """Twice x."""
    return helper(x)


def helper(x):
    return 2 * x


def unused():
    return 0
'''
TOY_FIXTURES = '''from dgmcourse.assessment import Mistake

ALTERNATIVES = {"plus": {"f": "def f(x):\\n    return x + x"}, "times": {"f": "def f(x):\\n    return x * 2"}}
MISTAKES = [Mistake("zero", "test_f", {"f": "def f(x):\\n    return 0"}),
            Mistake("one", "test_f", {"f": "def f(x):\\n    return 1"})]
'''


def _toy_course(tmp_path):
    root = tmp_path / "course"
    for folder in ("dgmcourse/grading", "tests/assessment", "solutions/a0_toy"):
        (root / folder).mkdir(parents=True)
    (root / "dgmcourse" / "__init__.py").write_text('"""The package."""\n')
    (root / "dgmcourse" / "grading" / "__init__.py").write_text("")
    (root / "dgmcourse" / "assessment.py").write_text("")
    (root / "dgmcourse" / "toy.py").write_text(TOY_LIBRARY)
    (root / "nbgrader_config.py").write_text("c = get_config()\n")
    (root / "requirements.txt").write_text("# the pins\ntorch==2.14.1\n")
    (root / "tests" / "assessment" / "a0_toy.py").write_text(TOY_FIXTURES)
    nb = _toy()
    nb.cells[1].source = "from dgmcourse.toy import double\n" + nb.cells[1].source
    nbformat.write(nb, root / "solutions" / "a0_toy" / "a0_toy.ipynb")
    return root


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_evidence_inputs_follow_meaning_not_layout(tmp_path):
    root = _toy_course(tmp_path)
    notebook, library = root / "solutions" / "a0_toy" / "a0_toy.ipynb", root / "dgmcourse" / "toy.py"

    def digest(kind="reference"):
        return assessment.evidence_digest(assessment.evidence_inputs("a0_toy", kind, root))

    reference, grading = assessment.evidence_inputs("a0_toy", "reference", root), \
        assessment.evidence_inputs("a0_toy", "grading", root)
    assert sorted(reference) == ["dgmcourse/__init__.py", "dgmcourse/toy.py", "requirements.txt",
                                 "solutions/a0_toy/a0_toy.ipynb"]
    assert sorted(set(grading) - set(reference)) == ["dgmcourse/assessment.py", "dgmcourse/grading/__init__.py",
                                                     "nbgrader_config.py", "tests/assessment/a0_toy.py"]
    before = digest()
    _edit(library, '    """Twice x."""\n    return helper(x)', "    return helper(  x )  # a comment")
    _edit(library, "return 0", "return 1")                       # a function nothing reaches
    _edit(root / "requirements.txt", "# the pins", "# pins, reworded")
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[2].source += " (reworded)"                            # markdown
    nb.cells[3].source = nb.cells[3].source.replace("return 2 * x", "return 2*x  # same")
    nbformat.write(nb, notebook)
    assert digest() == before
    _edit(library, "return 2 * x", "return x + x")                # reached through double()
    changed = assessment.evidence_inputs("a0_toy", "reference", root)
    assert [k for k in changed if changed[k] != reference[k]] == ["dgmcourse/toy.py"]
    for edit in (lambda c: setattr(c[5], "source", c[5].source + "\nassert f(2) == 4"),
                 lambda c: c[5].metadata.nbgrader.__setitem__("points", 4)):
        current = digest()
        nb = nbformat.read(notebook, as_version=4)
        edit(nb.cells)
        nbformat.write(nb, notebook)
        assert digest() != current
    current, grading_before = digest(), digest("grading")
    _edit(root / "tests" / "assessment" / "a0_toy.py", "return 0", "return -1")
    assert digest() == current and digest("grading") != grading_before
    _edit(root / "requirements.txt", "torch==2.14.1", "torch==2.14.2")
    assert digest() != current
    with pytest.raises(ValueError, match="kind must be one of"):
        assessment.evidence_inputs("a0_toy", "everything", root)


def test_check_evidence_samples_when_unchanged_and_remeasures_when_stale(tmp_path, monkeypatch):
    root, store = _toy_course(tmp_path), tmp_path / "evidence"
    calls, kept = [], set()

    def grade_variants(name, submissions, root, jobs, smoke):
        calls.append(("grade", sorted(submissions)))
        full = {"test_f": (3.0, 3.0), "test_f0": (0.0, 0.0)}
        return {k: {"status": "graded", "scores": {**full, "test_f": (0.0, 3.0)}}
                if k.startswith("mistake-") and k not in kept else {"status": "graded", "scores": full}
                for k in submissions}

    def reference_run(name, seed, threads, smoke, root):
        calls.append(("run", seed, threads))
        return {"passed": {"test_f": True, "test_f0": True}, "errors": []}

    def autograde_plain(name, root):
        calls.append(("plain",))
        return {"solution_full": {"test_f": True, "test_f0": True}, "release_zero": {"test_f": True, "test_f0": True}}

    monkeypatch.setattr(assessment, "grade_variants", grade_variants)
    monkeypatch.setattr(assessment, "reference_run", reference_run)
    monkeypatch.setattr(assessment, "autograde_plain", autograde_plain)
    path = store / "a0_toy.json"
    line, problems = assessment.check_evidence("a0_toy", root, store)
    assert problems == [] and line.startswith("a0_toy: stale (changed: nothing stored)") and line.endswith("stored")
    assert calls == [("grade", ["alt-plus", "alt-times", "mistake-one", "mistake-zero", "reference"]),
                     ("run", 1, 1), ("run", 2, 1), ("run", 3, 1), ("plain",)]
    stored = path.read_text()
    calls.clear()
    line, problems = assessment.check_evidence("a0_toy", root, store)
    assert problems == [] and line.startswith("a0_toy: unchanged") and line.endswith("as stored")
    sampled = calls[0][1]
    assert calls[0][0] == "grade" and len(calls) == 2 and len(sampled) == 2 * assessment.EVIDENCE_SAMPLE == 2
    assert sampled[0] in ("alt-plus", "alt-times") and sampled[1] in ("mistake-one", "mistake-zero")
    assert calls[1][0] == "run" and calls[1][1:] in assessment.CI_RUNS
    kept.update({"mistake-one", "mistake-zero"})                  # the pipeline now lets the mistakes pass
    calls.clear()
    line, problems = assessment.check_evidence("a0_toy", root, store)
    assert "DIFFERS" in line and [p.split(":")[0] for p in problems] == [calls[0][1][1]]
    _edit(root / "dgmcourse" / "toy.py", "return 2 * x", "return x + x")
    line, problems = assessment.check_evidence("a0_toy", root, store)
    assert line.startswith("a0_toy: stale (changed: dgmcourse/toy.py)") and line.endswith("NOT stored")
    assert problems == ["mistake one kept its points", "mistake zero kept its points"] and path.read_text() == stored


def test_reference_evidence_problem_names_the_refresh_command(tmp_path):
    root = _toy_course(tmp_path)
    inputs = assessment.evidence_inputs("a0_toy", "reference", root)
    report = {"reference": {"digest": assessment.evidence_digest(inputs), "inputs": inputs, "seeds": [0, 19],
                            "tests": {"test_f": {"runs": 80, "passed": 80}}}}
    command = "run .venv/bin/python benchmarks/assessment.py -k a0_toy --reference-only"
    assert assessment.reference_evidence_problem("a0_toy", report, root) is None
    assert assessment.reference_evidence_problem("a0_toy", None, root) == \
        f"a0_toy: no 20-seed reference runs recorded with a digest: {command}"
    report["reference"]["tests"]["test_f"]["passed"] = 79
    assert assessment.reference_evidence_problem("a0_toy", report, root) == \
        f"a0_toy: 20-seed reference runs below target (failed: ['test_f'], missing: []): {command}"
    _edit(root / "dgmcourse" / "toy.py", "return 2 * x", "return x + x")
    assert assessment.reference_evidence_problem("a0_toy", report, root) == \
        f"a0_toy: the 20-seed reference runs are stale (changed: dgmcourse/toy.py): {command}"


@pytest.mark.assessment
def test_visible_run_runs_the_release_up_to_its_test(tmp_path):
    nb = _toy()
    for folder in ("solutions/a0_toy", "assignments/a0_toy"):
        (tmp_path / folder).mkdir(parents=True)
        nbformat.write(nb, tmp_path / folder / "a0_toy.ipynb")

    def visible(source, test):
        return assessment.visible_run("a0_toy", {"f": source} if source else {}, test, smoke=True, root=tmp_path)

    assert visible(None, "test_f") and visible(None, "test_f0")
    assert not visible("def f(x):\n    return 3 * x", "test_f")
    wrong_at_zero = "def f(x):\n    return 2 * x + (x == 0)"          # f(1) = 2 right, f(0) = 1 wrong
    assert visible(wrong_at_zero, "test_f") and not visible(wrong_at_zero, "test_f0")
    assert not visible("def f(x):\n    raise ValueError", "test_f")
    with pytest.raises(ValueError, match="test"):
        visible(None, "f")


def test_calls_library_answer_reads_the_fixtures_description():
    told = assessment.Mistake("lib", "test_f", {}, "calls dgmcourse.toy.f (not an answer: the grader gives no points)")
    assert assessment.calls_library_answer(told)
    assert not assessment.calls_library_answer(assessment.Mistake("sign", "test_f", {}, "the sign flipped"))


def test_a9_part_5_prints_the_measured_range_of_its_flow():
    """The range a9's ungraded RealNVP cell prints is benchmarks/reports/a9_ring_flow.json's, rounded outwards."""
    import re
    cell = next(c.source for c in _source("a9_flows_diffusion").cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "demo_flow")
    stated = re.search(r"low, high = \((\S+), (\S+)\) if SMOKE else \((\S+), (\S+)\)", cell)
    assert stated, "the cell must set low, high = (smoke range) if SMOKE else (full range)"
    report = read_report("a9_ring_flow")
    for (low, high), mode in zip((stated.group(1, 2), stated.group(3, 4)), ("smoke", "full")):
        lo, hi = report[mode]["test_nll_range"]
        assert float(low) == math.floor(lo * 10) / 10 and float(high) == math.ceil(hi * 10) / 10, (mode, lo, hi)
