"""Benchmark of issue 4 (lecture 4, assignment 3): exact EMD speed, the WGAN-GP critic's error against
the true Wasserstein distance (the notebooks' full-mode times are in benchmarks/notebooks.py).

Times are wall clock and CPU seconds: on a shared machine the wall time grows with the load (the
report records the load average), the CPU time much less.

Run: ``python benchmarks/wasserstein.py`` (a few minutes on 2 CPU cores).
Writes ``benchmarks/reports/wasserstein.json``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from dgmcourse import divergences as dv
from dgmcourse import gan
from dgmcourse.device import seed_everything
from dgmcourse.reports import write_report

def emd_timing(n=2000, repeats=5):
    """Exact W_1 between two 2-D clouds of n points (cost matrix + network simplex), seconds."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + [1.0, 0.0]
    times, cpu, w = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        w, plan = dv.point_cloud_wasserstein(x, y)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    rng_small = np.random.default_rng(1)
    xs, ys = rng_small.normal(size=(100, 2)), rng_small.normal(size=(100, 2)) + [1.0, 0.0]
    start = time.perf_counter()
    w_lp, _ = dv.point_cloud_wasserstein(xs, ys, solver="linprog")
    lp_time = time.perf_counter() - start
    return {"n_points": n, "dimension": 2, "W": w, "repeats": repeats,
            "wall_median_s": statistics.median(times), "wall_max_s": max(times),
            "cpu_median_s": statistics.median(cpu), "cpu_max_s": max(cpu),
            "limit_s": 2.0, "within_limit_cpu": max(cpu) <= 2.0,
            "within_limit_wall_median": statistics.median(times) <= 2.0,
            "plan_nonzeros": int((plan > 0).sum()),
            "linprog_100_points_s": lp_time, "linprog_100_points_W": w_lp,
            "network_simplex_100_points_W": dv.point_cloud_wasserstein(xs, ys)[0]}


def critic_error(theta=0.5, steps=3000, batch=256, eval_n=20_000, seed=0):
    """Train a WGAN-GP critic between the parallel lines at distance theta; compare its estimate with W."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    critic = gan.ToyDiscriminator(hidden=64, n_layers=2)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(steps):
        real = dv.sample_parallel_lines(0.0, batch, generator=gen)
        fake = dv.sample_parallel_lines(theta, batch, generator=gen)
        loss = (gan.wasserstein_critic_loss(critic(real), critic(fake))
                + 10 * gan.gradient_penalty(critic, real, fake, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real = dv.sample_parallel_lines(0.0, eval_n, generator=gen)
        fake = dv.sample_parallel_lines(theta, eval_n, generator=gen)
        estimate = float(critic(real).mean() - critic(fake).mean())
    true_w = dv.parallel_lines_divergences(theta)["W"]
    sample_w = dv.point_cloud_wasserstein(real[:2000], fake[:2000])[0]
    return {"setting": f"parallel lines, theta={theta}, WGAN-GP critic (lambda=10), {steps} steps",
            "critic_estimate": estimate, "true_W": true_w, "exact_W_2000_samples": sample_w,
            "abs_error": abs(estimate - true_w), "rel_error": abs(estimate - true_w) / true_w}


def wgan_gp_training_error(steps=800, seed=0):
    """Lecture 4's WGAN-GP run on the line: final critic estimate (mean of last 50 steps) vs true W (POT)."""
    seed_everything(seed)
    G = gan.ToyGenerator(z_dim=2, hidden=64, n_layers=2, batch_norm=False)
    D = gan.ToyDiscriminator(hidden=64, n_layers=2)
    with torch.no_grad():
        G.net[-1].bias += torch.tensor([2.0, 0.0])
    config = gan.ToyGANConfig(steps=steps, loss="wgan-gp", k=5, batch_size=128, lr_g=1e-3, lr_d=1e-3,
                              betas=(0.5, 0.9), gp_weight=1.0)
    hist = gan.train_toy_gan(G, D, lambda n, g: dv.sample_parallel_lines(0.0, n, generator=g), config,
                             n_snapshot=2000, device=torch.device("cpu"), seed=seed, progress=False)
    reference = dv.sample_parallel_lines(0.0, 2000, generator=torch.Generator().manual_seed(123))
    true_w = dv.point_cloud_wasserstein(hist["snapshots"][-1][1], reference)[0]
    estimate = float(np.mean(hist["wasserstein"][-50:]))
    return {"setting": f"lecture 4 line data, WGAN-GP (lambda=1), {steps} generator steps",
            "critic_estimate_last50": estimate, "true_W_exact_2000_samples": true_w,
            "abs_error": abs(estimate - true_w), "train_time_s": hist["time_s"]}


def main():
    torch.set_num_threads(1)
    report = {"load_average_at_start": os.getloadavg()}
    report["emd_2000_points"] = emd_timing()
    print("EMD:", report["emd_2000_points"])
    report["critic_vs_true_W"] = critic_error()
    print("critic:", report["critic_vs_true_W"])
    report["wgan_gp_training"] = wgan_gp_training_error()
    print("training:", report["wgan_gp_training"])
    report["load_average_at_end"] = os.getloadavg()
    print("wrote", write_report("wasserstein", report))


if __name__ == "__main__":
    main()
