"""Grading throughput: plain sequential ``nbgrader autograde`` vs ``dgmcourse grade --jobs 1``
and ``--jobs 2``.

In one run on the same machine, N submissions of assignment 1 (a1_vae; a mix of solutions,
partial answers and untouched releases) are placed in a temporary copy of the course and graded
three times from scratch, each with one BLAS thread per kernel: by nbgrader with its own
preprocessors (one kernel after the other, no sandbox, no repairs: the course's
``nbgrader_config.py`` is told to use nbgrader's defaults), by dgmcourse with one job (the sandbox
overhead, with no contention between jobs) and by dgmcourse with ``--jobs`` parallel jobs (the
speed-up). Writes
benchmarks/reports/grading.json with total wall times, time per submission, the overhead, the ratio,
and whether the graders gave the same per-cell scores.

    python benchmarks/grading.py [--n 40] [--jobs 2] [--smoke]

Targets (2 CPU cores): sandbox overhead <= 0.3 s per submission over plain nbgrader;
--jobs 2 >= 1.7x faster than sequential nbgrader.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_grading_support import ENV, REAL, make_course, release, solved, submit  # noqa: E402

from dgmcourse.reports import write_report  # noqa: E402


def _scores(course: Path) -> dict:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {(g.student.id, g.name): g.auto_score
                for s in gb.find_assignment(REAL).submissions
                for nb in s.notebooks for g in nb.grades}


def _fresh(template: Path, where: Path) -> Path:
    shutil.copytree(template, where, symlinks=True)
    return where


# nbgrader as it ships: its own Execute (training cells need more than its 30 s per cell)
UNSANDBOXED = """
from nbgrader.converters import Autograde
c.Autograde.sanitize_preprocessors = Autograde.class_traits()["sanitize_preprocessors"].default()
c.Autograde.autograde_preprocessors = Autograde.class_traits()["autograde_preprocessors"].default()
c.Execute.timeout = 300
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="number of submissions")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="DGMCOURSE_SMOKE=1 (short training)")
    args = parser.parse_args()
    env = dict(ENV)
    if not args.smoke:
        env.pop("DGMCOURSE_SMOKE", None)
        os.environ.pop("DGMCOURSE_SMOKE", None)
    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="dgmcourse-bench-"))
    try:
        template = make_course(tmp)
        kinds = [solved(template, REAL), solved(template, REAL, keep_unanswered=("iwae_bound",)),
                 release(template, REAL)]
        for i in range(args.n):
            submit(template, f"s{i:03d}", REAL, kinds[i % 3])

        plain = _fresh(template, tmp / "plain")
        with open(plain / "nbgrader_config.py", "a") as fh:
            fh.write(UNSANDBOXED)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "nbgrader", "autograde", REAL], cwd=plain, env=env,
                       check=True, capture_output=True)
        t_plain = time.monotonic() - start

        plain_scores, t_ours, same = _scores(plain), {}, True
        for jobs in (1, args.jobs):
            sandboxed = _fresh(template, tmp / f"sandboxed-{jobs}")
            start = time.monotonic()
            subprocess.run([sys.executable, "-m", "dgmcourse.cli", "grade", REAL, "--jobs",
                            str(jobs), "--no-progress"], cwd=sandboxed, env=env, check=True,
                           capture_output=True)
            t_ours[jobs] = time.monotonic() - start
            same = same and _scores(sandboxed) == plain_scores
            print(f"dgmcourse grade --jobs {jobs}: {t_ours[jobs]:.1f} s (nbgrader: {t_plain:.1f} s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "what": f"grading {args.n} submissions of {REAL} (solution / partial / blank, cycled)",
        "mode": "smoke (DGMCOURSE_SMOKE=1)" if args.smoke else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "nbgrader_sequential_s": round(t_plain, 1),
        "dgmcourse_jobs_1_s": round(t_ours[1], 1),
        "dgmcourse_jobs_s": round(t_ours[args.jobs], 1), "jobs": args.jobs,
        "per_submission_s": {"nbgrader": round(t_plain / args.n, 2),
                             "dgmcourse_jobs_1": round(t_ours[1] / args.n, 2),
                             "dgmcourse_jobs_wall": round(t_ours[args.jobs] / args.n, 2)},
        "speedup": round(t_plain / t_ours[args.jobs], 2),
        "sandbox_overhead_per_submission_s": round((t_ours[1] - t_plain) / args.n, 2),
        "same_scores_per_cell": same,
        "targets": {"speedup_at_least": 1.7, "overhead_at_most_s": 0.3},
    }
    # write_report adds "name" and "measured_at"; the report's own "machine" (with load averages) is kept
    print(write_report("grading", report).read_text(), end="")


if __name__ == "__main__":
    main()
