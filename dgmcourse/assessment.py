"""Testing the tests: does an assignment's grading give full marks to every correct answer,
take points for common mistakes, and pass the reference solution on every seed?

An autograder is only as good as its tests. For each assignment ``aN_name`` the course keeps
a fixture module ``tests/assessment/aN_name.py`` with

* ``ALTERNATIVES``: ``{variant name: {solution cell grade_id: cell source}}`` -- independently
  written correct answers (other algorithms, other libraries); each must earn full marks;
* ``MISTAKES``: a list of :class:`Mistake` -- realistic wrong answers; each must lose the
  points of the test cell it names.

:func:`grade_variants` grades such submissions through the course's real pipeline
(:func:`dgmcourse.grading.grade`: nbgrader's autograder in the sandbox). :func:`reference_run`
executes the solution notebook on another seed (``DGMCOURSE_SEED``) and thread count and says
which graded tests passed: graded tests of training and sampling (:func:`stochastic_tests`)
must pass on every seed. The static checks (:func:`points_problems`, :func:`rubric_problems`,
:func:`seed_problems`) keep headers, points, rubrics and seeds consistent.
``benchmarks/assessment.py`` writes the figures to ``benchmarks/reports/assessment.json``;
``tests/test_assessment.py`` runs the same checks in CI.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_REGION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)
MARK_SCHEME = re.compile(r"### BEGIN MARK SCHEME\n(.*?)### END MARK SCHEME", re.S)
POINTS = re.compile(r"\((\d+(?:\s*\+\s*\d+)*)\s+points?\b")
# Drawing random numbers or taking optimiser steps: a test that reads such a value is stochastic.
STOCHASTIC = re.compile(
    r"\.step\(|\btorch\.(randn|rand|randint|randperm|bernoulli|multinomial|normal)\b|"
    r"\.(rvs|integers|uniform|standard_normal|normal|choice|permutation|shuffle|random)\(|"
    r"\b(default_rng|Generator|manual_seed|seed_everything|randn|rand|bernoulli)\(")
LITERAL_SEED = re.compile(r"\b(manual_seed|default_rng|seed_everything)\(\s*\d+\s*\)|"
                          r"random_state\s*=\s*\d+")


@dataclass(frozen=True)
class Mistake:
    """A realistic wrong answer and the graded test cell that must catch it.

    Attributes:
        name: short identifier, e.g. ``"kl_sign"`` (letters, digits, ``_``).
        test: grade_id of the test cell that must lose (some of) its points.
        replaces: ``{solution cell grade_id: full cell source}`` of the wrong answer.
        description: what the student got wrong, in words.
    """

    name: str
    test: str
    replaces: dict = field(default_factory=dict)
    description: str = ""


# --- notebooks ------------------------------------------------------------------------------
def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def solution_cells(nb) -> list[str]:
    """grade_ids of the code cells students write (nbgrader solution cells), in order."""
    return [_meta(c)["grade_id"] for c in nb.cells
            if c.cell_type == "code" and _meta(c).get("solution")]


def graded_cells(nb) -> dict[str, float]:
    """``{grade_id: points}`` of every graded cell: autograder tests, answers and tasks."""
    return {_meta(c)["grade_id"]: float(_meta(c)["points"]) for c in nb.cells
            if _meta(c).get("grade") or _meta(c).get("task")}


def test_cells(nb) -> dict[str, float]:
    """``{grade_id: points}`` of the autograder test cells (code cells with points)."""
    return {_meta(c)["grade_id"]: float(_meta(c)["points"]) for c in nb.cells
            if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")}


def reference_source(nb, grade_id: str) -> str:
    """The source notebook's cell ``grade_id`` with its solution delimiters removed."""
    for cell in nb.cells:
        if _meta(cell).get("grade_id") == grade_id:
            return SOLUTION_REGION.sub("", cell.source)
    raise ValueError(f"grade_id: no cell {grade_id!r} in the notebook")


def submission(source_nb, release_nb, overrides: dict | None = None):
    """A student submission: the release with every solution cell answered.

    Args:
        source_nb: the instructor's source notebook (solutions and hidden tests).
        release_nb: the student release of the same notebook.
        overrides: ``{solution grade_id: source}`` answered differently from the reference.

    Returns:
        A new notebook; cells not in ``overrides`` carry the reference solution.

    Raises:
        ValueError: an override names a cell that is not a solution cell.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(solution_cells(source_nb))
    if unknown:
        raise ValueError(f"overrides: {sorted(unknown)} are not solution cells of the notebook")
    nb = nbformat.from_dict(release_nb)
    for cell in nb.cells:
        grade_id = _meta(cell).get("grade_id")
        if cell.cell_type == "code" and _meta(cell).get("solution"):
            cell.source = overrides.get(grade_id, reference_source(source_nb, grade_id))
    return nb


def _names(tree: ast.AST, kind) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, kind):
            out.add(node.id)
        elif kind is ast.Store and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
    return out


def _parse(source: str) -> ast.AST:
    """The AST of Python code or a code cell; in a cell that is not plain Python, each IPython magic or
    shell line (``%pip``, ``!ls``) is read as ``pass``."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return ast.parse("\n".join(line[:len(line) - len(line.lstrip())] + "pass"
                                   if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()))


