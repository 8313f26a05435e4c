"""Feedback for students: nbgrader's ``GenerateFeedback`` without hidden tests or mark schemes."""

from __future__ import annotations

from pathlib import Path

from dgmcourse.grading.runner import course_config, db_url_of

def generate_feedback(course: str | Path, assignment: str, students: list | None = None,
                      db_url: str | None = None, allow_pending: bool = False) -> list[Path]:
    """nbgrader's ``GenerateFeedback`` with hidden tests and mark schemes removed from the feedback.

    Writes ``feedback/STUDENT/ASSIGNMENT/*.html`` for each of ``students`` (default: every
    autograded student) and returns the paths written.

    Raises:
        ValueError: the folder is not a course directory; nothing of ``assignment`` is
            autograded; a student in ``students`` has no autograded submission; or written
            answers are still waiting for manual grading (they would be published as 0 points)
            and ``allow_pending`` is False.
    """
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, GetGrades
    course = Path(course).resolve()
    if not (course / "nbgrader_config.py").is_file():
        raise ValueError(f"course_dir: {course} is not a course directory (no nbgrader_config.py)")
    config = course_config(course)
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = db_url_of(course, config, db_url)
    config.CourseDirectory.assignment_id = assignment
    config.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ClearMarkScheme,
                                             CSSHTMLHeaderPreprocessor]
    coursedir = CourseDirectory(config=config)
    autograded = sorted(p.parent.name for p in Path(coursedir.root, coursedir.autograded_directory)
                        .glob(f"*/{assignment}") if p.is_dir())
    if not autograded:
        raise ValueError(f"nothing of {assignment} is autograded in "
                         f"{Path(coursedir.root, coursedir.autograded_directory)}: run "
                         f"`dgmcourse grade {assignment}` first")
    missing = [s for s in students or [] if s not in autograded]
    if missing:
        raise ValueError(f"students: no autograded submission of {assignment} for {', '.join(missing)}")
    chosen = list(students or autograded)
    pending = _pending_manual_grades(config.CourseDirectory.db_url, assignment, chosen)
    if pending and not allow_pending:
        raise ValueError(f"{sum(pending.values())} written answer(s) of {len(pending)} student(s) "
                         f"({', '.join(sorted(pending))}) still need manual grading in the formgrader; "
                         "their feedback would show 0 points (pass --allow-pending to publish anyway)")
    for student in chosen:
        config.CourseDirectory.student_id = student
        GenerateFeedback(coursedir=CourseDirectory(config=config), config=config).start()
    return sorted(p for student in chosen for p in
                  Path(coursedir.root, coursedir.feedback_directory, student, assignment).glob("*.html"))


def _pending_manual_grades(db_url: str, assignment: str, students: list) -> dict:
    """``{student: number of grades still needing a manual grade}`` (students with none left out)."""
    from nbgrader.api import Gradebook, MissingEntry
    pending = {}
    with Gradebook(db_url) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            count = sum(grade.needs_manual_grade for notebook in submission.notebooks
                        for grade in notebook.grades)
            if count:
                pending[student] = count
    return pending
