"""Every run time that a notebook or the README states is measured, not written.

A duration ("40 s", "2 min 20 s", "13 minutes") in a lecture's or a solution's markdown cells or code comments, or in
README.md, must be one of
* the notebook's own full-mode run time: a lecture's "**Run time.** About N s", an assignment's "runs in about N s",
  or "the notebook's ~N s": within 25 % of its entry in benchmarks/reports/notebooks.json;
* a figure of a benchmark report that the same cell (README: paragraph) names as `benchmarks/reports/<name>.json`:
  within 25 % of one of that report's timings (its numbers under a key that ends in ``_s`` or names a wall time).
Anything else is a run time nobody measured, and the test names it.
"""

import io
import json
import re
import tokenize
from functools import cache
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("lectures/*.ipynb")) + sorted(ROOT.glob("solutions/*/*.ipynb"))
TOLERANCE = 0.25

NUMBER = r"(\d+(?:\.\d+)?)"
DURATION = re.compile(rf"(?<![\w.])(?:{NUMBER} min {NUMBER} s|{NUMBER} (s|seconds?|min|minutes?))\b")
OWN = re.compile(r"\*\*Run time\.\*\*\s+About\s*$|runs in about\s*$|the notebook's ~$", re.IGNORECASE)
REPORT = re.compile(r"benchmarks/reports/(\w+)\.json")


def durations(text: str) -> list[tuple[float, str]]:
    """Every duration in ``text``: (seconds, what precedes it on its line, up to 40 characters)."""
    found = []
    for match in DURATION.finditer(text):
        minutes, seconds, value, unit = match.groups()
        total = (60 * float(minutes) + float(seconds) if minutes
                 else float(value) * (60 if unit.startswith("min") else 1))
        found.append((total, text[max(0, match.start() - 40):match.start()].split("\n")[-1]))
    return found


def _comments(source: str) -> str:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return ""
    return "\n".join(t.string for t in tokens if t.type == tokenize.COMMENT)


def units(path: Path) -> list[str]:
    """The texts a statement and its citation must share: a notebook's markdown cells and each code cell's comments;
    a Markdown file's paragraphs."""
    if path.suffix == ".ipynb":
        cells = nbformat.read(path, as_version=4).cells
        return [c.source if c.cell_type == "markdown" else _comments(c.source) for c in cells]
    return re.split(r"\n\s*\n", path.read_text())


@cache
def report(name: str) -> dict:
    path = ROOT / "benchmarks" / "reports" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def timings(value, timed: bool = False) -> list[float]:
    """A report's numbers under a key that ends in ``_s`` or names a wall time (at any depth)."""
    if isinstance(value, dict):
        return [t for key, v in value.items()
                for t in timings(v, timed or key.endswith("_s") or "wall" in key or "seconds" in key)]
    if isinstance(value, list):
        return [t for v in value for t in timings(v, timed)]
    return [float(value)] if timed and isinstance(value, (int, float)) and not isinstance(value, bool) else []


def measured_s(notebook: str) -> float | None:
    entries = [e for e in report("notebooks").get("notebooks", []) if e["notebook"] == notebook and not e["smoke"]]
    return entries[0]["wall_s"] if entries else None


def close(stated: float, measured: float) -> bool:
    return abs(stated - measured) <= max(2.0, TOLERANCE * measured)


def unmeasured(path: Path) -> list[str]:
    """The run times ``path`` states that the rules above do not confirm, each with its context."""
    problems = []
    own = path.relative_to(ROOT).as_posix() if path.suffix == ".ipynb" else None
    for text in units(path):
        cited = REPORT.findall(text)
        for seconds, before in durations(text):
            if own and OWN.search(before):
                measured = measured_s(own)
                if measured is None or not close(seconds, measured):
                    problems.append(f"'...{before}' {seconds:g} s: notebooks.json measured {measured} s in full mode")
            elif not any(close(seconds, t) for name in cited for t in timings(report(name))):
                problems.append(f"'...{before}' {seconds:g} s: matches no timing of a report this text cites "
                                f"({', '.join(cited) or 'none'})")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS + [ROOT / "README.md"], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_stated_run_time_is_measured(path):
    problems = unmeasured(path)
    assert not problems, "\n".join(problems)


def test_every_assignment_states_its_measured_run_time():
    for path in sorted(ROOT.glob("solutions/*/*.ipynb")):
        intro = nbformat.read(path, as_version=4).cells[0].source
        assert any(OWN.search(before) for _, before in durations(intro)), \
            f"{path.name}: the intro must say 'the finished notebook runs in about N s' (full mode, measured)"


def test_the_rules_catch_an_unmeasured_run_time(tmp_path, monkeypatch):
    assert durations("about 2 min 20 s, then 13 minutes and 0.5 s; 8s and 3 steps") == \
        [(140.0, "about "), (780.0, "about 2 min 20 s, then "), (0.5, "about 2 min 20 s, then 13 minutes and ")]
    assert timings({"wall_s": 3, "runs": 80, "median_wall_s": {"full": 12.5}, "x": {"first_build_s": 9}}) == \
        [3.0, 12.5, 9.0]
    monkeypatch.setattr("tests.test_run_times.ROOT", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("Building takes about 9 minutes.\n\nIt takes 540 s (`benchmarks/reports/site.json`).\n")
    report.cache_clear()
    (tmp_path / "benchmarks" / "reports").mkdir(parents=True)
    (tmp_path / "benchmarks" / "reports" / "site.json").write_text(json.dumps({"builds": {"first_build_s": 541.7}}))
    try:
        assert [p.split(":")[0] for p in unmeasured(readme)] == ["'...Building takes about ' 540 s"]
    finally:
        report.cache_clear()