def stochastic_tests(nb) -> dict[str, list[str]]:
    """Graded test cells whose outcome depends on random draws or training.

    A test cell is stochastic when it draws random numbers or takes optimiser steps itself, or
    reads a name bound by an earlier code cell that does (``SEED``-derived draws included).

    Returns:
        ``{test grade_id: [grade_ids of the cells it depends on, itself last]}``.
    """
    bound_by: dict[str, str] = {}       # name -> grade_id (or index) of the last cell binding it
    stochastic_cells: set[str] = set()
    result = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell_id = _meta(cell).get("grade_id", f"cell{index}")
        tree = _parse(cell.source)
        reads = _names(tree, ast.Load) - _names(tree, ast.Store)   # names the cell binds are its own
        sources = [bound_by[name] for name in sorted(reads) if name in bound_by]
        is_test = _meta(cell).get("grade") and not _meta(cell).get("solution")
        draws = bool(STOCHASTIC.search(cell.source))
        if is_test and (draws or any(s in stochastic_cells for s in sources)):
            result[cell_id] = sorted({s for s in sources if s in stochastic_cells}) + [cell_id]
        if draws or any(s in stochastic_cells for s in sources):
            stochastic_cells.add(cell_id)
        for name in _names(tree, ast.Store):
            bound_by[name] = cell_id
    return result


def cell_digest(nb, grade_id: str) -> str:
    """sha256 (hex, 16 characters) of a cell's source: ties a report entry to a test's text."""
    for cell in nb.cells:
        if _meta(cell).get("grade_id") == grade_id:
            return hashlib.sha256(cell.source.encode()).hexdigest()[:16]
    raise ValueError(f"grade_id: no cell {grade_id!r} in the notebook")


# --- static checks ----------------------------------------------------------------------------
def _stated(text: str) -> float | None:
    match = POINTS.search(text)
    return None if match is None else float(sum(int(p) for p in match.group(1).split("+")))


def points_problems(nb) -> list[str]:
    """Headers that disagree with the graded cells' points.

    Rules: the first cell's title states the total; its numbered list states each part's points
    in the order of the parts; each ``## `` heading states the points of the graded cells up to
    the next ``## `` heading; any other line stating ``(N points)`` states the points of the
    graded cells up to the next such statement. Returns one message per disagreement.
    """
    problems = []
    intro, cells = nb.cells[0], nb.cells[1:]
    total = sum(graded_cells(nb).values())
    title = intro.source.splitlines()[0]
    if _stated(title) != total:
        stated = "no" if _stated(title) is None else f"{_stated(title):g}"
        problems.append(f"title {title!r} states {stated} points, graded cells hold {total:g}")
    listed = [_stated(line) for line in intro.source.splitlines()
              if re.match(r"\s*\d+\.\s", line) and _stated(line) is not None]
    parts, subs = [], []   # [label, stated, counted]
    for cell in cells:
        if cell.cell_type == "markdown":
            for line in cell.source.split("### BEGIN MARK SCHEME")[0].splitlines():
                stated = _stated(line)
                if line.startswith("## "):
                    parts.append([line.strip(), stated, 0.0])
                    subs.append([line.strip(), None, 0.0])
                elif stated is not None:
                    subs.append([line.strip()[:60], stated, 0.0])
        if _meta(cell).get("grade") or _meta(cell).get("task"):
            points = float(_meta(cell)["points"])
            if not parts:
                problems.append(f"graded cell {_meta(cell)['grade_id']} comes before any ## part")
                continue
            parts[-1][2] += points
            subs[-1][2] += points
    for label, stated, counted in parts + subs:
        if stated is not None and stated != counted:
            problems.append(f"{label!r} states {stated:g} points, its graded cells hold {counted:g}")
    graded_parts = [stated for _, stated, counted in parts if counted]
    if listed != graded_parts:
        problems.append(f"the introduction lists points {listed}, the parts state {graded_parts}")
    return problems


def rubric_problems(nb) -> list[str]:
    """Written answers without a rubric, and introductions without the assignment's rules.

    Every written (manually graded) question is an nbgrader task cell whose mark scheme
    (``### BEGIN MARK SCHEME`` ... ``### END MARK SCHEME``: shown to graders, removed from the
    release and the feedback) holds a ``**Rubric**``, a ``**Model answer**`` and
    ``**Partial answers**``; markdown answer cells graded by hand are not used. The introduction
    states the time to plan, what may be imported, and that the course library's implementation
    of a graded task is not an answer.
    """
    problems = []
    for cell in nb.cells:
        meta = _meta(cell)
        if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
            problems.append(f"{meta['grade_id']}: a written answer cell; make the question a task "
                            "cell with a mark scheme")
        if meta.get("task"):
            scheme = MARK_SCHEME.search(cell.source)
            missing = [k for k in ("**Rubric", "**Model answer", "**Partial answers")
                       if scheme is None or k not in scheme.group(1)]
            if missing:
                problems.append(f"{meta['grade_id']}: mark scheme lacks {', '.join(missing)}")
    intro = nb.cells[0].source
    for needle in ("**Time to plan:**", "**Imports:**", "is not an answer"):
        if needle not in intro:
            problems.append(f"introduction lacks {needle!r}")
    return problems


def seed_problems(nb) -> list[str]:
    """Literal seeds in stochastic tests or the cells they depend on (derive them from SEED)."""
    problems = []
    cells = {_meta(c).get("grade_id", f"cell{i}"): c for i, c in enumerate(nb.cells)}
    for test, depends in stochastic_tests(nb).items():
        for cell_id in depends:
            for match in LITERAL_SEED.finditer(cells[cell_id].source):
                problems.append(f"{test}: {cell_id} seeds with {match.group(0)!r}; use SEED + k")
    return sorted(set(problems))


