"""The course cites the works it was written from, never the internal source files behind it.

The lectures, library and benchmarks were written from five source documents kept outside the
repository (numbered 000-004). Students never see those files, so "seed 002" or "seeds 001-003"
means nothing to them: name the work instead (e.g. "Isachenko, Deep Generative Models, lecture 9,
Ozon Masters, 2021", then "Isachenko, 2021"). Random-seed wording ("seed 0", "seeds 0-2",
``--seeds 20``, ``DGMCOURSE_SEED``) is unaffected: the pattern needs three digits starting with 0.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FILE_REFERENCE = re.compile(r"(?i)\bseeds? ?0\d\d\b")


def _tracked_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error})")
    return [name for name in listing.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for binary (NUL bytes or not UTF-8) and missing files."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_pattern_matches_source_file_references_only():
    for text in ("seed 000", "Seed 004's claim", "seeds 001 and 004", "seeds 001-003", "(seed 002)", "seed002"):
        assert SOURCE_FILE_REFERENCE.search(text), text
    for text in ("seed 0", "seeds 0-2", "--seeds 20", "seeds 100-104", "DGMCOURSE_SEED", "course_seed()",
                 "SEEDS = [0, 1, 2]", "manual_seed(0)", "seed=0", "seed 0123", "seed_000"):
        assert not SOURCE_FILE_REFERENCE.search(text), text


def test_no_references_to_the_internal_source_files():
    this_file = Path(__file__).resolve()
    offenders = []
    for name in _tracked_files():
        path = ROOT / name
        if name.startswith("tests/") or path.resolve() == this_file:
            continue
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            match = SOURCE_FILE_REFERENCE.search(line)
            if match:
                offenders.append(f"{name}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    assert not offenders, ("cite the work (authors, title, year; for slides: lecturer, course, year) "
                           "instead of the internal source file:\n" + "\n".join(offenders))


# --- docs/references.md: the table "library function -> lecture section" -------------------------------------

REFERENCES = ROOT / "docs" / "references.md"
NOT_IN_TABLE = {"grading", "assessment"}  # the grading machinery: not taught in a lecture
TABLE_HEADING = "## 3. Library function → lecture section"


def _public_library_objects() -> set[str]:
    """``module.name`` of every public function and class defined in a dgmcourse module (as inspect lists them)."""
    import importlib
    import inspect
    import pkgutil

    import dgmcourse

    names = set()
    for info in pkgutil.iter_modules(dgmcourse.__path__):
        if info.name in NOT_IN_TABLE or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"dgmcourse.{info.name}")
        for name, value in vars(module).items():
            if (not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
                    and value.__module__ == module.__name__):
                names.add(f"{info.name}.{name}")
    return names


def _table_rows() -> list[list[str]]:
    """The cells of each body row of the table in section 3 of docs/references.md."""
    text = REFERENCES.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"docs/references.md has no section {TABLE_HEADING!r}"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0].startswith("library"):  # the header
            continue
        rows.append(cells)
    return rows


def test_every_public_library_function_is_in_the_references_table():
    listed = {match.group(1) for cells in _table_rows() if (match := re.fullmatch(r"`([\w.]+)`", cells[0]))}
    missing = sorted(_public_library_objects() - listed)
    assert not missing, ("add these to the table of docs/references.md, section 3 (the lecture section that "
                         "teaches each, or '—' and where it is used):\n" + "\n".join(missing))


def test_the_references_table_names_existing_functions_and_lectures():
    public = _public_library_objects()
    rows = _table_rows()
    assert rows
    stale, missing_lectures = [], []
    for cells in rows:
        name = cells[0].strip("`")
        if name not in public:
            stale.append(name)
        for lecture in re.findall(r"lectures/[\w.-]+?\.ipynb", " ".join(cells)):
            if not (ROOT / lecture).is_file():
                missing_lectures.append(f"{name}: {lecture}")
    assert not missing_lectures, ("lecture files named in docs/references.md do not exist:\n"
                                  + "\n".join(missing_lectures))
    assert not stale, "docs/references.md lists functions the library no longer has:\n" + "\n".join(stale)
