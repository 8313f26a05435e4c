"""Assignment 9, part 5: the spread of the small RealNVP's test NLL on the ring over seeds, with a correct layer.

The part is ungraded; its cell prints the range measured here, so that a student can tell a bug in their coupling
layer from the seed-to-seed spread of training (a flow that separates 6 or 7 of the 8 modes ends far above the rest).
Executes the solution notebook's own cells (setup, coupling_forward, the flow part of demo_flow, without its plots) on
seeds 0-19 (--seeds), smoke and full mode, one torch thread.

Writes benchmarks/reports/a9_ring_flow.json: per mode, every seed's test NLL (nats), the data's entropy H(p) and the
modes covered, and the range.

Run: .venv/bin/python benchmarks/a9_ring_flow.py [--seeds 20]
"""

import argparse
import os

import matplotlib
import nbformat
from tqdm.auto import tqdm

from dgmcourse.reports import ROOT, write_report

NOTEBOOK = ROOT / "solutions" / "a9_flows_diffusion" / "a9_flows_diffusion.ipynb"


def flow_part(seed: int, smoke: bool) -> dict:
    """Run the notebook's flow cells with DGMCOURSE_SEED=seed: test NLL, entropy (nats) and modes covered."""
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source
             for c in nbformat.read(NOTEBOOK, as_version=4).cells}
    os.environ.update(DGMCOURSE_SEED=str(seed), DGMCOURSE_SMOKE="1" if smoke else "")
    scope: dict = {}
    for source in (cells["setup"], cells["coupling_forward"], cells["demo_flow"].split("\ngrid = ")[0]):
        exec(source, scope)
    return {"seed": seed, "test_nll": round(scope["test_nll"], 3), "entropy": round(scope["entropy"], 3),
            "modes": scope["modes"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1")
    args = parser.parse_args()
    matplotlib.use("Agg")
    os.environ["OMP_NUM_THREADS"] = "1"
    report = {}
    for mode in ("smoke", "full"):
        runs = [flow_part(seed, mode == "smoke") for seed in tqdm(range(args.seeds), desc=mode)]
        nll = [r["test_nll"] for r in runs]
        report[mode] = {"runs": runs, "test_nll_range": [min(nll), max(nll)],
                        "test_nll_median": sorted(nll)[len(nll) // 2]}
    print(write_report("a9_ring_flow", {"seeds": [0, args.seeds - 1], "torch_threads": 1, **report}))
