"""Benchmark of the foundation (issue: VAE lecture and assignment 1), full setting, CPU.

Measures: the time to autograde one submission of assignment 1 with nbgrader; the test ELBO and IWAE (k = 100)
of the lecture's two VAEs on the embedded test split. Target (2 CPU cores): autograding <= 60 s.
The notebooks' own full-mode times and memory are in benchmarks/notebooks.py.
Writes benchmarks/reports/vae.json.

Run: .venv/bin/python benchmarks/vae.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dgmcourse import vae
from dgmcourse.data import load_mnist
from dgmcourse.reports import ROOT, write_report


def autograde_seconds() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "solutions", course / "solutions")
        env = {**os.environ, "DGMCOURSE_SMOKE": "0",
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
        nbgrader = [sys.executable, "-m", "nbgrader"]
        subprocess.run(nbgrader + ["generate_assignment", "a1_vae", "--force"], cwd=course, env=env, check=True,
                       capture_output=True)
        shutil.copytree(course / "solutions" / "a1_vae", course / "submitted" / "student" / "a1_vae")
        start = time.perf_counter()
        subprocess.run(nbgrader + ["autograde", "a1_vae", "--force"], cwd=course, env=env, check=True,
                       capture_output=True)
        return time.perf_counter() - start


def trained_vae_figures(epochs: int = 25) -> dict:
    x_train, _ = load_mnist("train", source="embedded")
    x_test, _ = load_mnist("test", source="embedded")
    figures = {}
    for name, model in (("mlp_z2", vae.MLPVAE(z_dim=2, hidden=256)), ("conv_z16", vae.ConvVAE(z_dim=16))):
        start = time.perf_counter()
        vae.train_vae(model, x_train, epochs=epochs, seed=0, progress=False)
        generator = torch.Generator().manual_seed(0)
        figures[name] = {"epochs": epochs, "train_s": time.perf_counter() - start,
                         "test_elbo_nats": vae.evaluate_elbo(model, x_test),
                         "test_iwae_k100_nats": vae.iwae_bound(model, x_test, 100, generator=generator).mean().item()}
    return figures


if __name__ == "__main__":
    report = {"autograde_one_submission_s": autograde_seconds(),
              "trained_vae_on_embedded_test_split": trained_vae_figures(), "targets": {"autograde_s": 60}}
    print(write_report("vae", report).read_text())
