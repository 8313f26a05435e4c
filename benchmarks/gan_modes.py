"""Mode-coverage benchmark of issue 3 (lecture 3): toy GANs on PacGAN's ring and grid, and the MNIST classifier.

For each data set (ring of 8 Gaussians, σ = 0.01; grid of 25 Gaussians, σ = 0.05) and each recipe,
5 seeds are trained with :func:`dgmcourse.gan.train_toy_gan`; 2,500 samples per run are scored with
:func:`dgmcourse.gan.mode_coverage` (VEEGAN's modes covered and % high-quality samples) and
:func:`dgmcourse.gan.mode_reverse_kl` (PacGAN's reverse KL to the uniform mode distribution).
Recipes (same networks and budget):

* ``GAN``: non-saturating loss, minibatches of 512, Adam (lr 2e-3, β = (0.5, 0.999)), constant learning rate;
* ``GAN + lr decay`` (the best recipe on the ring): the same with the learning rate decayed linearly to 0;
* ``GAN + R1 + lr decay`` (the best recipe on the grid): the decayed recipe with the R1 penalty
  γ/2 E‖∇_x D(x)‖² on real data, γ = 0.03 (Mescheder et al. 2018, eq. 9);
* ``PacGAN2 + lr decay``: the decayed recipe with a packed discriminator (m = 2; Lin et al. 2018).

Networks: 3 hidden layers of 128 units in G and D; 3,000 (ring) or 6,000 (grid) generator steps.
Large minibatches let D see every mode at each step, a large decayed learning rate reaches sharp
modes within a minute, and R1 stops D from pushing samples off the modes late in training (γ and
the grid's steps chosen on seeds 0-4 of a short search with one thread per run).

The report also holds the published figures (VEEGAN Table 1, PacGAN Table 1) and the accuracy of
:mod:`dgmcourse.classifier` on the embedded MNIST test split. CPU time per run is the process time
(``time.process_time``); wall time per run is measured with 2 torch threads, one run at a time (the
issue's "each run ≤ 60 s on 2 CPU cores").

Run: ``python benchmarks/gan_modes.py [--data ring grid] [--seeds 0 1 2 3 4] [--recipes ...]``; results are merged
into ``benchmarks/reports/gan_modes.json`` (one entry per data set and recipe).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from dgmcourse import gan
from dgmcourse.classifier import load_classifier, predict_proba
from dgmcourse.data import load_mnist
from dgmcourse.reports import REPORTS, read_report

REPORT = REPORTS / "gan_modes.json"
N_EVAL = 2500
BATCH_SIZE, LR = 512, 2e-3
THREADS = 2
DATA = {"ring": (gan.ring_of_gaussians, gan.ring_means(), gan.RING_SIGMA, dict(hidden=128, steps=3000)),
        "grid": (gan.grid_of_gaussians, gan.grid_means(), gan.GRID_SIGMA, dict(hidden=128, steps=6000))}
# recipe: fields of gan.ToyGANConfig added to the settings above
RECIPES = {"GAN": dict(lr_decay=False), "GAN + lr decay": dict(lr_decay=True),
           "GAN + R1 + lr decay": dict(lr_decay=True, r1_weight=0.03),
           "PacGAN2 + lr decay": dict(lr_decay=True, pack_m=2)}
PUBLISHED = {
    "VEEGAN Table 1 (Srivastava et al. 2017)": {
        "GAN": {"ring": {"modes": 1, "high_quality_pct": 99.3}, "grid": {"modes": 3.3, "high_quality_pct": 0.5}},
        "VEEGAN": {"ring": {"modes": 8, "high_quality_pct": 52.9}, "grid": {"modes": 24.6, "high_quality_pct": 40.0}}},
    "PacGAN Table 1 (Lin et al. 2018)": {
        "GAN": {"ring": {"modes": 6.3, "high_quality_pct": 98.2}},
        "PacGAN2": {"ring": {"modes": 7.9, "high_quality_pct": 95.6}}},
}


def one_run(data: str, recipe: str, seed: int) -> dict:
    sample, means, sigma, arch = DATA[data]
    options = RECIPES[recipe]
    torch.manual_seed(seed)
    G = gan.ToyGenerator(hidden=arch["hidden"], n_layers=3, batch_norm=False)
    D = gan.ToyDiscriminator(hidden=arch["hidden"], n_layers=3, pack=options.get("pack_m", 1))
    cpu, wall = time.process_time(), time.perf_counter()
    config = gan.ToyGANConfig(steps=arch["steps"], batch_size=BATCH_SIZE, lr_g=LR, lr_d=LR, **options)
    gan.train_toy_gan(G, D, sample, config, device=torch.device("cpu"), seed=seed, progress=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    x = gan.sample_toy(G, N_EVAL, generator_rng=torch.Generator().manual_seed(seed))
    modes, hq = gan.mode_coverage(x, means, sigma)
    return {"seed": seed, "modes": modes, "high_quality_pct": 100 * hq,
            "reverse_kl": gan.mode_reverse_kl(x, means, sigma), "cpu_s": cpu, "wall_s": wall}


def summary(runs: list[dict]) -> dict:
    out = {}
    for key in ("modes", "high_quality_pct", "reverse_kl", "cpu_s", "wall_s"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": float(v.mean()), "std": float(v.std())}
    return out


def classifier_accuracy() -> float:
    model = load_classifier(device=torch.device("cpu"))
    x, y = load_mnist("test", source="embedded")
    return float((predict_proba(model, x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    report = read_report("gan_modes")
    report.update({"published": PUBLISHED, "n_eval_samples": N_EVAL, "machine": platform.platform(),
                   "torch_threads": THREADS,
                   "settings": {d: {"hidden": a["hidden"], "steps": a["steps"], "batch_size": BATCH_SIZE,
                                                        "lr": LR, "betas": [0.5, 0.999]}
                                                    for d, (_, _, _, a) in DATA.items()},
                   "recipes": {name: opts for name, opts in RECIPES.items()}})
    report.setdefault("results", {})
    report["mnist_classifier_test_accuracy"] = classifier_accuracy()
    for data in args.data:
        for recipe in args.recipes:
            runs = []
            for seed in args.seeds:
                runs.append(one_run(data, recipe, seed))
                print(data, recipe, runs[-1], flush=True)
                # written after every run and re-read first: invocations for other data sets may run at once
                latest = read_report("gan_modes").get("results", {})
                report["results"] = {**report["results"], **latest}
                report["results"].setdefault(data, {})[recipe] = {"runs": runs, **summary(runs)}
                REPORT.write_text(json.dumps(report, indent=2) + "\n")
    for data, recipes in report["results"].items():
        for recipe, r in recipes.items():
            print(f"{data:4s} {recipe:20s} modes {r['modes']['mean']:5.2f} ± {r['modes']['std']:.2f}  "
                  f"HQ {r['high_quality_pct']['mean']:5.1f} ± {r['high_quality_pct']['std']:.1f} %  "
                  f"reverse KL {r['reverse_kl']['mean']:.3f}  "
                  f"CPU {r['cpu_s']['mean']:.0f} s, wall {r['wall_s']['mean']:.0f} s per run")


if __name__ == "__main__":
    main()
