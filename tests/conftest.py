"""Shared test set-up: notebooks and nbgrader runs use the fast (smoke) setting and a data
folder of their own, so tests never read the user's cache or download anything.

Tiers (pyproject.toml's markers): a test carries at most one tier marker; none means the unit tier.
Every kernel and grading job a test starts runs on one torch/OpenMP thread, so the two xdist workers
never ask for more than the machine's two cores.
"""

import os
import subprocess
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("notebooks", "grading", "assessment", "browser", "site")
TIERS_OF_TESTS = pytest.StashKey[dict]()

matplotlib.use("Agg")
os.environ.setdefault("DGMCOURSE_DATA", str(ROOT / ".test-data"))
# benchmark reports (read by test_assessment) are this checkout's, whatever the working directory
os.environ.setdefault("DGMCOURSE_REPORTS", str(ROOT / "benchmarks" / "reports"))
os.environ.setdefault("MPLBACKEND", "Agg")
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Record every collected test's tier markers before `-m` / `-k` deselect any (test_environment reads it)
    and give each test a "tier" property (JUnit XML)."""
    config.stash[TIERS_OF_TESTS] = {item.nodeid: sorted({m.name for m in item.iter_markers() if m.name in TIERS})
                                    for item in items}
    for item in items:   # in JUnit reports too (benchmarks/tests.py sums the time of each tier)
        item.user_properties.append(("tier", (config.stash[TIERS_OF_TESTS][item.nodeid] or ["unit"])[0]))


def pytest_terminal_summary(terminalreporter):
    """One line per assignment: whether its grading evidence was stale or unchanged, and what was re-run."""
    lines = sorted({value for reports in terminalreporter.stats.values() for report in reports
                    for name, value in getattr(report, "user_properties", ()) if name == "evidence"})
    if lines:
        terminalreporter.section("grading evidence (tests/evidence/, benchmarks/reports/assessment.json)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def smoke_site() -> Path:
    """The smoke-mode website, built as `make site SMOKE=1` builds it (one lecture at a time): it executes every lecture
    once (cached by dgmcourse.assessment.lecture_cache), and the lecture tests read those executions.
    The tests that use it share the xdist group "site", so one worker builds it once."""
    result = subprocess.run(["make", "--no-print-directory", "site", "SMOKE=1", "SITE_JOBS=1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ROOT / "_build" / "site-smoke" / "html"
