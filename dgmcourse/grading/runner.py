"""The parallel runner: one job per submission, then one merge into the gradebook.

Each job autogrades one repaired submission with nbgrader's ``Autograde`` converter into a
private copy of the gradebook, with the course's pipeline (``nbgrader_config.py``, read by
:func:`~dgmcourse.grading.pipeline.course_config`), whose execution step is
:class:`~dgmcourse.grading.preprocessors.SandboxedExecute`; only the job's folders, gradebook
and, when given, the limits are set on top. :func:`merge_results` validates every score and
writes them all into the course's gradebook. Nothing in a job touches the course's gradebook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from dgmcourse.grading.pipeline import course_config, course_policy
from dgmcourse.grading.sandbox import Policy, Status, bwrap_available
from dgmcourse.grading.submissions import repair_submission

@dataclasses.dataclass
class Result:
    """One submission's grading job: what :func:`grade_submission` writes to ``result.json``,
    :func:`merge_results` puts into the gradebook and :func:`write_report` lists.

    Scores are in points. ``notebooks`` maps each notebook name to ``{"grades": {grade_id:
    {"auto_score", "max_score", "needs_manual_grade"}}, "comments": {grade_id: auto_comment},
    "late_penalty"}``; ``notes`` lead with why a run did not end normally, then the repairs.
    """

    student: str
    status: Status
    notes: list = dataclasses.field(default_factory=list)
    score: float = 0.0
    max_score: float = 0.0
    time_s: float = 0.0
    notebooks: dict = dataclasses.field(default_factory=dict)
    timestamp: str | None = None           # submission time, ISO 8601
    autograded: str | None = None          # the job's autograded folder
    logs: list = dataclasses.field(default_factory=list)  # sandbox logs kept in the course


def _ignore_session_warnings() -> None:
    """Silence nbgrader's harmless ``SAWarning: Object ... not in session`` (first grading of a
    student), which would otherwise flood the progress bar."""
    from sqlalchemy.exc import SAWarning
    warnings.filterwarnings("ignore", category=SAWarning)


def db_url_of(course: Path, config, db_url: str | None) -> str:
    if db_url:
        return db_url
    configured = config.get("CourseDirectory", {}).get("db_url")
    return configured if isinstance(configured, str) and configured else \
        f"sqlite:///{(course / 'gradebook.db').resolve()}"

def _dirs(config) -> dict:
    cd = config.get("CourseDirectory", {})

    def get(key, default):
        return cd[key] if key in cd and isinstance(cd[key], str) else default

    return {"source": get("source_directory", "source"), "release": get("release_directory",
            "release"), "submitted": get("submitted_directory", "submitted"),
            "autograded": get("autograded_directory", "autograded"),
            "feedback": get("feedback_directory", "feedback")}

def _autograde_config(course: Path):
    """The course's configuration (:func:`course_config`) for autograding with ``dgmcourse``.

    Raises:
        ValueError: ``nbgrader_config.py`` cannot be executed, or its
            ``Autograde.autograde_preprocessors`` lack ``SandboxedExecute`` (student code would
            run outside the sandbox).
    """
    config = course_config(course)
    sandbox = "dgmcourse.grading.preprocessors.SandboxedExecute"
    steps = [step if isinstance(step, str) else f"{step.__module__}.{step.__qualname__}"
             for step in config.Autograde.autograde_preprocessors]
    if sandbox not in steps:
        raise ValueError(f"{course / 'nbgrader_config.py'}: c.Autograde.autograde_preprocessors has no "
                         f"{sandbox}: student code would run outside the sandbox (use "
                         "dgmcourse.grading.pipeline.AUTOGRADE)")
    return config

def grade_submission(course: str | Path, assignment: str, student: str, job_dir: str | Path,
                     template_db: str | Path, policy: Policy | None = None) -> Result:
    """Grade one submission in its own job folder; return its :class:`Result`, also written
    to ``<job_dir>/result.json``.

    The job autogrades with nbgrader's ``Autograde`` converter and the course's pipeline
    (:func:`~dgmcourse.grading.pipeline.course_config`) into a private copy of the gradebook
    (``template_db``), so it never writes the course's gradebook; its sandboxed execution is
    :func:`run_sandboxed` (via ``SandboxedExecute``) with the limits of ``policy``, by default
    those of the course's ``nbgrader_config.py``.

    Raises:
        ValueError: the course's ``nbgrader_config.py`` cannot be executed, or its
            ``Autograde.autograde_preprocessors`` lack ``SandboxedExecute``.
    """
    from nbgrader.apps import NbGraderAPI  # noqa: F401 - imports nbgrader's config classes
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory

    from dgmcourse.grading.preprocessors import POLICY_TRAITS
    start = time.monotonic()
    _ignore_session_warnings()
    course, job = Path(course).resolve(), Path(job_dir).resolve()
    shutil.rmtree(job, ignore_errors=True)
    root = job / "course"
    config = _autograde_config(course)
    dirs = _dirs(config)
    for folder in ("source", "release"):  # release: for RepairCells, when nbgrader_config.py names it
        (root / dirs[folder]).mkdir(parents=True)
        os.symlink(course / dirs[folder] / assignment, root / dirs[folder] / assignment)
    shutil.copy(template_db, job / "gradebook.db")
    notes = repair_submission(course / dirs["submitted"] / student / assignment,
                              course / dirs["release"] / assignment,
                              root / dirs["submitted"] / student / assignment)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{job / 'gradebook.db'}"
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    config.Autograde.create_student = True  # the job's private gradebook may not know the student yet
    config.SandboxedExecute.job_dir = str(job)
    for name, field in POLICY_TRAITS.items() if policy is not None else ():
        config.SandboxedExecute[name] = getattr(policy, field)
    status, error = Status.GRADED, ""
    try:
        converter = Autograde(coursedir=CourseDirectory(config=config), config=config)
        converter.start()
    except Exception as err:  # noqa: BLE001 - one broken submission never stops the others
        status, error = Status.ERROR, f"{type(err).__name__}: {str(err)[:200]}"
    book = _read_job_gradebook(job, assignment, student)
    written = {p.stem for p in (root / dirs["submitted"] / student / assignment).glob("*.ipynb")}
    for name, notebook in book["notebooks"].items():
        if name not in written:  # missing or rejected: zero, nothing left to grade by hand
            for grade in notebook["grades"].values():
                grade.update(auto_score=0.0, needs_manual_grade=False)
    runs = [json.loads(p.read_text()) for p in sorted(job.glob("run-*.json"))]
    statuses = [Status(r["status"]) for r in runs if r["status"] != Status.OK]
    details = [f"{r['status']}: {r['detail']}" for r in runs if r["status"] != Status.OK]
    details += [note for r in runs for note in r.get("library_answers", [])]
    if any(n.startswith(("missing", "rejected")) for n in notes):
        status = Status.REJECTED if any(n.startswith("rejected") for n in notes) else Status.MISSING
    if statuses:
        status = Status.TAMPERED if Status.TAMPERED in statuses else statuses[0]
    elif status == Status.GRADED and notes:
        status = Status.REPAIRED
    result = Result(student=student, status=status, notes=details + ([error] if error else []) + notes,
                    score=sum(g["auto_score"] or 0.0 for nb in book["notebooks"].values()
                              for g in nb["grades"].values()),
                    max_score=book["max_score"], time_s=time.monotonic() - start,
                    notebooks=book["notebooks"], timestamp=book["timestamp"],
                    autograded=str(root / dirs["autograded"] / student / assignment))
    (job / "result.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return result

def _read_job_gradebook(job: Path, assignment: str, student: str) -> dict:
    """Scores and comments of one student from the job's private gradebook."""
    from nbgrader.api import Gradebook, MissingEntry
    notebooks, max_score, timestamp = {}, 0.0, None
    with Gradebook(f"sqlite:///{job / 'gradebook.db'}") as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            grades, comments = {}, {}
            try:
                submission = gb.find_submission_notebook(notebook.name, assignment, student)
            except MissingEntry:
                submission = None
            for cell in list(notebook.grade_cells) + list(notebook.task_cells):  # tasks: written
                grade = None
                if submission is not None:
                    grade = gb.find_grade(cell.name, notebook.name, assignment, student)
                auto = grade.auto_score if grade is not None else 0.0
                grades[cell.name] = {"auto_score": auto, "max_score": cell.max_score,
                                     "needs_manual_grade": bool(grade.needs_manual_grade)
                                     if grade is not None else False}
                max_score += cell.max_score
            if submission is not None:
                timestamp = submission.assignment.timestamp
                for comment in submission.comments:
                    comments[comment.name] = comment.auto_comment
                late = submission.late_submission_penalty
            notebooks[notebook.name] = {"grades": grades, "comments": comments,
                                        "late_penalty": late if submission else None}
    return {"notebooks": notebooks, "max_score": max_score,
            "timestamp": timestamp.isoformat() if timestamp else None}

