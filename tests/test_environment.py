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
