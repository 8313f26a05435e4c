"""Testing the tests: do the assignments' grades hold on every seed, for every correct answer?

For every assignment (dgmcourse.assessment; fixtures in tests/assessment/):
* reference: the solution notebook, hidden tests included, executed on seeds 0-19 (--seeds) x {1, 2}
  torch threads x {smoke, full} (80 runs); for every stochastic graded test (training or sampling) the
  number of runs it passed and the digest of its source. Target: 100 %.
* alternatives and mistakes, graded in full mode through the real pipeline (sandboxed nbgrader):
  correct alternatives at full marks (target 100 %), mistakes that lose their target cell's points
  (target >= 95 %), each uncaught mistake named.
* visible: what a student learns before submitting -- each mistake run against the release's visible
  tests alone (dgmcourse.assessment.visible_run, full mode, 1 torch thread): per graded test cell, the share
  of its mistakes that its visible test fails. Target: >= 50 % for every graded function. Calls of the course
  library's own answer (dgmcourse.assessment.calls_library_answer) are listed apart: the assignment tells the
  student about them before submitting, and only grading can catch them. Stored with the digest of the
  assignment's grading inputs (dgmcourse.assessment.evidence_inputs).
Recipes, thresholds and fixtures were tuned on seeds 100-104, never on the seeds reported here.
Writes benchmarks/reports/assessment.json: per assignment, "reference" and "variants", each with the time
it was measured; a run replaces the parts it measures (with -k, of the assignments whose name contains it,
--reference-only, --variants-only or --visible-only, one part) and keeps the others.

Run: .venv/bin/python benchmarks/assessment.py [-k a2_gan] [--jobs N] [--seeds 20]
     [--reference-only | --variants-only | --visible-only]
--jobs defaults to the CPU count divided by the largest thread count (1 on 2 cores): more notebooks than that
oversubscribe the cores, and PyTorch's OpenMP threads then wait on each other (a2 ran ~5x slower with 2 jobs).
Runs on fewer threads run that many times more notebooks at a time (2 one-thread runs on 2 cores).
"""

import argparse
import itertools
import os
import time
from concurrent.futures import ProcessPoolExecutor

import nbformat
from tqdm.auto import tqdm

from dgmcourse import assessment
from dgmcourse.reports import ROOT, read_report, write_report

SEEDS = 20     # seeds 0 .. SEEDS - 1 (--seeds)
THREADS = (1, 2)
MODES = (True, False)   # smoke, full


