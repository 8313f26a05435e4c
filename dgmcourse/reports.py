"""Benchmark reports: run a notebook in a fresh process and measure it; write JSON reports.

Used by the scripts in ``benchmarks/`` (quality figures and run times live there, not in tests).

Where reports live (:func:`reports_dir`): the folder named by the environment variable
``DGMCOURSE_REPORTS`` when it is set, else ``benchmarks/reports`` of the dgmcourse repository that holds
the current working directory (found by walking up from it to a ``pyproject.toml`` whose project name is
``dgmcourse``; :func:`repository_root`). Nothing depends on where the package itself is installed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import torch

REPORTS_ENV = "DGMCOURSE_REPORTS"
PROJECT_NAME = "dgmcourse"


def repository_root(start: str | os.PathLike | None = None) -> Path:
    """The dgmcourse repository holding ``start`` (default: the current working directory).

    Walks up from ``start`` to the first folder with a ``pyproject.toml`` whose ``[project] name`` is
    ``dgmcourse`` (other projects' ``pyproject.toml`` files on the way are skipped).

    Raises:
        ValueError: if no folder from ``start`` up to the file-system root is a dgmcourse repository.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                name = tomllib.loads(candidate.read_text()).get("project", {}).get("name")
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if name == PROJECT_NAME:
                return folder
    raise ValueError(f"{here} is not inside a dgmcourse repository (no pyproject.toml with "
                     f"name = {PROJECT_NAME!r} in it or above it)")


def reports_dir() -> Path:
    """The folder benchmark reports are read from and written to.

    ``$DGMCOURSE_REPORTS`` when set (``~`` expanded; relative paths are relative to the working directory),
    else ``<repository>/benchmarks/reports`` for the dgmcourse repository holding the working directory
    (:func:`repository_root`). The folder need not exist yet: :func:`write_report` creates it.

    Raises:
        ValueError: if ``DGMCOURSE_REPORTS`` is unset (or empty) and the working directory is not inside
            a dgmcourse repository.
    """
    named = os.environ.get(REPORTS_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    try:
        return repository_root() / "benchmarks" / "reports"
    except ValueError as error:
        raise ValueError(f"no reports folder: set {REPORTS_ENV} to one, or run from inside the dgmcourse "
                         f"repository ({error})") from None


def __getattr__(name: str):
    # ROOT and REPORTS used to be constants derived from this file's install path; they are now looked up
    # on each access (the repository holding the working directory, and reports_dir()).
    if name == "ROOT":
        return repository_root()
    if name == "REPORTS":
        return reports_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    try:
        root = repository_root(path.parent)
        shown = path.resolve().relative_to(root)
    except ValueError:  # not inside a dgmcourse repository
        shown = path
    return {"notebook": str(shown), "smoke": smoke, **measured}


def machine() -> dict:
    """Where a report was measured: CPU count, torch threads, device, platform."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def _report_path(name: str) -> Path:
    if not name or os.sep in name or "/" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    return reports_dir() / f"{name}.json"


def read_report(name: str) -> dict:
    """The contents of ``<name>.json`` in :func:`reports_dir` (``benchmarks/reports/`` by default), or ``{}``
    when it does not exist yet (benchmarks that measure in parts merge their new results into it).

    Raises:
        ValueError: if ``name`` is empty or contains a path separator, or as :func:`reports_dir`.
    """
    path = _report_path(name)
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(name: str, data: dict) -> Path:
    """Write ``<name>.json`` in :func:`reports_dir` (``benchmarks/reports/`` by default) and return its path.

    The file holds ``{"name", "measured_at", "machine": machine(), **data}``: keys of ``data`` with the same
    names replace the first three.

    Raises:
        ValueError: if ``name`` is empty or contains a path separator, or as :func:`reports_dir`.
    """
    path = _report_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"name": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), **data}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
