import json

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
    monkeypatch.setattr(reports, "REPORTS", tmp_path)
    written = json.loads(reports.write_report("demo", {"value": 1.5}).read_text())
    assert written["value"] == 1.5 and written["name"] == "demo" and written["machine"]["cpus"] >= 1
    with pytest.raises(ValueError, match="name"):
        reports.write_report("../escape", {})
    assert reports.read_report("demo") == written and reports.read_report("absent") == {}
    with pytest.raises(ValueError, match="name"):
        reports.read_report("../escape")
