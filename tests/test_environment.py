"""requirements.txt is the single source of versions: pyproject.toml and environment.yml agree with it."""

import re
import tomllib
from pathlib import Path

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
