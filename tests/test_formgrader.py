"""The formgrader's buttons, driven through a real Jupyter server on loopback (its HTTP API, as the
buttons call it): Autograde runs the grading sandbox (nbgrader_config.py registers it), and
Generate feedback never shows hidden tests or mark schemes."""

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from dgmcourse import grading
from test_grading_support import ENV, jupyter_server, make_course, release, solved, submit, visible_text

pytestmark = [pytest.mark.skipif(not grading.bwrap_available(), reason="needs bubblewrap"),
              pytest.mark.xdist_group("formgrader")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tiny course with an honest and a hostile submission, served by `jupyter server`, both
    autograded through the Autograde button's endpoint."""
    course = make_course(tmp_path_factory.mktemp("formgrader"), ("tiny",))
    marker = Path("/tmp") / f"dgmcourse-formgrader-{uuid.uuid4().hex}.txt"
    submit(course, "honest", "tiny", solved(course, "tiny"))
    hostile = solved(course, "tiny")
    hostile.cells[1].source += f"\nopen({str(marker)!r}, 'w').write('escaped the sandbox')\n"
    submit(course, "hostile", "tiny", hostile)
    token = uuid.uuid4().hex
    try:
        with jupyter_server(course, ENV, token, app="server") as base:
            def post(path):
                request = urllib.request.Request(f"{base}{path}", data=b"", method="POST",
                                                 headers={"Authorization": f"token {token}"})
                return json.load(urllib.request.urlopen(request, timeout=600))

            autograded = {s: post(f"/formgrader/api/submission/tiny/{s}/autograde") for s in ("honest", "hostile")}
            yield {"course": course, "post": post, "marker": marker, "autograded": autograded}
    finally:
        marker.unlink(missing_ok=True)


def test_autograde_button_runs_the_sandbox(server):
    for answer in server["autograded"].values():
        assert answer["success"], answer
    assert not server["marker"].exists(), "student code wrote outside its sandbox"
    with Gradebook(f"sqlite:///{server['course'] / 'gradebook.db'}") as gb:
        assert gb.find_submission("tiny", "honest").code_score == 3
        assert gb.find_submission("tiny", "hostile").code_score == 3   # its answers are right


def test_feedback_button_hides_hidden_tests(server):
    answer = server["post"]("/formgrader/api/assignment/tiny/honest/generate_feedback")
    assert answer["success"], answer
    html = visible_text((server["course"] / "feedback" / "honest" / "tiny" / "tiny.html").read_text())
    assert "assert add(1, 2) == 3" in html                       # the visible test is shown
    assert "np.allclose(add(np.ones(2)" not in html              # the hidden one is not
    assert "BEGIN HIDDEN TESTS" not in html


def test_plain_nbgrader_generate_feedback_hides_hidden_tests(server):
    course = server["course"]
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", "tiny", "--force"],
                            cwd=course, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for student in ("honest", "hostile"):
        html = visible_text((course / "feedback" / student / "tiny" / "tiny.html").read_text())
        assert ("assert add(1, 2) == 3" in html and "np.allclose(add(np.ones(2)" not in html
                and "BEGIN HIDDEN TESTS" not in html)
    assert release(course, "tiny")  # the release is untouched by grading
