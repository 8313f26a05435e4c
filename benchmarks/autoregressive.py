"""Benchmark of issue 8 (lectures 0, 8, 9): PixelCNN test bits/dim, M2 accuracy with 100 labels against the
labels-only baseline, and the memorisation check's distances. Full-mode settings of the lectures.

Run: ``python benchmarks/autoregressive.py`` (about 10 CPU-minutes; ``--part pixelcnn`` or ``--part m2`` runs one
half and merges it into the report). Writes ``benchmarks/reports/autoregressive.json``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from dgmcourse import autoregressive as ar
from dgmcourse import evaluation as ev
from dgmcourse import ssvae
from dgmcourse.data import binarize, load_mnist
from dgmcourse.device import get_device, seed_everything
from dgmcourse.reports import read_report, write_report
from dgmcourse.vae import MLPVAE, iwae_bound, train_vae

D = 28 * 28


def pixelcnn_and_baselines(device, epochs=4, n_samples=64, iwae_k=200):
    x_train, _ = load_mnist("train", source="embedded")
    x_test, _ = load_mnist("test", source="embedded")
    b_train, b_test = binarize(x_train), binarize(x_test)
    seed_everything(0)
    model = ar.PixelCNN(channels=32, layers=4)
    start = time.time()
    history = ar.train_pixelcnn(model, b_train, b_test, epochs=epochs, device=device, progress=False)
    train_s = time.time() - start
    with torch.no_grad():
        bpd_pixelcnn = ev.bits_per_dim(ar.log_likelihood(model, b_test).cpu(), D).mean().item()
    start = time.time()
    samples = ar.sample(model, n_samples, generator=torch.Generator().manual_seed(0))
    sample_ms = 1000 * (time.time() - start) / n_samples

    seed_everything(0)
    vae = MLPVAE(z_dim=16, hidden=256)
    train_vae(vae, b_train, epochs=20, device=device, progress=False)
    vae.cpu()
    bpd_vae = ev.bits_per_dim(iwae_bound(vae, b_test, iwae_k, generator=torch.Generator().manual_seed(0)),
                              D).mean().item()
    vae_samples = torch.bernoulli(vae.sample(n_samples, generator=torch.Generator().manual_seed(0)),
                                  generator=torch.Generator().manual_seed(1))

    valid, fit = b_train[:800], b_train[800:]
    flips = [0.02, 0.05, 0.1, 0.2]
    best = max(flips, key=lambda f: ev.bernoulli_kde_log_likelihood(valid, fit, f).mean().item())
    bpd_kde = ev.bits_per_dim(ev.bernoulli_kde_log_likelihood(b_test, b_train, best), D).mean().item()

    copies = b_train[torch.randint(len(b_train), (n_samples,), generator=torch.Generator().manual_seed(2))]
    held_out = b_test[:200]
    memo = {}
    for name, s in {"pixelcnn": samples, "vae": vae_samples, "training_copies": copies,
                    "real_test": b_test[200:264]}.items():
        r = ev.memorisation_check(s, b_train, held_out)
        memo[name] = {"median_distance": r.generated.median().item(),
                      "baseline_median_distance": r.baseline.median().item(),
                      "ratio": r.ratio, "fraction_closer_than_5pct_baseline": r.fraction_closer}
    return {
        "pixelcnn": {"channels": 32, "layers": 4, "epochs": epochs, "train_s": round(train_s, 1),
                     "test_bits_per_dim": bpd_pixelcnn, "test_nats": bpd_pixelcnn * D * math.log(2),
                     "train_nll_per_epoch": history["train_nll"], "sampling_ms_per_image": round(sample_ms, 1)},
        "vae_iwae": {"z_dim": 16, "epochs": 20, "k": iwae_k, "test_bits_per_dim_upper_bound": bpd_vae},
        "bernoulli_kde": {"flip": best, "test_bits_per_dim": bpd_kde},
        "memorisation": memo,
    }


def m2_against_baseline(device, epochs=25, alpha=50.0, z_dim=4, seeds=(0, 1)):
    x_train, y_train = load_mnist("train", source="embedded")
    x_test, y_test = load_mnist("test", source="embedded")
    runs = []
    for seed in seeds:
        idx = ssvae.labelled_subset(y_train, 10, seed=seed)
        seed_everything(seed)
        base = ssvae.mlp_classifier()
        acc_base = ssvae.train_labels_only(base, x_train[idx], y_train[idx], x_test, y_test, epochs=200,
                                           device=device, seed=seed)["test_accuracy"][-1]
        seed_everything(seed)
        m2 = ssvae.M2(z_dim=z_dim)
        start = time.time()
        hist = ssvae.train_m2(m2, x_train[idx], y_train[idx], x_train, x_test, y_test, epochs=epochs, alpha=alpha,
                              device=device, seed=seed, progress=False)
        runs.append({"seed": seed, "labels_only_accuracy": acc_base, "m2_accuracy": hist["test_accuracy"][-1],
                     "m2_accuracy_per_epoch": hist["test_accuracy"], "m2_train_s": round(time.time() - start, 1)})
    return {"labels": 100, "unlabelled": len(x_train), "test": len(x_test), "alpha": alpha, "z_dim": z_dim,
            "epochs": epochs, "runs": runs,
            "mean_labels_only_accuracy": sum(r["labels_only_accuracy"] for r in runs) / len(runs),
            "mean_m2_accuracy": sum(r["m2_accuracy"] for r in runs) / len(runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "pixelcnn", "m2"), default="all",
                        help="run one part only; its results are merged into the existing report")
    parser.add_argument("--m2-seeds", type=int, default=2, help="number of M2 / baseline runs (seeds 0, 1, ...)")
    args = parser.parse_args()
    device = get_device()
    report = {}
    report.update({"device": str(device), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                   "torch": torch.__version__,
                   "data": "embedded MNIST (4,000 train / 1,000 test), static binarisation at 0.5 for likelihoods"})
    if args.part in ("all", "pixelcnn"):
        start = time.time()
        report.update(pixelcnn_and_baselines(device))
        report["pixelcnn_part_s"] = round(time.time() - start, 1)
    if args.part in ("all", "m2"):
        report["m2"] = m2_against_baseline(device, seeds=tuple(range(args.m2_seeds)))
    # read late: parts may run in parallel; write_report sets name, measured_at and machine afresh
    kept = {key: value for key, value in read_report("autoregressive").items()
            if key not in ("name", "measured_at", "machine")}
    print(write_report("autoregressive", kept | report).read_text(), end="")


if __name__ == "__main__":
    main()