def _bound(tree: ast.AST) -> set[str]:
    """Names a cell binds: assignments, definitions, parameters and imports."""
    names = _names(tree, ast.Store)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def scope_problems(nb) -> list[str]:
    """Names a code cell reads that, before it, only graded test cells bound.

    When graded, each test cell runs in a copy of the notebook's namespace (the harness scores
    it apart from student code), so what a test cell binds never reaches later cells: such a
    read runs in Jupyter and fails in grading, for every student.
    """
    only_in_tests, elsewhere, problems = set(), set(), []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree, cell_id = _parse(cell.source), _meta(cell).get("grade_id", f"cell{index}")
        bound = _bound(tree)
        for name in sorted((_names(tree, ast.Load) - bound) & only_in_tests):
            problems.append(f"{cell_id} reads {name!r}, which only a test cell bound before it")
        if _meta(cell).get("grade") and not _meta(cell).get("solution"):
            only_in_tests |= bound - elsewhere
        else:
            elsewhere |= bound
            only_in_tests -= bound
    return problems


# --- fixtures and grading ---------------------------------------------------------------------
def load_fixtures(assignment: str, folder: str | Path = ROOT / "tests" / "assessment"):
    """``(ALTERNATIVES, MISTAKES)`` from ``folder/<assignment>.py``.

    Raises:
        ValueError: the module is missing or lacks either name.
    """
    path = Path(folder) / f"{assignment}.py"
    if not path.is_file():
        raise ValueError(f"assignment: no fixture module {path}")
    spec = importlib.util.spec_from_file_location(f"assessment_{assignment}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "ALTERNATIVES") or not hasattr(module, "MISTAKES"):
        raise ValueError(f"{path} must define ALTERNATIVES and MISTAKES")
    return module.ALTERNATIVES, module.MISTAKES


def notebooks(assignment: str, root: str | Path = ROOT) -> list[Path]:
    """The source notebooks ``solutions/<assignment>/*.ipynb``.

    Raises:
        ValueError: no such assignment.
    """
    found = sorted((Path(root) / "solutions" / assignment).glob("*.ipynb"))
    if not found:
        raise ValueError(f"assignment: no notebook in {Path(root) / 'solutions' / assignment}")
    return found


def variants(assignment: str, root: str | Path = ROOT) -> dict[str, dict]:
    """``{student id: overrides}``: the reference, each alternative and each mistake."""
    alternatives, mistakes = load_fixtures(assignment, Path(root) / "tests" / "assessment")
    out = {"reference": {}}
    out.update({f"alt-{name}": cells for name, cells in alternatives.items()})
    out.update({f"mistake-{m.name}": m.replaces for m in mistakes})
    return out


def _course(assignment: str, root: Path, work: Path) -> Path:
    course = work / "course"
    course.mkdir(parents=True)
    shutil.copy(root / "nbgrader_config.py", course)
    shutil.copytree(root / "solutions" / assignment, course / "solutions" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")])}
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", assignment,
                             "--force"], cwd=course, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.stderr}")
    return course


def grade_variants(assignment: str, submissions: dict[str, dict], root: str | Path = ROOT,
                   jobs: int = 2, smoke: bool = True, unsafe: bool | None = None) -> dict:
    """Grade submissions built by :func:`submission` through ``dgmcourse grade``'s pipeline.

    Args:
        assignment: e.g. ``"a1_vae"``.
        submissions: ``{student id: overrides}`` (see :func:`variants`); one notebook per
            assignment is supported.
        root: course root holding ``solutions/`` and ``nbgrader_config.py``.
        jobs: parallel grading jobs.
        smoke: grade with ``DGMCOURSE_SMOKE=1`` (the tests) or in full mode (the benchmark).
        unsafe: grade without bubblewrap; default: only when bubblewrap is missing.

    Returns:
        ``{student id: {"status": str, "scores": {grade_id: (auto_score, max_score)}}}`` for the
        autograded test cells; a cell that could not run scores 0.

    Raises:
        ValueError: the assignment has several notebooks, or an override is not a solution cell.
    """
    from dgmcourse import grading
    root = Path(root)
    paths = notebooks(assignment, root)
    if len(paths) != 1:
        raise ValueError(f"assignment: {assignment} has {len(paths)} notebooks, expected one")
    source_path = paths[0]
    source = nbformat.read(source_path, as_version=4)
    unsafe = (not grading.bwrap_available()) if unsafe is None else unsafe
    work = Path(tempfile.mkdtemp(prefix=f"dgmcourse-assess-{assignment}-"))
    previous = os.environ.get("DGMCOURSE_SMOKE")
    try:
        course = _course(assignment, root, work)
        release = nbformat.read(course / "assignments" / assignment / source_path.name, as_version=4)
        for student, overrides in submissions.items():
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True)
            nbformat.write(submission(source, release, overrides), folder / source_path.name)
        os.environ["DGMCOURSE_SMOKE"] = "1" if smoke else ""
        results = grading.grade(course, assignment, list(submissions), jobs=jobs,
                                policy=grading.Policy(unsafe=unsafe), progress=False)
    finally:
        if previous is None:
            os.environ.pop("DGMCOURSE_SMOKE", None)
        else:
            os.environ["DGMCOURSE_SMOKE"] = previous
        shutil.rmtree(work, ignore_errors=True)
    tests = test_cells(source)
    out = {}
    for result in results:
        grades = result.notebooks.get(source_path.stem, {}).get("grades", {})
        out[result.student] = {
            "status": result.status,
            "scores": {gid: (float(grades.get(gid, {}).get("auto_score") or 0.0), points)
                       for gid, points in tests.items()}}
    return out