def _valid_score(value, max_score: float):
    """A score nbgrader may store: None (manual) or a finite number in [0, max_score]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not 0 <= value <= max_score:
        raise ValueError(f"score {value!r} is outside [0, {max_score}]")
    return float(value)

def merge_results(course: str | Path, assignment: str, results: list[Result],
                  db_url: str | None = None) -> None:
    """Write job results into the gradebook and the autograded folder (instructor side only).

    Every score is validated against the cell's points in the gradebook; an invalid score
    is stored as 0 and the result's status becomes ``"invalid-score"``, with a note.

    Raises:
        ValueError: if a result names a cell or notebook the gradebook does not know.
    """
    import datetime
    from nbgrader.api import Gradebook
    _ignore_session_warnings()
    course = Path(course).resolve()
    config = course_config(course)
    autograded = course / _dirs(config)["autograded"]
    with Gradebook(db_url_of(course, config, db_url)) as gb:
        for result in results:
            student = result.student
            gb.update_or_create_student(student)
            stamp = result.timestamp
            gb.update_or_create_submission(assignment, student, **(
                {"timestamp": datetime.datetime.fromisoformat(stamp)} if stamp else {}))
            for name, notebook in result.notebooks.items():
                for grade_id, entry in notebook["grades"].items():
                    grade = gb.find_grade(grade_id, name, assignment, student)
                    try:
                        grade.auto_score = _valid_score(entry["auto_score"], grade.max_score)
                    except ValueError as err:
                        grade.auto_score = 0.0
                        result.status = Status.INVALID_SCORE
                        result.notes.append(f"{grade_id}: {err}")
                    grade.needs_manual_grade = bool(entry["needs_manual_grade"])
                for grade_id, text in notebook["comments"].items():
                    gb.find_comment(grade_id, name, assignment, student).auto_comment = text
                if notebook.get("late_penalty") is not None:
                    gb.find_submission_notebook(name, assignment, student) \
                        .late_submission_penalty = notebook["late_penalty"]
            gb.db.commit()
            source = result.autograded
            if source and Path(source).is_dir():
                target = autograded / student / assignment
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)

def _template_gradebook(course: Path, assignment: str, db_url: str, work: Path) -> Path:
    """A private SQLite gradebook holding the assignment, copied by every job."""
    template = work / "template.db"
    if db_url.startswith("sqlite:///") and Path(db_url[len("sqlite:///"):]).is_file():
        shutil.copy(db_url[len("sqlite:///"):], template)
        return template
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    config = course_config(course)
    dirs = _dirs(config)
    root = work / "template"
    (root / dirs["source"]).mkdir(parents=True)
    os.symlink(course / dirs["source"] / assignment, root / dirs["source"] / assignment)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{template}"
    config.CourseDirectory.assignment_id = assignment
    GenerateAssignment(coursedir=CourseDirectory(config=config), config=config).start()
    return template

def grade(course: str | Path, assignment: str, students: list | None = None,
          jobs: int | None = None, db_url: str | None = None, policy: Policy | None = None,
          progress: bool = True) -> list[Result]:
    """Grade submissions in parallel jobs, then merge them into the gradebook.

    Args:
        course: course root (holds ``nbgrader_config.py``, ``submitted/``, the gradebook).
        assignment: assignment name, e.g. ``"a1_vae"``.
        students: student ids; default every student with a submission of ``assignment``.
        jobs: parallel jobs (default: number of CPU cores).
        db_url: gradebook URL (default: the course's ``gradebook.db``).
        policy: the sandbox's limits, and whether to grade without bubblewrap (default: the
            ``SandboxedExecute`` settings of the course's ``nbgrader_config.py``,
            :func:`~dgmcourse.grading.pipeline.course_policy`).
        progress: show a tqdm progress bar.

    Returns:
        One :class:`Result` per student, sorted by student.

    Raises:
        RuntimeError: bubblewrap missing and ``policy.unsafe`` False.
        ValueError: ``jobs`` < 1; ``course`` is not a course directory; its
            ``nbgrader_config.py`` fails, sets an invalid limit or autogrades outside the sandbox
            (no ``SandboxedExecute``); no such assignment; the gradebook lacks the assignment
            (not released); no submissions; or a student without a submission folder.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from tqdm.auto import tqdm
    course = Path(course).resolve()
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    policy = course_policy(course)[0] if policy is None else policy
    if not policy.unsafe and not bwrap_available():
        raise RuntimeError("bubblewrap (bwrap) is not available: refusing to grade without "
                           "isolation. Install it (apt-get install bubblewrap) or pass --unsafe.")
    if not (course / "nbgrader_config.py").is_file():
        raise ValueError(f"course_dir: {course} is not a course directory (no nbgrader_config.py): "
                         "run from the course root or pass --course-dir")
    config = _autograde_config(course)
    dirs = _dirs(config)
    source = course / dirs["source"] / assignment
    if not source.is_dir():
        known = sorted(p.name for p in (course / dirs["source"]).iterdir() if p.is_dir()) \
            if (course / dirs["source"]).is_dir() else []
        raise ValueError(f"assignment: no {source} (assignments of this course: "
                         f"{', '.join(known) or 'none'})")
    submitted = course / dirs["submitted"]
    if students is None:
        students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) \
            if submitted.is_dir() else []
        if not students:
            raise ValueError(f"no submissions of {assignment}: nothing in "
                             f"{submitted}/<student>/{assignment}/ (collect them first)")
    missing = [s for s in students if not (submitted / s / assignment).is_dir()]
    if missing:
        raise ValueError(f"students {missing} have no folder {submitted}/<student>/{assignment}")
    url = db_url_of(course, config, db_url)
    _require_released(url, assignment)
    work = Path(tempfile.mkdtemp(prefix=f"dgmcourse-grade-{assignment}-"))
    try:
        template = _template_gradebook(course, assignment, url, work)
        results = []
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_submission, course, assignment, s, work / s, template,
                                   policy): s for s in students}
            bar = tqdm(total=len(futures), desc=f"grading {assignment}", disable=not progress)
            for future in as_completed(futures):
                student = futures[future]
                try:
                    results.append(future.result())
                except Exception as err:  # noqa: BLE001 - a crashed job is one student's status
                    results.append(Result(student, Status.ERROR, notes=[f"{type(err).__name__}: {err}"]))
                bar.set_postfix_str(f"{student}: {results[-1].status}")
                bar.update()
            bar.close()
        results.sort(key=lambda r: r.student)
        _keep_logs(course, assignment, results, work)
        merge_results(course, assignment, results, url)
        write_report(course, assignment, results)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _require_released(url: str, assignment: str) -> None:
    """Raise a clear ValueError when the gradebook does not hold ``assignment`` yet."""
    from nbgrader.api import Gradebook, MissingEntry
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ValueError(f"the gradebook {url[len('sqlite:///'):]} does not exist: release "
                         f"{assignment} first (make release, or nbgrader generate_assignment {assignment})")
    with Gradebook(url) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(f"the gradebook {url} has no assignment {assignment}: release it first "
                             f"(make release, or nbgrader generate_assignment {assignment})") from None


