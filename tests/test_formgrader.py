"""The formgrader's buttons, driven through a real Jupyter server on loopback (its HTTP API, as the
buttons call it): Autograde runs the grading sandbox (nbgrader_config.py registers it) with the
limits the course's nbgrader_config.py sets, and Generate feedback never shows hidden tests or mark
schemes."""

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from dgmcourse import grading
from test_grading_support import ENV, jupyter_server, make_course, release, solved, submit, visible_text

pytestmark = [pytest.mark.grading, pytest.mark.skipif(not grading.bwrap_available(), reason="needs bubblewrap"),
              pytest.mark.xdist_group("formgrader")]
# Limits of the course's nbgrader_config.py, none of them the default; the honest submission prints
# what its sandbox was given (rlimits in MiB or files, seconds left of the cell's timer) and a long line.
LIMITS = {"cell_timeout": 100, "memory_mb": 3000, "fsize_mb": 32, "nofile": 200, "nproc_extra": 3000,
          "output_chars": 200}
PROBE = ("\nimport resource, signal\n"
         "print('limits', *(resource.getrlimit(kind)[0] >> shift for kind, shift in ((resource.RLIMIT_DATA, 20), "
         "(resource.RLIMIT_FSIZE, 20), (resource.RLIMIT_NOFILE, 0), (resource.RLIMIT_NPROC, 0))), "
         "round(signal.getitimer(signal.ITIMER_REAL)[0]))\nprint('y' * 300)\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tiny course with an honest and a hostile submission, served by `jupyter server`, both
    autograded through the Autograde button's endpoint."""
    course = make_course(tmp_path_factory.mktemp("formgrader"), ("tiny",),
                         config="\n".join(f"c.SandboxedExecute.{k} = {v}" for k, v in LIMITS.items()))
    marker = Path("/tmp") / f"dgmcourse-formgrader-{uuid.uuid4().hex}.txt"
    honest = solved(course, "tiny")
    honest.cells[1].source += PROBE
    submit(course, "honest", "tiny", honest)
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


def test_autograde_button_applies_the_course_limits(server):
    nb = nbformat.read(server["course"] / "autograded" / "honest" / "tiny" / "tiny.ipynb", as_version=4)
    (stdout,) = nb.cells[1].outputs
    limits, long_line = stdout.text.split("\n", 1)
    data, fsize, nofile, nproc, cell_left = map(int, limits.split()[1:])
    assert (data, fsize, nofile) == (LIMITS["memory_mb"], LIMITS["fsize_mb"], LIMITS["nofile"])
    assert nproc > LIMITS["nproc_extra"] and LIMITS["cell_timeout"] - 10 < cell_left <= LIMITS["cell_timeout"]
    kept = LIMITS["output_chars"] - len(limits) - 1   # the cap counts the whole stream
    assert long_line == "y" * kept + "\n... [output truncated by the grader]\n"


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