def autograde_plain(assignment: str, root: str | Path = ROOT) -> dict:
    """The formgrader's route on the real assignment: plain ``nbgrader autograde`` (the sandboxed
    pipeline of ``nbgrader_config.py``) of the solution notebook and of the untouched release, in a
    temporary copy of the course, smoke mode.

    Returns:
        ``{"solution_full": {test grade_id: full marks?}, "release_zero": {test grade_id: scored 0?}}``
        for the autograder test cells.

    Raises:
        RuntimeError: nbgrader failed (its error output in the message).
    """
    from nbgrader.api import Gradebook
    root = Path(root)
    source = notebooks(assignment, root)[0]
    tests = test_cells(nbformat.read(source, as_version=4))
    with tempfile.TemporaryDirectory(prefix=f"dgmcourse-plain-{assignment}-") as work:
        course = _course(assignment, root, Path(work))
        for student, folder in (("solution", course / "solutions" / assignment),
                                ("release", course / "assignments" / assignment)):
            shutil.copytree(folder, course / "submitted" / student / assignment)
        env = {**os.environ, "DGMCOURSE_SMOKE": "1",
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        result = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", assignment, "--force"],
                                cwd=course, env=env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"nbgrader autograde {assignment} failed:\n{result.stderr[-3000:]}")
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            scores = {student: {gid: gb.find_grade(gid, source.stem, assignment, student).score for gid in tests}
                      for student in ("solution", "release")}
    return {"solution_full": {gid: scores["solution"][gid] == points for gid, points in sorted(tests.items())},
            "release_zero": {gid: scores["release"][gid] == 0 for gid in sorted(tests)}}


def judge(assignment: str, graded: dict, root: str | Path = ROOT) -> dict:
    """Compare graded variants with what the fixtures expect.

    Returns:
        ``{"alternatives": {name: [cells short of full marks]}, "mistakes": {name: caught?},
        "reference": [cells short of full marks]}``.
    """
    alternatives, mistakes = load_fixtures(assignment, Path(root) / "tests" / "assessment")

    def short(student):
        return sorted(gid for gid, (score, points) in graded[student]["scores"].items()
                      if score < points)

    return {"reference": short("reference"),
            "alternatives": {name: short(f"alt-{name}") for name in alternatives},
            "mistakes": {m.name: graded[f"mistake-{m.name}"]["scores"][m.test][0]
                         < graded[f"mistake-{m.name}"]["scores"][m.test][1] for m in mistakes}}


def fixture_problems(assignment: str, root: str | Path = ROOT) -> list[str]:
    """Fixture coverage: >= 2 alternatives for every solution cell, >= 2 mistakes for every
    autograder test cell, and every name referring to a real cell."""
    root = Path(root)
    source = nbformat.read(notebooks(assignment, root)[0], as_version=4)
    alternatives, mistakes = load_fixtures(assignment, root / "tests" / "assessment")
    problems = []
    for cell in solution_cells(source):
        count = sum(cell in overrides for overrides in alternatives.values())
        if count < 2:
            problems.append(f"{cell}: {count} alternative(s), need 2")
    tests = test_cells(source)
    for test in tests:
        count = sum(m.test == test for m in mistakes)
        if count < 2:
            problems.append(f"{test}: {count} mistake(s), need 2")
    for m in mistakes:
        if m.test not in tests:
            problems.append(f"mistake {m.name}: {m.test!r} is not a test cell")
        if not m.replaces:
            problems.append(f"mistake {m.name}: replaces no cell")
    names = [m.name for m in mistakes]
    problems += [f"mistake {n}: named twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return problems


# --- evidence digests ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _semantic(source: str) -> str:
    """A Python source's meaning without its layout: the AST with docstrings dropped, so comments,
    line breaks, semicolons and docstrings do not change it."""
    tree = _parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def _notebook_semantic(path: Path) -> str:
    """The code cells' ASTs and every cell's nbgrader metadata: what can change a grade."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        meta = json.dumps(_meta(cell), sort_keys=True)
        parts.append(f"{cell.cell_type} {meta} " + (_semantic(cell.source) if cell.cell_type == "code" else ""))
    return "\n".join(parts)


@functools.lru_cache(maxsize=None)
def _library_imports(source: str) -> frozenset[str]:
    """``dgmcourse`` modules (dotted names) a Python source imports, relative imports resolved
    as inside the package's top level."""
    found = set()
    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dgmcourse"}
        elif isinstance(node, ast.ImportFrom):
            module = ("dgmcourse." if node.level else "") + (node.module or "")
            module = module.rstrip(".") or "dgmcourse"
            if module.split(".")[0] == "dgmcourse":
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}   # `from dgmcourse import vae`
    return frozenset(found)


