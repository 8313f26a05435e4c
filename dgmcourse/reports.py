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


# the model zoo's columns (benchmarks/model_zoo.py): report key, heading, digits, better
MODEL_ZOO_COLUMNS = (("frechet", "Fréchet", 1, "lower"), ("precision", "precision", 2, "higher"),
                     ("recall", "recall", 2, "higher"), ("density", "density", 2, "about 1"),
                     ("coverage", "coverage", 2, "higher"), ("memorisation_rate", "memorisation", 3, "about 0.05"),
                     ("train_cpu_s", "train CPU s", 0, ""), ("samples_per_cpu_s", "samples / CPU s", 0, "higher"))


def _model_zoo(report: dict | None) -> dict:
    report = read_report("model_zoo") if report is None else report
    if not isinstance(report, dict) or not isinstance(report.get("table"), dict) or not report["table"]:
        raise ValueError("report must be a model-zoo report with a non-empty 'table' (run benchmarks/model_zoo.py "
                         "to write benchmarks/reports/model_zoo.json)")
    return report


def model_zoo_table(report: dict | None = None) -> str:
    """The model-zoo table of ``benchmarks/model_zoo.py`` as Markdown: one row per family, mean ± std over the
    report's seeds, then the real digits scored as samples.

    Columns: the family, its data, test bits/dim with its kind (exact or upper bound; compare only within one data
    column), the classifier-feature Fréchet distance (lower is better), precision and recall (Kynkäänniemi et al.
    2019), density and coverage (Naeem et al. 2020), the memorisation rate (fraction of samples nearer a training
    digit than 95 % of test digits are; about 0.05 for fresh data), training CPU seconds and samples per CPU second.

    Args:
        report: the report's contents; default ``read_report("model_zoo")``.

    Returns:
        a Markdown table (str), one line per row.

    Raises:
        ValueError: ``report`` is not a model-zoo report (no non-empty ``"table"``).
    """
    report = _model_zoo(report)

    def cell(entry, digits):
        if entry is None:
            return "–"
        if isinstance(entry, dict):
            return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"
        return f"{entry:.{digits}f}"

    head = ["family", "data", "bits/dim"] + [name for _, name, _, _ in MODEL_ZOO_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, row in report["table"].items():
        bpd = "–" if "bits_per_dim" not in row else f"{cell(row['bits_per_dim'], 3)} ({row['bits_per_dim_kind']})"
        lines.append("| " + " | ".join([family, row["data"], bpd]
                                       + [cell(row.get(key), digits) for key, _, digits, _ in MODEL_ZOO_COLUMNS])
                     + " |")
    real = report.get("real_digits")
    if real:
        values = [cell(real.get(key), digits) if key not in ("train_cpu_s", "samples_per_cpu_s") else "–"
                  for key, _, digits, _ in MODEL_ZOO_COLUMNS]
        lines.append("| " + " | ".join(["real digits (1,000 training digits)", "binary 28x28", "–"] + values) + " |")
    return "\n".join(lines)


def plot_precision_recall(report: dict | None = None, ax=None):
    """Precision against recall, one point per model family of the model-zoo report (``benchmarks/model_zoo.py``),
    with the spread over its seeds as error bars (± std), and the real digits scored as samples.

    Top right is best: precision is the share of samples that look like real digits, recall the share of real
    digits the samples reach (Kynkäänniemi et al. 2019).

    Args:
        report: the report's contents; default ``read_report("model_zoo")``.
        ax: matplotlib axes (a new figure when ``None``).

    Returns:
        The matplotlib axes.

    Raises:
        ValueError: ``report`` is not a model-zoo report (as :func:`model_zoo_table`).
    """
    import matplotlib.pyplot as plt

    report = _model_zoo(report)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 5))
    for i, (family, row) in enumerate(report["table"].items()):
        p, r = row["precision"], row["recall"]
        ax.errorbar(r["mean"], p["mean"], xerr=r["std"], yerr=p["std"], fmt="o", color=plt.cm.tab20(i % 20),
                    capsize=2, label=family)
        ax.annotate(family, (r["mean"], p["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    real = report.get("real_digits")
    if real:
        ax.plot(real["recall"], real["precision"], "k*", markersize=12, label="real digits")
    ax.set_xlabel("recall (share of real digits reached)")
    ax.set_ylabel("precision (share of samples that look real)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{len(report['table'])} families, {len(report['seeds'])} seeds, "
                 f"about {report['budget_cpu_s']:.0f} training CPU s each")
    return ax
