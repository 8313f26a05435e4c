"""Build times of the course website (`make site`).

Runs `make site` (full mode; with --smoke, `make site SMOKE=1`) twice in a row in this checkout: first
after deleting its build folder and execution cache (_build/site or _build/site-smoke: every lecture
executes once), then again with no notebook changed (nothing executes). Records both wall times, the
number of pages and the heaviest page with its images. Writes benchmarks/reports/site.json (the full
and the smoke entries are kept side by side).

    python benchmarks/site.py [--smoke]

Targets (2 CPU cores): first build <= 12 min, rebuild <= 60 s, every page <= 3 MB with its images.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgmcourse.reports import read_report, write_report  # noqa: E402

TARGETS = {"first_build_s": 720.0, "rebuild_s": 60.0, "page_mb": 3.0}


def _build(smoke: bool) -> float:
    start = time.perf_counter()
    subprocess.run(["make", "--no-print-directory", "site"] + (["SMOKE=1"] if smoke else []), cwd=ROOT, check=True)
    return time.perf_counter() - start


def _heaviest(html: Path) -> tuple[str, float, int]:
    weights = {}
    for page in html.rglob("*.html"):
        if "_static" in page.parts:
            continue
        weight = page.stat().st_size
        for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', page.read_text(encoding="utf-8")):
            if not src.startswith("data:"):
                weight += (page.parent / src).stat().st_size
        weights[page.relative_to(html).as_posix()] = weight / 1e6
    name = max(weights, key=weights.get)
    return name, weights[name], len(weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="measure `make site SMOKE=1`")
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "full"
    build = ROOT / "_build" / ("site-smoke" if args.smoke else "site")
    shutil.rmtree(build, ignore_errors=True)
    first = _build(args.smoke)
    again = _build(args.smoke)
    page, mb, pages = _heaviest(build / "html")
    entry = {"first_build_s": round(first, 1), "rebuild_s": round(again, 1), "pages": pages,
             "heaviest_page": page, "heaviest_page_mb": round(mb, 2), "load_average_after": list(os.getloadavg()),
             "within_targets": first <= TARGETS["first_build_s"] and again <= TARGETS["rebuild_s"]
             and mb <= TARGETS["page_mb"]}
    report = read_report("site")
    builds = {**report.get("builds", {}), mode: entry}
    print(write_report("site", {"targets": TARGETS, "builds": builds}).read_text(), end="")


if __name__ == "__main__":
    main()