def _module_path(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def library_closure(sources: list[str], root: str | Path = ROOT) -> list[Path]:
    """Every ``dgmcourse`` module file the sources import, directly or through each other (with
    the packages' ``__init__.py`` files on the way), sorted."""
    root = Path(root)
    todo = set().union(*(_library_imports(s) for s in sources)) | {"dgmcourse"}
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):        # dgmcourse, dgmcourse.grading, ...: run on import
            prefix = ".".join(parts[:k])
            path = _module_path(root, prefix)
            if path is not None and prefix not in seen:
                seen[prefix] = path
                todo |= _library_imports(path.read_text())
    return sorted(set(seen.values()))


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _identifiers(tree: ast.AST) -> set[str]:
    """Names a piece of code may reach: names, attributes, imported names and identifier-like
    strings (``getattr(module, "name")``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
            found.add(node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and IDENTIFIER.match(node.value):
            found.add(node.value)
    return found


def _defined_names(stmt: ast.stmt) -> list[str]:
    """The names a top-level definition binds (functions, classes, imports, ``NAME = ...``); [] for
    other statements, which run on import whatever is used."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)) and not any(a.name == "*" for a in stmt.names):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else []
    if targets and all(isinstance(t, ast.Name) for t in targets):
        return [t.id for t in targets]
    return []


def used_definitions(sources: list[str], root: str | Path = ROOT) -> dict[Path, str]:
    """The parts of the ``dgmcourse`` modules that code can run, by meaning (AST, docstrings dropped).

    Of each module in :func:`library_closure`, every top-level statement that is not a function or
    class definition (it runs on import), and the definitions the sources reach: transitively,
    any definition whose name the sources or a reached part mention (as a name, an attribute or an
    identifier-like string) is reached. A name shared by definitions in several modules reaches them
    all, so the result over-covers rather than misses. Adding an unrelated function to a module
    leaves the result unchanged; editing a reached one changes it.

    Returns:
        ``{module path: semantic text of its reached parts}``.
    """
    modules = {path: _module_parts(path.read_text()) for path in library_closure(sources, root)}
    definitions = {}
    todo = set().union(*(_identifiers(_parse(s)) for s in sources))
    for path, (always, defined, identifiers) in modules.items():
        for name, indices in defined.items():
            definitions.setdefault(name, []).extend((path, i) for i in indices)
        for i in always:
            todo |= identifiers[i]
    reached, done = {path: set(parts[0]) for path, parts in modules.items()}, set()
    while todo:
        name = todo.pop()
        done.add(name)
        for path, i in definitions.get(name, []):
            if i not in reached[path]:
                reached[path].add(i)
                todo |= modules[path][2][i] - done
    return {path: _kept_semantic(path.read_text(), frozenset(reached[path])) for path in modules}


@functools.lru_cache(maxsize=None)
def _module_parts(text: str) -> tuple:
    """A module's top-level statements, by index: those that run on import whatever is used, the
    definitions by the names they bind (imports of other packages are left out: the pins cover them),
    and each statement's :func:`_identifiers`."""
    body = _parse(text).body
    always, defined = [], {}
    for i, stmt in enumerate(body):
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) and not _library_imports(ast.unparse(stmt)):
            continue                    # another package's names: its version is a pin of requirements.txt
        names = _defined_names(stmt)
        for name in names:
            defined.setdefault(name, []).append(i)
        if not names:
            always.append(i)
    return tuple(always), defined, tuple(frozenset(_identifiers(stmt)) for stmt in body)


@functools.lru_cache(maxsize=None)
def _kept_semantic(text: str, kept: frozenset) -> str:
    body = _parse(text).body
    return _semantic(ast.unparse(ast.Module(body=[body[i] for i in sorted(kept)], type_ignores=[])))


EVIDENCE_KINDS = ("reference", "grading")


def evidence_inputs(assignment: str, kind: str, root: str | Path = ROOT) -> dict[str, str]:
    """What can change an assignment's evidence, each input with the sha256 (16 hex) of its meaning.

    ``kind="reference"`` (runs of the solution notebook on other seeds): the source folder
    ``solutions/<assignment>/`` (notebooks by their code cells' ASTs and nbgrader metadata, other
    files by their bytes), the ``dgmcourse`` modules its code imports, transitively (by AST, docstrings
    dropped), the package's data files (``dgmcourse/weights/``) and the pins of ``requirements.txt``.
    ``kind="grading"`` (variants graded through the sandbox) adds the fixtures
    ``tests/assessment/<assignment>.py``, every module of ``dgmcourse/grading/``, ``nbgrader_config.py``
    and the parts of ``dgmcourse/assessment.py`` that build and grade the variants
    (:data:`GRADING_ENTRY_POINTS`).

    Returns:
        ``{path relative to root: digest}``, sorted by path.

    Raises:
        ValueError: unknown ``kind`` or assignment.
    """
    if kind not in EVIDENCE_KINDS:
        raise ValueError(f"kind must be one of {EVIDENCE_KINDS}, got {kind!r}")
    root = Path(root)
    folder = root / "solutions" / assignment
    notebooks(assignment, root)                   # ValueError for an unknown assignment
    files = [p for p in sorted(folder.rglob("*"))
             if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts]
    if kind == "grading":
        files += sorted({root / "tests" / "assessment" / f"{assignment}.py", root / "nbgrader_config.py",
                         *(root / "dgmcourse" / "grading").glob("*.py")})
    return code_inputs(files, root, GRADING_ENTRY_POINTS if kind == "grading" else ())


