"""Shared test set-up: notebooks and nbgrader runs use the fast (smoke) setting and a data
folder of their own, so tests never read the user's cache or download anything."""

import os
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parents[1]

matplotlib.use("Agg")
os.environ.setdefault("DGMCOURSE_DATA", str(ROOT / ".test-data"))
# benchmark reports (read by test_assessment) are this checkout's, whatever the working directory
os.environ.setdefault("DGMCOURSE_REPORTS", str(ROOT / "benchmarks" / "reports"))
os.environ.setdefault("MPLBACKEND", "Agg")
