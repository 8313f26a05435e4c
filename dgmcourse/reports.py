"""Benchmark reports: run a notebook in a fresh process and measure it; write JSON reports.

Used by the scripts in ``benchmarks/`` (quality figures and run times live there, not in tests).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "benchmarks" / "reports"

_RUNNER = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
path, workdir = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": workdir}}).execute()
wall = time.perf_counter() - start
# the kernel is a child of this process and has been waited for: ru_maxrss is its peak (KiB on Linux)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": wall, "kernel_cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mib": usage.ru_maxrss / 1024}))
"""


def run_notebook(path: str | os.PathLike, smoke: bool = False, workdir: str | os.PathLike | None = None) -> dict:
    """Execute a notebook top to bottom in a fresh kernel and measure it.

    Args:
        path: the ``.ipynb`` file.
        smoke: set ``DGMCOURSE_SMOKE=1`` for the run (default: the full setting users run).
        workdir: folder the kernel starts in (default: the notebook's folder).

    Returns:
        ``{"notebook", "smoke", "wall_s", "kernel_cpu_s", "peak_rss_mib"}``: wall-clock seconds of the
        execution (kernel start-up excluded), the kernel's CPU seconds (user + system; on a busy
        machine this is the steadier figure), and its peak resident memory in MiB.

    Raises:
        ValueError: if ``path`` is not an existing ``.ipynb`` file.
        RuntimeError: if a cell fails (the message holds the error output).
    """
    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"path must be an existing .ipynb file, got {path}")
    env = {**os.environ, "DGMCOURSE_SMOKE": "1" if smoke else "0", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", _RUNNER, str(path), str(workdir or path.parent)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{path} failed:\n{result.stderr[-4000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"notebook": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "smoke": smoke, **measured}


def machine() -> dict:
    """Where a report was measured: CPU count, torch threads, device, platform."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def _report_path(name: str) -> Path:
    if not name or os.sep in name or "/" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    return REPORTS / f"{name}.json"


def read_report(name: str) -> dict:
    """The contents of ``benchmarks/reports/<name>.json``, or ``{}`` when it does not exist yet
    (benchmarks that measure in parts merge their new results into it).

    Raises:
        ValueError: if ``name`` is empty or contains a path separator.
    """
    path = _report_path(name)
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(name: str, data: dict) -> Path:
    """Write ``benchmarks/reports/<name>.json`` (with a timestamp and :func:`machine`) and return its path.

    Raises:
        ValueError: if ``name`` is empty or contains a path separator.
    """
    path = _report_path(name)
    REPORTS.mkdir(parents=True, exist_ok=True)
    report = {"name": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), **data}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