def _keep_logs(course: Path, assignment: str, results: list[Result], work: Path) -> None:
    """Copy each job's sandbox logs to ``grading-logs/<assignment>/<student>/`` in the course."""
    for result in results:
        target = course / "grading-logs" / assignment / result.student
        shutil.rmtree(target, ignore_errors=True)
        logs = sorted((work / result.student).glob("sandbox-*.log"))
        if logs:
            target.mkdir(parents=True)
            for log in logs:
                shutil.copy(log, target / log.name)
        result.logs = [str(target / log.name) for log in logs]


def write_report(course: str | Path, assignment: str, results: list[Result]) -> list[Path]:
    """Write ``grading-report-<assignment>.csv`` and ``.json`` next to the gradebook.

    One row per student: status, score, max, time, every note and the sandbox logs kept.
    Returns the two paths.
    """
    import csv
    course = Path(course)
    rows = [{"student": r.student, "status": str(r.status), "score": r.score,
             "max_score": r.max_score, "time_s": round(r.time_s, 2),
             "notes": list(r.notes), "logs": list(r.logs)} for r in results]
    json_path = course / f"grading-report-{assignment}.json"
    json_path.write_text(json.dumps(rows, indent=1) + "\n")
    csv_path = course / f"grading-report-{assignment}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["student"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "notes": " | ".join(row["notes"]), "logs": " ".join(row["logs"])})
    return [csv_path, json_path]


def format_table(results: list[Result], verbose: bool = False) -> str:
    """Per-student table: student, score, max, status, time and notes.

    The notes lead with why a run did not end normally (timeout, crash, tampering), then the
    repairs; they are cut at 70 characters unless ``verbose``.
    """
    rows = [("student", "score", "max", "status", "time", "notes")]
    for r in results:
        notes = "; ".join(r.notes)
        rows.append((r.student, f"{r.score:g}", f"{r.max_score:g}", str(r.status),
                     f"{r.time_s:.1f}s", notes if verbose else notes[:70]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)