def reference(name: str, jobs: int, seeds: int) -> dict:
    source = nbformat.read(assessment.notebooks(name)[0], as_version=4)
    stochastic = assessment.stochastic_tests(source)
    grid = list(itertools.product(range(seeds), THREADS, MODES))
    inputs = assessment.evidence_inputs(name, "reference")   # what the runs measure: checked again below
    runs = []
    for threads in THREADS:        # as many notebooks at a time as the cores hold at this thread count
        part = [run for run in grid if run[1] == threads]
        with ProcessPoolExecutor(max_workers=max(1, jobs * max(THREADS) // threads)) as pool:
            runs += tqdm(pool.map(assessment.reference_run, itertools.repeat(name), *zip(*part)),
                         total=len(part), desc=f"{name} reference, {threads} thread(s)")
    tests = {}
    for test in stochastic:
        failed = [{k: r[k] for k in ("seed", "threads", "smoke")} for r in runs if not r["passed"][test]]
        tests[test] = {"digest": assessment.cell_digest(source, test), "runs": len(runs),
                       "passed": len(runs) - len(failed), "pass_rate": 1 - len(failed) / len(runs),
                       "failed_runs": failed}
    wall = {mode: sorted(r["wall_s"] for r in runs if r["smoke"] == (mode == "smoke"))
            for mode in ("smoke", "full")}
    if assessment.evidence_inputs(name, "reference") != inputs:
        raise RuntimeError(f"{name}: the notebook or the library changed while its reference runs ran")
    return {"digest": assessment.evidence_digest(inputs), "inputs": inputs,
            "seeds": [0, seeds - 1], "threads": list(THREADS), "runs": len(runs),
            "median_wall_s": {mode: w[len(w) // 2] for mode, w in wall.items()}, "tests": tests}


def variants(name: str, jobs: int, smoke: bool) -> dict:
    _, mistakes = assessment.load_fixtures(name)
    graded = assessment.grade_variants(name, assessment.variants(name), jobs=jobs, smoke=smoke)
    verdict = assessment.judge(name, graded)
    alternatives = verdict["alternatives"]
    caught = verdict["mistakes"]
    return {
        "mode": "smoke" if smoke else "full",
        "reference_short": verdict["reference"],
        "alternatives": {"total": len(alternatives),
                         "full_marks": sum(not cells for cells in alternatives.values()),
                         "rate": sum(not cells for cells in alternatives.values()) / len(alternatives),
                         "short": {alt: cells for alt, cells in alternatives.items() if cells}},
        "mistakes": {"total": len(caught), "caught": sum(caught.values()),
                     "rate": sum(caught.values()) / len(caught),
                     "uncaught": [{"name": m.name, "test": m.test, "description": m.description}
                                  for m in mistakes if not caught[m.name]],
                     "by_test": {m.test: [x.name for x in mistakes if x.test == m.test]
                                 for m in mistakes}},
    }


def visible(name: str, jobs: int) -> dict:
    _, listed = assessment.load_fixtures(name)
    inputs = assessment.evidence_inputs(name, "grading")
    library = [m.name for m in listed if assessment.calls_library_answer(m)]
    mistakes = [m for m in listed if m.name not in library]
    with ProcessPoolExecutor(max_workers=jobs * max(THREADS)) as pool:   # one torch thread per run
        passed = list(tqdm(pool.map(assessment.visible_run, itertools.repeat(name),
                                    [m.replaces for m in mistakes], [m.test for m in mistakes]),
                           total=len(mistakes), desc=f"{name} visible"))
    by_test = {}
    for m, passes in zip(mistakes, passed):
        by_test.setdefault(m.test, {"caught": [], "uncaught": []})["uncaught" if passes else "caught"].append(m.name)
    if assessment.evidence_inputs(name, "grading") != inputs:
        raise RuntimeError(f"{name}: the notebook, its fixtures or the library changed while the mistakes ran")
    return {"mode": "full", "digest": assessment.evidence_digest(inputs),
            "by_test": {test: {"mistakes": len(c["caught"]) + len(c["uncaught"]), "caught": len(c["caught"]),
                               "rate": len(c["caught"]) / (len(c["caught"]) + len(c["uncaught"])),
                               "uncaught": c["uncaught"]} for test, c in sorted(by_test.items())},
            "mistakes": sorted(m.name for m in listed), "library_answers": library}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", default="", help="only assignments whose name contains this")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // max(THREADS)),
                        help="notebooks run at a time (default: CPU count // largest thread count)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="reference runs on seeds 0 .. N-1")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--reference-only", action="store_true", help="only the reference runs")
    only.add_argument("--variants-only", action="store_true", help="only the alternatives and mistakes")
    only.add_argument("--visible-only", action="store_true", help="only the mistakes against the visible tests")
    parser.add_argument("--smoke-variants", action="store_true",
                        help="grade alternatives and mistakes in smoke mode (default: full mode)")
    args = parser.parse_args()
    names = [p.name for p in sorted((ROOT / "solutions").iterdir())
             if list(p.glob("*.ipynb")) and args.k in p.name]
    results = {name: entry for name, entry in read_report("assessment").get("assignments", {}).items()
               if (ROOT / "solutions" / name).is_dir()}
    parts = {"reference": lambda name: reference(name, args.jobs, args.seeds),
             "variants": lambda name: variants(name, args.jobs, args.smoke_variants),
             "visible": lambda name: visible(name, args.jobs)}
    chosen = [part for part in parts if getattr(args, f"{part}_only")]
    parts = {part: parts[part] for part in chosen or parts}
    for name in names:
        entry = results.setdefault(name, {})
        for part, measure in parts.items():
            start = time.monotonic()
            entry[part] = {**measure(name), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "time_s": round(time.monotonic() - start, 1)}
        worst = min([t["pass_rate"] for t in entry.get("reference", {}).get("tests", {}).values()] or [1])
        graded, seen = entry.get("variants"), entry.get("visible")
        tqdm.write(f"{name}: reference {worst:.0%} (worst test)" + (
            f", alternatives {graded['alternatives']['rate']:.0%}, mistakes caught {graded['mistakes']['rate']:.0%}"
            if graded else "") + (
            f", visible tests catch >= {min(t['rate'] for t in seen['by_test'].values()):.0%} per function"
            if seen else ""))
    targets = {"reference_pass_rate": 1.0, "alternatives_full_marks": 1.0, "mistakes_caught": 0.95,
               "visible_mistakes_caught_per_test": 0.5}
    print(write_report("assessment", {"targets": targets, "assignments": dict(sorted(results.items()))}))
