"""One code style for the library, tests, benchmarks and notebooks: `ruff check` with the project's configuration
(pyproject.toml [tool.ruff]: pycodestyle and pyflakes, lines of at most 120 characters), which reads the lectures'
and solutions' notebooks too; the generated assignments/ is excluded."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff_command() -> list[str]:
    """The ruff of this interpreter's environment (the pin in requirements.txt), or skip."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    for name in ("ruff", "ruff.exe"):
        binary = Path(sys.executable).parent / name
        if binary.is_file():
            return [str(binary)]
    pytest.skip(f"ruff is not installed in {sys.prefix} (pip install -r requirements.txt)")


def test_ruff_check_passes():
    command = _ruff_command() + [
        "check", "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--output-format", "concise", ".",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"ruff check exited {result.returncode}:\n{result.stdout}{result.stderr}", pytrace=False)


def test_ruff_checks_the_notebooks():
    """Every lecture and solution notebook is among the files `ruff check` reads; no generated assignment is."""
    command = _ruff_command() + ["check", "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--show-files", "."]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    checked = {Path(line).resolve().relative_to(ROOT).as_posix() for line in result.stdout.splitlines() if line.strip()}
    notebooks = {p.relative_to(ROOT).as_posix()
                 for p in (*ROOT.glob("lectures/*.ipynb"), *ROOT.glob("solutions/*/*.ipynb"))}
    assert notebooks, "no lecture or solution notebooks found"
    assert notebooks <= checked, f"ruff check does not read: {sorted(notebooks - checked)}"
    generated = sorted(path for path in checked if path.startswith("assignments/"))
    assert not generated, f"ruff check reads the generated release: {generated}"
