"""Full-mode run time and peak memory of every lecture and solution notebook.

Target (every course issue): each notebook <= 3 minutes on 2 CPU cores, peak memory <= 3 GiB.
Kernel CPU seconds are reported beside wall time: on a busy machine they are the steadier figure.
Writes benchmarks/reports/notebooks.json; with -k, the notebooks measured replace their entries there
(each entry keeps its own measured_at and load average).

Run: .venv/bin/python benchmarks/notebooks.py [-k SUBSTRING]
"""

import argparse
import os
import time

from tqdm.auto import tqdm

from dgmcourse.reports import ROOT, read_report, run_notebook, write_report

TARGETS = {"wall_s": 180.0, "peak_rss_mib": 3072.0}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", default="", help="only notebooks whose path contains this")
    args = parser.parse_args()
    paths = [p for p in sorted(ROOT.glob("lectures/*.ipynb")) + sorted(ROOT.glob("solutions/*/*.ipynb"))
             if args.k in str(p)]
    results = []
    for path in tqdm(paths, desc="notebooks (full mode)"):
        measured = run_notebook(path)
        measured["within_targets"] = all(measured[key] <= limit for key, limit in TARGETS.items())
        measured["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        measured["load_average_after"] = os.getloadavg()
        results.append(measured)
        tqdm.write(f"{measured['notebook']}: {measured['wall_s']:.0f} s wall, {measured['kernel_cpu_s']:.0f} s CPU, "
                   f"{measured['peak_rss_mib']:.0f} MiB")
    if args.k:
        fresh = {r["notebook"] for r in results}
        kept = [r for r in read_report("notebooks").get("notebooks", []) if r["notebook"] not in fresh]
        results = sorted(kept + results, key=lambda r: r["notebook"])
    print(write_report("notebooks", {"targets": TARGETS, "notebooks": results}))
