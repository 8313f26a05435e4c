"""`make lab` opens a working course: JupyterLab serves, with the nbgrader and ipywidgets extensions."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_grading_support import ENV, jupyter_server, make_course, nbgrader

pytestmark = pytest.mark.grading   # a real Jupyter server on loopback

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = [sys.executable, "-m", "jupyter"]


def test_lab_extensions_are_installed_and_enabled():
    listing = subprocess.run(JUPYTER + ["labextension", "list"], capture_output=True, text=True).stderr
    for extension in ("@jupyter/nbgrader", "@jupyter-widgets/jupyterlab-manager"):
        line = next((line for line in listing.splitlines() if extension in line), "")
        assert "enabled" in line and "OK" in line, listing


def test_lab_serves_the_course_with_formgrader():
    token = "dgmcourse-test"
    with jupyter_server(ROOT, os.environ, token) as base:
        assert urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10).status == 200
        listing = json.load(urllib.request.urlopen(f"{base}/api/contents/lectures?token={token}", timeout=10))
        assert "01_vae.ipynb" in {item["name"] for item in listing["content"]}
        formgrader = urllib.request.urlopen(f"{base}/formgrader?token={token}", timeout=30)
        assert formgrader.status == 200 and b"formgrader" in formgrader.read().lower()


def test_student_lab_hides_instructor_tools_and_fetches_and_submits(tmp_path):
    """`make lab` as a student: no formgrader; the Assignments tab's server API lists the
    assignments of the local exchange, fetches one and submits it, and the instructor collects it."""
    course = make_course(tmp_path, ("tiny",))
    (course / "exchange").mkdir(mode=0o777)
    nbgrader(["release_assignment", "tiny"], cwd=course)
    token = "dgmcourse-student"
    home = tmp_path / "home"  # a student's own HOME: nbgrader caches submissions there
    home.mkdir()
    env = {**ENV, "HOME": str(home), "JUPYTER_CONFIG_PATH": str(ROOT / "jupyter" / "student")}
    with jupyter_server(course, env, token) as base:
        def call(path, method="GET"):
            request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"token {token}"},
                                             method=method, data=b"" if method == "POST" else None)
            return urllib.request.urlopen(request, timeout=120)

        page = call("/lab").read().decode()
        config = page.split('id="jupyter-config-data"')[1].split(">", 1)[1].split("</script>")[0]
        disabled = json.loads(config)["disabledExtensions"]
        assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"} <= set(disabled)
        assert "@jupyter/nbgrader:assignment-list" not in disabled
        try:
            call("/formgrader")
            raise AssertionError("the formgrader is served to students")
        except urllib.error.HTTPError as err:
            assert err.code == 404
        listed = json.load(call("/assignments?course_id=dgmcourse"))
        assert [(a["assignment_id"], a["status"]) for a in listed["value"]] == [("tiny", "released")], listed
        fetched = json.load(call("/assignments/fetch?assignment_id=tiny&course_id=dgmcourse", "POST"))
        assert ("tiny", "fetched") in [(a["assignment_id"], a["status"]) for a in fetched["value"]], fetched
        assert (course / "tiny" / "tiny.ipynb").is_file()
        submitted = json.load(call("/assignments/submit?assignment_id=tiny&course_id=dgmcourse", "POST"))
        assert submitted["success"], submitted
    nbgrader(["collect", "tiny"], cwd=course)
    assert len(list((course / "submitted").glob("*/tiny/tiny.ipynb"))) == 1
