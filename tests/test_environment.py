"""requirements.txt is the single source of versions: pyproject.toml and environment.yml agree with it."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)")


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_requirements_pin_the_matched_torch_pair():
    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.2"
    assert pins["nbgrader"].startswith("0.9.") and pins["jupyterlab"].startswith("4.")
    assert pins["ipywidgets"].startswith("8.")


def test_pyproject_agrees_with_requirements():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["test"]
                     + project["optional-dependencies"]["site"])
    assert declared == requirements


def test_environment_yml_agrees_with_requirements():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert conda == requirements


@pytest.mark.xdist_group("guard")
def test_xdist_loadgroup_keeps_each_group_on_one_worker(request):
    """The modules that share one build, server or database (test_site, test_nbgrader, ...) are kept on one
    worker by `--dist loadgroup`, which tags their node ids with "@group". pytest 9.2.0 drops the tag
    silently (pytest-xdist issue #1386): the tests then spread over both workers and race."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@guard"), f"xdist groups are ignored (node id {request.node.nodeid!r})"


def test_the_wheel_ships_lecture_5_weights(tmp_path):
    """`pip install` from git (the lectures' Colab cell) builds a wheel: the beta-VAE weights that lecture 05 loads
    (dgmcourse.disentanglement.load_beta_vae) must be in it, not only in an editable checkout."""
    import shutil
    import subprocess
    import sys
    import zipfile

    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "dgmcourse", tmp_path / "dgmcourse", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path / "dist"), str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("dgmcourse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dgmcourse/weights/beta_vae_dsprites.pt" in names
    assert "dgmcourse/disentanglement.py" in names and "dgmcourse/grading/__init__.py" in names


def test_every_test_carries_at_most_one_tier(request):
    """The tiers of pyproject.toml (notebooks, grading, assessment, browser, site; none: unit) split the suite
    for `make test TIER=...` and `make test-quick`: a test in two tiers would run in both, and a marker outside
    the list is refused by --strict-markers. conftest.py records every collected test's tiers before -m/-k."""
    from conftest import TIERS, TIERS_OF_TESTS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert sorted(m.split(":")[0] for m in declared["markers"]) == sorted(TIERS)
    assert "--strict-markers" in declared["addopts"]
    tiers = request.config.stash[TIERS_OF_TESTS]
    modules = {path.name for path in (ROOT / "tests").glob("test_*.py")}
    if {nodeid.split("::")[0].split("/")[-1] for nodeid in tiers} < modules - {"test_grading_support.py"}:
        pytest.skip("this run collected part of the suite (make test and make test-quick collect all of it)")
    assert {nodeid: t for nodeid, t in tiers.items() if len(t) > 1} == {}
    counted = {tier: sum(tier in t for t in tiers.values()) for tier in TIERS}
    assert all(counted.values()), f"a tier without tests: {counted}"


# requirements.lock (`make lock`: uv from requirements.txt) pins every package, dependencies included, with hashes;
# `make` installs from it with --require-hashes.
LOCK_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;]+)\s*(?:;\s*(.*?))?\s*((?:--hash=\S+\s*)*)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_entries() -> list[tuple[str, str, str, list[str]]]:
    """(name, version, environment marker or "", hashes) for every requirement of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LOCK_ENTRY.match(line)
        assert match, f"requirements.lock: not a pinned, hashed requirement: {line[:100]!r}"
        name, version, marker, hashes = match.groups()
        entries.append((_normalise(name), version, marker or "", hashes.split()))
    return entries


def _make_lock_command() -> str:
    """The recipe of the Makefile's `lock` target, $(UV) written as `uv`."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^lock:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert match, "the Makefile has no one-line `lock` target"
    return match.group(1).strip().replace("$(UV)", "uv")