# What builds and grades the variants (the rest of this module, its digests and checks, changes no outcome).
GRADING_ENTRY_POINTS = ("from dgmcourse.assessment import grade_variants, judge, reference_run, autograde_plain",)


# Pins of requirements.txt that no evidence depends on: packages only tests import, as references to check
# the course's own code against (tests/test_environment.py checks that nothing else imports them).
TEST_REFERENCES = ("torchdiffeq", "torchsde", "torchcfm", "prdc")


def code_inputs(files: list[Path], root: str | Path = ROOT, code: tuple[str, ...] = ()) -> dict[str, str]:
    """The digests of :func:`evidence_inputs` for any files: each file by its meaning (notebooks: code
    cells' ASTs and nbgrader metadata; Python: AST without docstrings; others: bytes; a missing file:
    "missing"), the ``dgmcourse`` definitions their code reaches (:func:`used_definitions`), the package
    data files that reached code names, and the pins of ``requirements.txt`` (but :data:`TEST_REFERENCES`).
    ``code``: more sources
    whose reach counts (e.g. an import of the functions that use the files).

    Returns:
        ``{path relative to root: sha256 (16 hex)}``, sorted by path.
    """
    root = Path(root)
    meaning: dict[Path, str | bytes] = {}
    code = list(code)
    for path in files:
        if not path.is_file():
            meaning[path] = "missing"
        elif path.suffix == ".ipynb":
            meaning[path] = _notebook_semantic(path)
            code += [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        elif path.suffix == ".py":
            meaning[path] = _semantic(path.read_text())
            code.append(path.read_text())
        else:
            meaning[path] = path.read_bytes()
    for path, text in used_definitions(code, root).items():
        meaning.setdefault(path, text)
    reached = "".join(v for v in meaning.values() if isinstance(v, str))
    for path in sorted((root / "dgmcourse" / "weights").glob("*")):   # package data the reached code names
        if repr(path.name) in reached:
            meaning[path] = path.read_bytes()
    pins = sorted(pin for line in (root / "requirements.txt").read_text().splitlines()
                  if "==" in (pin := line.split("#")[0].strip()) and pin.split("==")[0] not in TEST_REFERENCES)
    meaning[root / "requirements.txt"] = "\n".join(pins)

    def sha(value):
        return hashlib.sha256(value if isinstance(value, bytes) else value.encode()).hexdigest()[:16]

    return {str(p.relative_to(root)): sha(v) for p, v in sorted(meaning.items())}


def file_digest(path: str | Path) -> str:
    """sha256 (16 hex) of one file's meaning as :func:`code_inputs` reads it (notebooks: code cells' ASTs and
    nbgrader metadata; Python: AST without docstrings; others: bytes), without the library code it reaches."""
    path = Path(path)
    meaning = _notebook_semantic(path) if path.suffix == ".ipynb" else \
        _semantic(path.read_text()) if path.suffix == ".py" else path.read_bytes()
    return hashlib.sha256(meaning if isinstance(meaning, bytes) else meaning.encode()).hexdigest()[:16]


def lecture_cache(smoke: bool, root: str | Path = ROOT) -> Path:
    """Where the site build (``make site``, docs/conf.py) caches its executions of the lectures:
    ``_build/site[-smoke]/.jupyter_cache/<digest>``, the digest of :func:`code_inputs` over
    ``lectures/*.ipynb``. jupyter-cache keys each lecture by its code; the folder adds the library
    code the lectures reach and the pins, so a library change re-executes them (`make test`'s lecture
    tests read the same cache: each lecture runs once per run)."""
    root = Path(root)
    digest = evidence_digest(code_inputs(sorted((root / "lectures").glob("*.ipynb")), root))
    return root / "_build" / ("site-smoke" if smoke else "site") / ".jupyter_cache" / digest


def evidence_digest(inputs: dict[str, str]) -> str:
    """One sha256 (16 hex) of :func:`evidence_inputs`' result."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


# --- reference runs on other seeds ----------------------------------------------------------------
def reference_run(assignment: str, seed: int, threads: int, smoke: bool,
                  root: str | Path = ROOT, timeout: float = 900) -> dict:
    """Execute the solution notebook with ``DGMCOURSE_SEED=seed`` on ``threads`` torch threads.

    The kernel runs in a temporary copy of the assignment folder, with hidden tests in place
    (the source notebook), errors allowed, so every graded test cell reports pass or fail.

    Returns:
        ``{"seed", "threads", "smoke", "wall_s", "passed": {test grade_id: bool}, "errors": [ids of the
        cells that raised, graded tests included]}``.

    Raises:
        ValueError: ``seed`` < 0 or ``threads`` < 1.
    """
    from nbclient import NotebookClient
    if seed < 0 or threads < 1:
        raise ValueError(f"seed must be >= 0 and threads >= 1, got {seed} and {threads}")
    root = Path(root)
    path = notebooks(assignment, root)[0]
    nb = nbformat.read(path, as_version=4)
    env = {"DGMCOURSE_SEED": str(seed), "DGMCOURSE_SMOKE": "1" if smoke else "",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    saved = {k: os.environ.get(k) for k in env}
    with tempfile.TemporaryDirectory(prefix="dgmcourse-reference-") as work:
        shutil.copytree(path.parent, work, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        os.environ.update(env)
        try:
            start = time.monotonic()
            NotebookClient(nb, timeout=int(timeout), kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": work}}).execute()
            wall = time.monotonic() - start
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    passed, errors = {}, []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        if failed:
            errors.append(_meta(cell).get("grade_id", f"cell{index}"))
        if _meta(cell).get("grade") and not _meta(cell).get("solution"):
            passed[_meta(cell)["grade_id"]] = not failed
    return {"seed": seed, "threads": threads, "smoke": smoke, "wall_s": round(wall, 2),
            "passed": passed, "errors": errors}


# --- what a student learns before submitting ------------------------------------------------------
def visible_run(assignment: str, overrides: dict, test: str, smoke: bool = False, threads: int = 1,
                root: str | Path = ROOT, timeout: float = 900) -> bool:
    """Does the student release's visible test ``test`` pass for a submission answering ``overrides``?

    What a student sees before submitting: the release notebook ``assignments/<assignment>/`` (visible
    tests only) with every solution cell answered (:func:`submission`), executed top to bottom up to
    and including the cell ``test``, on the course's own seed, errors allowed (a definition that
    raises fails the tests that use it). Run through :func:`reference_run` on a temporary copy.

    Args:
        assignment: e.g. ``"a1_vae"``.
        overrides: ``{solution grade_id: source}`` (e.g. a :class:`Mistake`'s ``replaces``).
        test: grade_id of a graded test cell of the release.
        smoke: run with ``DGMCOURSE_SMOKE=1``; default: full mode, what a student runs.
        threads: torch threads.

    Returns:
        True if the cell ``test`` ran without error.

    Raises:
        ValueError: ``test`` is not a graded test cell of the release, or an override is not a
            solution cell.
    """
    root = Path(root)
    source_path = notebooks(assignment, root)[0]
    release_folder = root / "assignments" / assignment
    release = nbformat.read(release_folder / source_path.name, as_version=4)
    if test not in test_cells(release):
        raise ValueError(f"test: {test!r} is not a graded test cell of the {assignment} release")
    nb = submission(nbformat.read(source_path, as_version=4), release, overrides)
    last = next(i for i, cell in enumerate(nb.cells) if _meta(cell).get("grade_id") == test)
    nb.cells = nb.cells[:last + 1]
    with tempfile.TemporaryDirectory(prefix="dgmcourse-visible-") as work:
        folder = Path(work) / "solutions" / assignment
        shutil.copytree(release_folder, folder,
                        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
        nbformat.write(nb, folder / source_path.name)
        run = reference_run(assignment, 0, threads, smoke, root=work, timeout=timeout)
    return run["passed"][test]


def calls_library_answer(mistake: Mistake) -> bool:
    """Is the mistake a call of the course library's own answer (its description says "not an answer")?

    Such a submission is told before submitting (the assignment's introduction and the test cell's
    ``# Not an answer:`` lines name the function) and loses its points in grading only
    (:mod:`dgmcourse.grading.harness`): a visible test cannot tell a library call from the student's code.
    """
    return "not an answer" in mistake.description.lower()


# --- evidence cached by digest ------------------------------------------------------------------
EVIDENCE = ROOT / "tests" / "evidence"
CI_RUNS = ((1, 1), (2, 1), (3, 1))   # (seed, torch threads): never the seed 0 the course runs on


def _graded_outcome(entry: dict) -> dict:
    return {"status": entry["status"],
            "full_marks": {gid: score >= points for gid, (score, points) in sorted(entry["scores"].items())}}


def _run_outcome(run: dict) -> dict:
    return {"passed": dict(sorted(run["passed"].items())), "errors": run["errors"]}


# Alternatives (and mistakes) re-graded per run while an assignment's evidence is unchanged: one of each keeps
# `make test` within its 900 s on 2 cores; over runs the fresh draws cover every variant.
EVIDENCE_SAMPLE = 1


def check_evidence(assignment: str, root: str | Path = ROOT, evidence: str | Path = EVIDENCE,
                   rng: random.Random | None = None, jobs: int = 1) -> tuple[str, list[str]]:
    """Re-verify an assignment's grading evidence, re-measuring all of it only when it is stale.

    The evidence, ``<evidence>/<assignment>.json``: every variant of :func:`variants` graded through
    the sandbox in smoke mode (status and which test cells kept full marks) and the reference runs on
    :data:`CI_RUNS` (which graded tests passed, which cells raised), stored with the digest of
    :func:`evidence_inputs` (kind ``"grading"``).

    * Digest unchanged: grades a sample chosen afresh (:data:`EVIDENCE_SAMPLE` alternatives and as many
      mistakes) and one reference run on a random CI seed; a problem for each sampled outcome that differs from the
      stored one. Stored evidence is never the only proof of itself.
    * Digest changed (or nothing stored): grades every variant, runs every CI seed and grades the
      solution and the untouched release through plain ``nbgrader autograde`` (:func:`autograde_plain`);
      the targets (reference and alternatives at full marks, each mistake losing its cell's points,
      every graded test passing on every seed, no cell raising, the release scoring 0 in every test
      cell) make the problems; with none, the file is rewritten.

    Args:
        assignment: e.g. ``"a1_vae"``.
        root: course root; evidence: folder of the evidence files; rng: the sampler (default: fresh
            from the OS); jobs: parallel grading jobs (each kernel runs on one thread).

    Returns:
        ``(line, problems)``: one line saying what was decided and run, and the problems (empty: pass).

    Raises:
        ValueError: unknown assignment, or fewer than two alternatives or mistakes to sample.
    """
    rng = rng or random.Random(os.urandom(8))
    root, path = Path(root), Path(evidence) / f"{assignment}.json"
    inputs = evidence_inputs(assignment, "grading", root)
    digest = evidence_digest(inputs)
    stored = json.loads(path.read_text()) if path.is_file() else None
    everything = variants(assignment, root)
    if stored and stored["digest"] == digest:
        alternatives = sorted(k for k in everything if k.startswith("alt-"))
        mistakes = sorted(k for k in everything if k.startswith("mistake-"))
        if len(alternatives) < 2 or len(mistakes) < 2:
            raise ValueError(f"assignment: {assignment} needs >= 2 alternatives and >= 2 mistakes to sample")
        sample = rng.sample(alternatives, EVIDENCE_SAMPLE) + rng.sample(mistakes, EVIDENCE_SAMPLE)
        seed, threads = rng.choice(CI_RUNS)
        graded = grade_variants(assignment, {k: everything[k] for k in sample}, root, jobs=jobs, smoke=True)
        run = _run_outcome(reference_run(assignment, seed, threads, smoke=True, root=root))
        problems = [f"{k}: graded {_graded_outcome(graded[k])}, stored {stored['variants'][k]}"
                    for k in sample if _graded_outcome(graded[k]) != stored["variants"][k]]
        if run != stored["reference_runs"][f"{seed}-{threads}"]:
            problems.append(f"reference run seed {seed}: {run}, stored {stored['reference_runs'][f'{seed}-{threads}']}")
        line = (f"{assignment}: unchanged (digest {digest}); sampled {', '.join(sample)} and the reference run "
                f"on seed {seed} ({threads} thread): " + ("as stored" if not problems else "DIFFERS from the store"))
        return line, problems
    changed = sorted(k for k in set(inputs) | set(stored["inputs"]) if inputs.get(k) != stored["inputs"].get(k)) \
        if stored else ["nothing stored"]
    graded = grade_variants(assignment, everything, root, jobs=jobs, smoke=True)
    verdict = judge(assignment, graded, root)
    runs = {f"{s}-{t}": _run_outcome(reference_run(assignment, s, t, smoke=True, root=root)) for s, t in CI_RUNS}
    plain = autograde_plain(assignment, root)
    problems = [f"the reference solution lost points: {verdict['reference']}"] if verdict["reference"] else []
    problems += [f"plain nbgrader autograde: the solution lost {cell}" for cell, ok in plain["solution_full"].items()
                 if not ok]
    problems += [f"plain nbgrader autograde: the untouched release earned points in {cell}"
                 for cell, ok in plain["release_zero"].items() if not ok]
    problems += [f"alternative {alt} lost points: {cells}" for alt, cells in verdict["alternatives"].items() if cells]
    problems += [f"mistake {m} kept its points" for m, caught in sorted(verdict["mistakes"].items()) if not caught]
    problems += [f"reference run seed {k}: failed {sorted(t for t, ok in r['passed'].items() if not ok)}, "
                 f"cells that raised {r['errors']}" for k, r in runs.items()
                 if not all(r["passed"].values()) or r["errors"]]
    if not problems:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "assignment": assignment, "digest": digest, "inputs": inputs,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "variants": {k: _graded_outcome(v) for k, v in sorted(graded.items())},
            "reference_runs": runs, "plain_nbgrader": plain}, indent=1) + "\n")
    line = (f"{assignment}: stale (changed: {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}); "
            f"graded all {len(everything)} variants (and the solution and the release through plain nbgrader), "
            f"ran {len(CI_RUNS)} reference seeds: "
            + ("stored" if not problems else "NOT stored"))
    return line, problems


def reference_evidence_problem(assignment: str, report: dict | None, root: str | Path = ROOT) -> str | None:
    """One line naming the refresh command when the 20-seed reference runs (``benchmarks/assessment.py``,
    too long for ``make test``) are missing, stale (their :func:`evidence_inputs` of kind ``"reference"``
    changed) or below target (a stochastic test failing any run); None when current.

    Args:
        report: the assignment's entry of ``benchmarks/reports/assessment.json`` (or None).
    """
    command = f"run .venv/bin/python benchmarks/assessment.py -k {assignment} --reference-only"
    reference = (report or {}).get("reference")
    if not reference or "digest" not in reference:
        return f"{assignment}: no 20-seed reference runs recorded with a digest: {command}"
    inputs = evidence_inputs(assignment, "reference", root)
    if reference["digest"] != evidence_digest(inputs):
        changed = sorted(k for k in set(inputs) | set(reference["inputs"])
                         if inputs.get(k) != reference["inputs"].get(k))
        return f"{assignment}: the 20-seed reference runs are stale (changed: {', '.join(changed)}): {command}"
    runs = 4 * (reference["seeds"][1] + 1)           # seeds x {1, 2} threads x {smoke, full}
    short = sorted(t for t, entry in reference["tests"].items() if not entry["passed"] == entry["runs"] >= runs)
    stochastic = set(stochastic_tests(nbformat.read(notebooks(assignment, root)[0], as_version=4)))
    missing = sorted(stochastic - set(reference["tests"]))
    if short or missing:
        return f"{assignment}: 20-seed reference runs below target (failed: {short}, missing: {missing}): {command}"
    return None
