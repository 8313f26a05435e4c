"""How long the test suite takes: `make test` (every tier) and `make test-quick` (the unit tier).

Runs the README's commands themselves, `make test` and `make test-quick` (after `make venv`, so the install is
not timed), each with a JUnit XML report (PYTEST_ARGS), and
writes benchmarks/reports/tests.json: per run its wall time and outcome counts, and per tier the number
of tests and their summed time (setup, call and teardown; the two workers run side by side, so the
tiers' times add up to about twice the wall time). The grading evidence's decisions (stale or unchanged,
tests/evidence/) are recorded too: a run with stale evidence re-measures it and is not the steady state.
Targets (2 CPU cores, no stale evidence, install excluded): make test <= 900 s, make test-quick <= 180 s.

    .venv/bin/python benchmarks/tests.py [--only all|quick] [--note "fresh clone"]
"""

import argparse
import re
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from dgmcourse.reports import ROOT, read_report, write_report

TARGETS = {"all": 900.0, "quick": 180.0}


def run(target: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = ["make", "--no-print-directory", target, f"PYTEST_ARGS=--junitxml={junit} -o junit_family=xunit1"]
        start = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - start
        tiers: dict[str, dict] = {}
        outcomes = {"passed": 0, "failed": 0, "skipped": 0}
        for case in ET.parse(junit).getroot().iter("testcase"):
            tier = next((p.get("value") for p in case.iter("property") if p.get("name") == "tier"), "unit")
            entry = tiers.setdefault(tier, {"tests": 0, "test_time_s": 0.0})
            entry["tests"] += 1
            entry["test_time_s"] = round(entry["test_time_s"] + float(case.get("time", 0)), 1)
            outcome = "failed" if case.find("failure") is not None or case.find("error") is not None \
                else "skipped" if case.find("skipped") is not None else "passed"
            outcomes[outcome] += 1
    section = re.search(r"^=+ grading evidence.*?=+\n(.*?)^=", result.stdout, re.M | re.S)
    evidence = section.group(1).strip().splitlines() if section else []
    print(result.stdout[-2500:])
    return {"command": f"make {target}", "exit_code": result.returncode,
            "wall_s": round(wall, 1), **outcomes, "tiers": dict(sorted(tiers.items())), "evidence": evidence}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("all", "quick"), help="measure one of the two runs (keep the other)")
    parser.add_argument("--note", default="", help="where it ran, e.g. 'fresh clone'")
    args = parser.parse_args()
    runs = read_report("tests").get("runs", {})
    subprocess.run(["make", "--no-print-directory", "venv"], cwd=ROOT, check=True)
    for name, target in (("all", "test"), ("quick", "test-quick")):
        if args.only in (None, name):
            runs[name] = {**run(target), "note": args.note, "target_wall_s": TARGETS[name],
                          "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            runs[name]["within_target"] = runs[name]["exit_code"] == 0 and runs[name]["wall_s"] <= TARGETS[name]
    print(write_report("tests", {"targets_wall_s": TARGETS, "runs": runs}))