def test_the_lock_pins_every_requirement_at_its_version():
    requirements = {_normalise(name): version
                    for name, version in _pins((ROOT / "requirements.txt").read_text().splitlines()).items()}
    locked: dict[str, set[str]] = {}
    unconditional = set()
    for name, version, marker, _ in _lock_entries():
        locked.setdefault(name, set()).add(version)
        if not marker:
            unconditional.add(name)
    assert len(requirements) > 20 and requirements["torch"] == "2.14.1"
    assert {name: locked.get(name) for name in requirements} == {name: {v} for name, v in requirements.items()}
    assert set(requirements) <= unconditional, "a pinned package is locked for some platforms only"
    # the whole tree, not only the pins: torch's Linux wheel needs the CUDA libraries and triton
    assert len(locked) > 150 and "triton" in locked and sum(name.startswith("nvidia-") for name in locked) >= 10


def test_every_locked_package_has_hashes():
    entries = _lock_entries()
    assert len(entries) > 150
    unhashed = [name for name, _, _, hashes in entries if not hashes]
    assert unhashed == []
    malformed = [(name, h) for name, _, _, hashes in entries for h in hashes
                 if not re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h)]
    assert malformed == []
    everywhere = [name for name, _, marker, _ in entries if not marker]
    assert len(everywhere) == len(set(everywhere)), "a package locked twice, both without a marker"


def test_the_lock_header_names_the_make_lock_command():
    header = (ROOT / "requirements.lock").read_text().splitlines()[:2]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    command = header[1].lstrip("#").strip()
    assert command == _make_lock_command()
    assert command.startswith("uv pip compile requirements.txt ") and command.endswith(" -o requirements.lock")
    assert "--generate-hashes" in command.split() and "--universal" in command.split()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^UV_VERSION := \d+\.\d+\.\d+$", makefile, re.MULTILINE), "uv is not pinned"
    assert re.search(r"^\$\(STAMP\):.*\brequirements\.lock\b", makefile, re.MULTILINE)
    assert "pip install --quiet --require-hashes -r requirements.lock" in makefile


def test_the_lock_resolves_for_the_python_of_pyproject_and_environment_yml():
    command = _make_lock_command().split()
    python = command[command.index("--python-version") + 1]
    assert python == "3.11"
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == f">={python}"
    assert f"  - python={python}\n" in (ROOT / "environment.yml").read_text()


def test_the_installed_environment_is_the_lock():
    """What `make` installed into .venv is the lock, version for version (pip itself and dgmcourse aside)."""
    import sys
    from importlib.metadata import distributions

    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running in the checkout's .venv (make test installs it from requirements.lock)")
    locked = {(name, version) for name, version, _, _ in _lock_entries()}
    # the venv's site-packages only: once a test has imported setuptools, sys.path also holds its _vendor folder
    import sysconfig
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {(_normalise(d.metadata["Name"]), d.version) for d in distributions(path=site)}
    extra = {(name, version) for name, version in installed - locked if name not in ("pip", "dgmcourse")}
    assert extra == set(), "installed but not locked at this version"


def test_test_references_are_pinned_test_extras_that_only_tests_import():
    """The evidence digests leave out the pins of assessment.TEST_REFERENCES: that is sound only while no course
    code, notebook or grading file imports them, and they are pinned test extras."""
    from dgmcourse.assessment import TEST_REFERENCES

    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test_extras = _pins(extras["test"])
    assert set(TEST_REFERENCES) <= set(test_extras) and all(name in requirements for name in TEST_REFERENCES)
    pattern = re.compile(rf"^\s*\"?(?:import|from)\s+({'|'.join(TEST_REFERENCES)})\b", re.MULTILINE)
    files = [p for folder in ("dgmcourse", "lectures", "solutions", "assignments", "benchmarks", "docs")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".ipynb")] + [ROOT / "nbgrader_config.py"]
    assert len(files) > 40
    importers = [str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text())]
    assert importers == []
    assert pattern.search((ROOT / "tests" / "test_sde.py").read_text())  # the pattern finds a real import
