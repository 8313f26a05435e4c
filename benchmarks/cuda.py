"""Every lecture and solution notebook on a CUDA GPU: does it run, and how long does it take?

Runs each notebook top to bottom in a fresh kernel (`dgmcourse.reports.run_notebook`, the path
`benchmarks/notebooks.py` measures on the CPU) with DGMCOURSE_DEVICE=cuda, in smoke mode (--smoke) or the
full setting users run, at the course seed DGMCOURSE_SEED (default 0). The solution notebooks hold the
hidden tests, so a notebook that runs through here also passes its graded tests on the GPU. Writes
benchmarks/reports/cuda.json: smoke and full runs side by side, each a list of (notebook, seed) results;
a new run replaces the results of the same notebooks and seed and keeps the others.

    OMP_NUM_THREADS=2 python benchmarks/cuda.py [--smoke] [--jobs N] [-k SUBSTRING]

Exits with a one-line error on a machine without CUDA.
"""

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from dgmcourse.device import course_seed
from dgmcourse.reports import ROOT, read_report, run_notebook, write_report


def _run(path: Path, smoke: bool) -> dict:
    try:
        return {"ok": True, "seed": course_seed(), **run_notebook(path, smoke=smoke)}
    except RuntimeError as error:
        last = [line for line in str(error).splitlines() if line.strip()][-1]
        return {"notebook": str(path.relative_to(ROOT)), "seed": course_seed(), "smoke": smoke, "ok": False,
                "error": re.sub(r"\x1b\[[0-9;]*m", "", last)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="DGMCOURSE_SMOKE=1 (default: the full setting)")
    parser.add_argument("--jobs", type=int, default=4, help="notebooks run at once (default 4)")
    parser.add_argument("-k", default="", help="only notebooks whose path contains this")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda.py: no CUDA device here (torch.cuda.is_available() is False)")
    if args.jobs < 1:
        sys.exit(f"cuda.py: --jobs must be at least 1, got {args.jobs}")
    os.environ["DGMCOURSE_DEVICE"] = "cuda"
    paths = [p for p in sorted(ROOT.glob("lectures/*.ipynb")) + sorted(ROOT.glob("solutions/*/*.ipynb"))
             if args.k in str(p)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda p: _run(p, args.smoke), paths))
    for result in results:
        shown = f"{result['wall_s']:.0f} s" if result["ok"] else f"FAILED: {result['error']}"
        print(f"{result['notebook']}: {shown}", flush=True)
    mode = "smoke" if args.smoke else "full"
    runs = read_report("cuda").get("runs", {})
    fresh = {(r["notebook"], r["seed"]) for r in results}
    kept = [r for r in runs.get(mode, []) if (r["notebook"], r["seed"]) not in fresh]
    for result in results:
        result.update(gpu=torch.cuda.get_device_name(), jobs=args.jobs, torch=torch.__version__,
                      measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    runs[mode] = sorted(kept + results, key=lambda r: (r["notebook"], r["seed"]))
    print(write_report("cuda", {"runs": runs}))


if __name__ == "__main__":
    main()
