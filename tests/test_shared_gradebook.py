"""`dgmcourse grade --db URL` with a shared PostgreSQL gradebook (issue 7, "Scale").

Needs a PostgreSQL server whose URL is in ``DGMCOURSE_TEST_POSTGRES``, e.g.
``postgresql://dgmcourse:dgmcourse@127.0.0.1:5432/dgmcourse_test``; ``.ci/run`` starts one and sets
it. The test empties that database first. Without the variable (or without bubblewrap) it is skipped.
"""

import csv
import os

import pytest
import sqlalchemy
from nbgrader.api import Gradebook

from dgmcourse import cli, grading
from test_grading_support import make_course, nbgrader, release, solved, submit

URL = os.environ.get("DGMCOURSE_TEST_POSTGRES")
pytestmark = [
    pytest.mark.grading,
    pytest.mark.skipif(not URL, reason="no PostgreSQL server: set DGMCOURSE_TEST_POSTGRES (.ci/run does)"),
    pytest.mark.skipif(not grading.bwrap_available(), reason="needs bubblewrap"),
    pytest.mark.xdist_group("postgres"),
]
EXPECTED = {"full": {"test_add": 1, "test_mul": 2}, "part": {"test_add": 1, "test_mul": 0},
            "zero": {"test_add": 0, "test_mul": 0}}


def _empty_database(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        meta = sqlalchemy.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


def test_grade_feedback_and_export_with_a_postgresql_gradebook(tmp_path, capsys):
    assert URL.startswith("postgresql")
    _empty_database(URL)
    course = make_course(tmp_path, ("tiny",))
    (course / "gradebook.db").unlink()
    nbgrader(["generate_assignment", "tiny", "--force", "--db", URL], cwd=course)
    submit(course, "full", "tiny", solved(course, "tiny"))
    submit(course, "part", "tiny", solved(course, "tiny", keep_unanswered=("mul",)))
    submit(course, "zero", "tiny", release(course, "tiny"))

    assert cli.main(["grade", "tiny", "--course-dir", str(course), "--db", URL, "--jobs", "2",
                     "--no-progress"]) == 0
    rows = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows == {"full": ["3", "4", "graded"], "part": ["1", "4", "graded"], "zero": ["0", "4", "graded"]}
    assert not (course / "gradebook.db").exists(), "nothing may be written to the default SQLite gradebook"
    with Gradebook(URL) as gb:
        assert gb.engine.dialect.name == "postgresql"
        for student, cells in EXPECTED.items():
            for grade_id, points in cells.items():
                assert gb.find_grade(grade_id, "tiny", "tiny", student).auto_score == points

    assert cli.main(["feedback", "tiny", "--course-dir", str(course), "--db", URL, "--allow-pending"]) == 0
    for student in EXPECTED:
        assert (course / "feedback" / student / "tiny" / "tiny.html").is_file()
    nbgrader(["export", "--db", URL, "--to", str(tmp_path / "grades.csv")], cwd=course)
    with open(tmp_path / "grades.csv", newline="") as f:
        scores = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(f)}
    assert scores == {"full": 3.0, "part": 1.0, "zero": 0.0}
