import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from dgmcourse import reports


def test_run_notebook_measures_a_real_execution(tmp_path):
    path = tmp_path / "tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import os\nassert os.environ['DGMCOURSE_SMOKE'] == '1'\n"
                                                     "block = bytearray(200 * 2**20)")]), path)
    measured = reports.run_notebook(path, smoke=True)
    assert measured["smoke"] is True and measured["wall_s"] > 0 and measured["kernel_cpu_s"] > 0
    assert measured["peak_rss_mib"] > 200  # the 200 MiB block is resident in the kernel


def test_run_notebook_reports_failures(tmp_path):
    path = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 / 0")]), path)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        reports.run_notebook(path)
    with pytest.raises(ValueError, match="path"):
        reports.run_notebook(tmp_path / "missing.ipynb")


def test_write_report(tmp_path, monkeypatch):
    monkeypatch.setenv("DGMCOURSE_REPORTS", str(tmp_path))
    written = json.loads(reports.write_report("demo", {"value": 1.5}).read_text())
    assert written["value"] == 1.5 and written["name"] == "demo" and written["machine"]["cpus"] >= 1
    with pytest.raises(ValueError, match="name"):
        reports.write_report("../escape", {})
    assert reports.read_report("demo") == written and reports.read_report("absent") == {}
    with pytest.raises(ValueError, match="name"):
        reports.read_report("../escape")


def _repository(folder, name="dgmcourse"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return folder


def test_reports_dir_from_the_environment_variable(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)  # no repository here: the variable alone decides
    monkeypatch.setenv("DGMCOURSE_REPORTS", str(tmp_path / "mine"))
    assert reports.reports_dir() == tmp_path / "mine" and reports.REPORTS == tmp_path / "mine"
    path = reports.write_report("demo", {"value": 2})
    assert path == tmp_path / "mine" / "demo.json" and reports.read_report("demo")["value"] == 2
    monkeypatch.setenv("DGMCOURSE_REPORTS", "~/reports")
    assert reports.reports_dir() == Path.home() / "reports"


def test_reports_dir_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DGMCOURSE_REPORTS", raising=False)
    repo = _repository(tmp_path / "course")
    _repository(repo / "lectures" / "vendored", name="something-else")  # another project's pyproject.toml
    deep = repo / "lectures" / "vendored" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert reports.repository_root() == repo.resolve() and reports.ROOT == repo.resolve()
    assert reports.reports_dir() == repo.resolve() / "benchmarks" / "reports"
    path = reports.write_report("demo", {"value": 3})  # creates benchmarks/reports
    assert path == repo.resolve() / "benchmarks" / "reports" / "demo.json"
    assert reports.read_report("demo")["value"] == 3
    monkeypatch.setenv("DGMCOURSE_REPORTS", "")  # empty counts as unset
    assert reports.reports_dir() == repo.resolve() / "benchmarks" / "reports"


def test_reports_dir_without_either_is_an_error(tmp_path, monkeypatch):
    try:
        above = reports.repository_root(tmp_path)
    except ValueError:
        above = None
    if above is not None:
        pytest.skip(f"the temporary folder is inside a dgmcourse repository ({above})")
    monkeypatch.delenv("DGMCOURSE_REPORTS", raising=False)
    _repository(tmp_path / "other", name="not-dgmcourse")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "pyproject.toml").write_text("not [ toml")
    for folder in (tmp_path / "other", tmp_path / "broken"):
        monkeypatch.chdir(folder)
        with pytest.raises(ValueError, match="DGMCOURSE_REPORTS"):
            reports.reports_dir()
        with pytest.raises(ValueError, match="DGMCOURSE_REPORTS"):
            reports.write_report("demo", {})
        with pytest.raises(ValueError, match="not inside a dgmcourse repository"):
            reports.repository_root()
    with pytest.raises(AttributeError):
        reports.NO_SUCH_THING
