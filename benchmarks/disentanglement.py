"""Benchmark of issue 5 (lecture 5, assignment 4): time and value of the six disentanglement metrics
with the sizes of Locatello et al. 2019 (10,000 points; DCI, explicitness and SAP trained on 10,000 and tested
on 5,000; BetaVAE and FactorVAE with 10,000 training and 5,000 evaluation votes of 64-sample batches), for
three representations of the small dSprites variant of the lecture (32x32, 16 positions, 10 orientations):

* ``identity``: the factor indices themselves;
* ``beta_vae``: the mean encoder of a beta-VAE (MLPVAE, z_dim 10, beta = 4, 6 epochs on 10,000 images);
* ``entangled``: a perfect Gaussian code z after the entangling map f(z) = A z of Locatello et al.'s Theorem 1.

Run: ``python benchmarks/disentanglement.py [--n-jobs 2]``. Writes ``benchmarks/reports/disentanglement.json``
with wall-clock and process CPU seconds per metric (CPU time is the fairer figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.stats as st
import torch

from dgmcourse import disentanglement as dis
from dgmcourse.data import DSprites
from dgmcourse.device import get_device
from dgmcourse.vae import MLPVAE, train_vae

REPORT = Path(__file__).resolve().parent / "reports" / "disentanglement.json"
NUM_TRAIN, NUM_TEST = 10000, 5000


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2)}


def score_all(data, represent, seed, n_jobs):
    """Each metric's value and time; shared code samples are drawn once (their time is reported too)."""
    rng = np.random.default_rng(seed)
    (train, test), sample_time = timed(lambda: (dis.sample_codes(data.sample_factors, represent, NUM_TRAIN, rng),
                                                dis.sample_codes(data.sample_factors, represent, NUM_TEST, rng)))
    (codes, factors), (codes_test, factors_test) = train, test
    jobs = {
        "BetaVAE": lambda: dis.beta_vae_score(data.sample_factors, represent, rng)["eval_accuracy"],
        "FactorVAE": lambda: dis.factor_vae_score(data.sample_factors, represent, rng)["eval_accuracy"],
        "MIG": lambda: dis.mig(codes, factors),
        "DCI": lambda: dis.dci(codes, factors, codes_test, factors_test, n_jobs=n_jobs),
        "Modularity": lambda: dis.modularity(codes, factors),
        "Explicitness": lambda: dis.explicitness(codes, factors, codes_test, factors_test)["explicitness_test"],
        "SAP": lambda: dis.sap(codes, factors, codes_test, factors_test),
    }
    out = {"sample_codes": {"value": None, **sample_time}}
    for name, job in jobs.items():
        value, took = timed(job)
        if name == "DCI":
            value = {key: round(value[key], 4) for key in ("disentanglement", "completeness", "informativeness_test")}
        else:
            value = round(float(value), 4)
        out[name] = {"value": value, **took}
        print(f"  {name:12s} {value}  {took}", flush=True)
    out["total"] = {key: round(sum(v[key] for v in out.values()), 2) for key in ("wall_s", "cpu_s")}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-jobs", type=int, default=2, help="threads for DCI's per-factor classifiers")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = DSprites(resolution=32, num_positions=16, num_orientations=10)
    grid = dis.all_factors(data.factor_sizes)
    x_all = data.sample_observations_from_factors(grid, rng)

    model = MLPVAE(x_shape=(1, 32, 32), z_dim=10, hidden=256)
    x_train = torch.as_tensor(x_all[rng.choice(len(x_all), 10000, replace=False)])
    (history, train_time) = timed(lambda: train_vae(model, x_train, epochs=6, beta=4.0, seed=0,
                                                    device=get_device(), progress=False))
    vae_table = dis.mean_representation(model, x_all)

    A = dis.random_orthogonal(data.num_factors, rng)
    representations = {
        "identity": lambda f, r: f.astype(float),
        "beta_vae": dis.table_representation(vae_table, data.factor_sizes),
        "entangled": lambda f, r: dis.entangle(torch.as_tensor(dis.gaussian_codes(f, data.factor_sizes, r)),
                                               A, st.norm()).numpy(),
    }
    report = {
        "settings": {"data": "DSprites(resolution=32, num_positions=16, num_orientations=10)",
                     "factor_sizes": data.factor_sizes, "num_train": NUM_TRAIN, "num_test": NUM_TEST,
                     "batch_size_interventions": 64, "dci_n_jobs": args.n_jobs},
        "beta_vae_training": {"beta": 4.0, "epochs": 6, "images": 10000, "z_dim": 10,
                              "final_train_elbo_nats": round(history["train_elbo"][-1], 2),
                              "final_train_kl_nats": round(history["train_kl"][-1], 2), **train_time},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": [round(x, 1) for x in os.getloadavg()]},
        "representations": {},
    }
    for name, represent in representations.items():
        print(name, flush=True)
        report["representations"][name] = score_all(data, represent, seed=1, n_jobs=args.n_jobs)
    report["machine"]["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
