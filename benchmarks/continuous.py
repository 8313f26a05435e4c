"""Flow matching, rectified flow, DDPM and DDIM against sampling steps, the PF-ODE likelihood, and guided digits
(issue 29, lecture 12), on the data and scoring of ``gan_modes`` and ``diffusion_flows``.

Toy mixtures (ring of 8 Gaussians, σ = 0.01; grid of 25, σ = 0.05), each run scored on 2,500 samples with
:func:`dgmcourse.gan.mode_coverage` (modes covered, % high-quality samples within 3σ) and
:func:`dgmcourse.gan.mode_reverse_kl` (PacGAN's reverse KL to the uniform mode distribution), at 1, 2, 4, 8, 16, 50
and 1,000 (the full chain of DDPM) sampling steps, from the same noise:

* ``flow matching``: :class:`dgmcourse.flow_matching.VelocityMLP` trained by :func:`~dgmcourse.flow_matching.train_cfm`
  on the linear path (σ_min = 0; Lipman et al. 2023, eq. 23) with noise and data drawn independently and the
  training times from the logit-normal density of Esser et al. (2024, sec. 3.1), which spends the training on the
  middle times where a sample chooses its mode (``TUNING``: 83 % of the grid's samples high-quality at 16 Euler steps
  with uniform times, 92 % with these), sampled with Euler's method (:func:`~dgmcourse.flow_matching.euler_sample`);
* ``OT-CFM``: the same network and path, each batch's noise reordered by the exact minibatch OT plan (Tong et al.
  2024), Euler;
* ``rectified flow (1 reflow)``: the flow-matching network's ODE (Heun, 100 steps) run on fresh noise gives the
  pairs (z_0, z_1) on which a copy of it is trained further with uniform times (Liu, Gong & Liu 2023, Algorithm 1),
  Euler;
* ``DDPM``: ``diffusion_flows``' recipe (:class:`dgmcourse.diffusion.EpsMLP`, L_simple, linear schedule, T = 1,000);
  with S < T steps, ancestral sampling on the respaced chain of the sub-sequence
  :func:`~dgmcourse.diffusion.ddim_timesteps` (β'_i = 1 - ᾱ_{τ_i}/ᾱ_{τ_{i-1}}; Nichol & Dhariwal 2021, sec. 4), with
  the posterior variances β̃ (``kind="posterior"``, which make one step the posterior mean; Ho et al. 2020, eq. 7);
* ``DDIM``: the same network sampled deterministically on the sub-sequence (Song, Meng & Ermon 2021, eq. 12);
* the best GAN of ``diffusion_flows`` on the same report seeds (from ``benchmarks/reports/diffusion_flows.json``): a
  line, GANs take one step.

Likelihood: the flow-matching network's exact log-likelihood by the instantaneous change of variables
(:func:`dgmcourse.sde.ode_log_likelihood`, exact divergence, Heun) on the 5,000 test points of ``diffusion_flows``'
RealNVP and MAF runs of the same seed (same generator, same draws; a rotation does not change an NLL), against the
mixture's entropy H(p): the gap is KL(p || q) in nats, next to theirs.

Digits: class-conditional latent flow matching with classifier-free guidance (Ho & Salimans 2022), as lecture 12:
``diffusion_flows``' latent VAE (lecture 1's MLPVAE, 16 codes, 10 epochs) on the 4,000 embedded training digits, a
:class:`dgmcourse.guidance.ConditionalVelocityMLP` on its standardised encoder means with labels dropped at rate 0.2,
sampled by Euler (50 steps) with :func:`~dgmcourse.guidance.guided_velocity` at each guidance scale w, 100 samples
per class; scored by the course classifier: class accuracy (the label asked for), Fréchet distance in its feature
space to the 1,000 test digits (``evaluation.classifier_frechet_distance``, as ``diffusion_flows``), confidence and
the collision entropy of the class histogram. Unguided latent diffusion is ``diffusion_flows``' on the same seeds.

Seeds: every setting below was chosen on seeds 0-4 (``TUNED_ON``; ``TUNING`` records what it rests on); the report
uses seeds 100-104, never tuned on (those of ``diffusion_flows``). Timing: 2 torch threads, one run at a time; a run's
wall and CPU time are its training plus its slowest sampling (the full chain); the likelihood is timed apart.

Run: ``python benchmarks/continuous.py [--parts toy digits] [--seeds ...] [--smoke] [--out PATH]``; writes
``benchmarks/reports/continuous.json`` (``--smoke`` shrinks every budget, for testing the script only).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import torch
from torch.distributions import Normal, SigmoidTransform, TransformedDistribution

from dgmcourse import diffusion as dm
from dgmcourse import flow_matching as fm
from dgmcourse import guidance
from dgmcourse import sde
from dgmcourse.classifier import load_classifier, predict_proba
from dgmcourse.data import load_mnist
from dgmcourse.reports import read_report
from dgmcourse.vae import MLPVAE, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_flows as df  # noqa: E402  (data, scoring, DDPM recipe, flows' test points, latent VAE)
import gan_modes  # noqa: E402

THREADS = 2
N_EVAL = gan_modes.N_EVAL
SEEDS = df.SEEDS                                 # 100-104, never tuned on
TUNED_ON = [0, 1, 2, 3, 4]
STEPS = [1, 2, 4, 8, 16, 50, df.T]               # sampling steps; T = 1,000 is DDPM's full chain
# the flow models see data / scale (as the diffusion models of diffusion_flows, whose recipe DDPM keeps)
# t_logit_normal: (m, s) of the logit-normal density of the training times (Esser et al. 2024, sec. 3.1) of flow
# matching and OT-CFM; reflow keeps U[0, 1] (Liu, Gong & Liu 2023), which one- and two-step sampling needs
FLOW = {"grid": dict(scale=0.5, n_data=20_000, hidden=512, n_layers=3, steps=4000, batch=512, lr=2e-3,
                     t_logit_normal=(0.75, 1.0)),
        "ring": dict(scale=0.5, n_data=20_000, hidden=512, n_layers=3, steps=4000, batch=512, lr=2e-3,
                     t_logit_normal=(0.75, 1.0))}
OT = dict(steps=2000, batch=256)                 # OT-CFM: the flow recipe with the minibatch OT plan
REFLOW = dict(pairs=10_000, ode_steps=100, steps=2000, lr=1e-3)
NLL = dict(n_steps=100, method="heun")
DIGITS = dict(n_train=4000, p_uncond=0.2, hidden=256, n_layers=3, emb=32, steps=3000, batch=256, lr=2e-3,
              euler_steps=50, per_class=100, scales=[0.0, 1.0, 2.0, 3.0, 4.0])
# what the settings above rest on (seeds 0-1; modes / HQ % / reverse KL at 2, 8, 16 Euler steps and the full 1,000;
# flow matching on the grid unless said; a 2-thread machine shared with a second tuning run where "shared")
TUNING = {
    "grid, scale 0.5, 3x256, 5,000 steps of 256, lr 3e-3, seed 0": [[9, 34.8, 2.174], [25, 69.0, 0.108],
                                                                   [25, 76.2, 0.044], [25, 82.6, 0.016]],
    "same, OT-CFM (2,500 steps) / 1 reflow, 16 steps, seed 0": [[25, 9.5, 0.305], [25, 54.4, 0.030]],
    "same, scale 0.25 / scale 2, 16 steps, seed 0": [[25, 57.7, 0.304], [25, 57.4, 0.044]],
    "same, sigma_min 0.01, seed 0 (shared)": [[8, 25.8, 2.142], [25, 63.8, 0.112], [25, 71.6, 0.044],
                                              [25, 78.6, 0.025]],
    "4x256, 6,000 steps of 512, lr 2e-3, seed 0 (shared)": [[10, 51.8, 2.475], [25, 72.0, 0.139], [25, 79.7, 0.038],
                                                            [25, 87.0, 0.009]],
    "4x256, 6,000 steps of 1,024, lr 2e-3, seed 0 (shared)": [[9, 56.0, 2.590], [25, 82.0, 0.163],
                                                              [25, 87.1, 0.045], [25, 93.4, 0.004]],
    "3x512, 6,000 steps of 512, lr 2e-3, seed 0 (shared)": [[9, 53.9, 2.287], [25, 84.2, 0.144], [25, 89.4, 0.034],
                                                            [25, 94.2, 0.006]],
    "3x512, 6,000 steps of 512, lr 2e-3, seed 1 (87 s of training alone: over budget with reflow)": [
        [11, 54.4, 2.518], [25, 82.9, 0.157], [25, 88.5, 0.047], [25, 93.6, 0.005]],
    "ring, the settings above (3x512, 4,000 steps), seed 0 (shared), flow matching / OT-CFM / 1 reflow": [
        [[0, 0.0, None], [8, 85.7, 0.0007], [8, 94.2, 0.0009], [8, 90.2, 0.0007]],
        [[8, 66.1, 0.0035], [8, 80.6, 0.0012], [8, 78.6, 0.0011], [8, 75.4, 0.0009]],
        [[8, 73.2, 0.0011], [8, 81.0, 0.0005], [8, 81.4, 0.0003], [8, 82.2, 0.0004]]],
    "ring, ODE NLL gap, seed 0": 0.129,
    # with the 3x512 recipe of 4,000 steps of 512 (33 s of training alone on 2 threads on 2026-12-06): at 16 / 1,000
    # Euler steps on the grid
    "uniform training times, seed 0": [[25, 83.4, 0.034], [25, 89.7, 0.009]],
    "same, weights averaged (EMA 0.999), seed 0": [[25, 56.5, 0.073], [25, 64.8, 0.020]],
    "same, 2,500 steps of 1,024, seed 0": [[25, 55.8, 0.072], [25, 65.3, 0.089]],
    "logit-normal times (0.5, 1), seeds 0 / 1": [[[25, 90.8, 0.015], [25, 95.2, 0.016]],
                                                 [[25, 92.4, 0.011], [25, 95.7, 0.008]]],
    "logit-normal times (1.0, 1), seed 0": [[25, 92.7, 0.018], [25, 96.2, 0.037]],
    "logit-normal times (0.75, 1), seeds 0 / 1": [[[25, 92.1, 0.007], [25, 95.4, 0.021]],
                                                  [[25, 92.3, 0.007], [25, 96.0, 0.012]]],
    "the exact marginal field (no network), 16 uniform Euler steps, noise of seeds 0 / 1": [[25, 98.8, 0.065],
                                                                                            [25, 98.4, 0.048]],
    "grid, seed 0, 1 reflow at 2 steps with logit-normal / uniform times": [[25, 18.0, 0.113], [25, 42.0, 0.044]],
    "digits, seed 0, accuracy / Fréchet at w = 0, 1, 2, 3, 4": [[0.114, 354.4], [0.767, 296.0], [0.916, 213.2],
                                                               [0.959, 193.7], [0.970, 185.6]],
}
SMOKE = dict(flow_steps=150, ot_steps=60, reflow_pairs=1000, reflow_steps=60, diffusion_steps=150, n_test=500,
             n_entropy=20_000, vae_epochs=1, digit_steps=100, per_class=10, steps=[1, 4, 50])
MODELS = ("flow matching", "OT-CFM", "rectified flow (1 reflow)", "DDPM", "DDIM")


def steps_grid(smoke: bool) -> list[int]:
    return SMOKE["steps"] if smoke else STEPS


def flow_scores(v_model, x0: torch.Tensor, scale: float, data: str, smoke: bool) -> dict:
    out = {}
    for n in steps_grid(smoke):
        x, cpu, wall = df.timed(lambda: fm.euler_sample(v_model, x0, n, progress=False))
        out[str(n)] = {**df.toy_scores(x * scale, data), "sample_cpu_s": cpu, "sample_wall_s": wall}
    return out


def respaced_ddpm(net, x_T: torch.Tensor, schedule, n: int, generator: torch.Generator) -> torch.Tensor:
    """Ancestral sampling on the S = n step chain of the sub-sequence τ (Nichol & Dhariwal 2021, sec. 4)."""
    taus = dm.ddim_timesteps(schedule.T, n)
    bars = schedule.alpha_bars[torch.cat([torch.zeros(1, dtype=torch.long), taus])]
    respaced = dm.schedule_from_betas(1 - bars[1:] / bars[:-1])
    return dm.ddpm_sample(lambda x, i: net(x, taus[i - 1]), x_T, respaced, kind="posterior", generator=generator,
                          progress=False)


def flow_runs(data: str, seed: int, smoke: bool) -> dict:
    sample = gan_modes.DATA[data][0]
    cfg = FLOW[data]
    steps = SMOKE["flow_steps"] if smoke else cfg["steps"]
    path = fm.linear_path()
    times = TransformedDistribution(Normal(*cfg["t_logit_normal"]), SigmoidTransform())
    x1 = sample(cfg["n_data"], torch.Generator().manual_seed(seed)) / cfg["scale"]
    x0 = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(seed + 1))

    def make():
        torch.manual_seed(seed)
        return fm.VelocityMLP(2, hidden=cfg["hidden"], n_layers=cfg["n_layers"])

    runs = {}
    net = make()
    _, cpu, wall = df.timed(lambda: fm.train_cfm(net, x1, path, steps, batch_size=cfg["batch"], lr=cfg["lr"],
                                              t_distribution=times, generator=torch.Generator().manual_seed(seed + 2),
                                              progress=False))
    runs["flow matching"] = {"train_cpu_s": cpu, "train_wall_s": wall,
                             "steps": flow_scores(net, x0, cfg["scale"], data, smoke)}
    ot_net = make()
    _, cpu, wall = df.timed(lambda: fm.train_cfm(ot_net, x1, path, SMOKE["ot_steps"] if smoke else OT["steps"],
                                              batch_size=OT["batch"], lr=cfg["lr"], coupling="ot",
                                              t_distribution=times, generator=torch.Generator().manual_seed(seed + 3),
                                              progress=False))
    runs["OT-CFM"] = {"train_cpu_s": cpu, "train_wall_s": wall,
                      "steps": flow_scores(ot_net, x0, cfg["scale"], data, smoke)}

    def reflow():
        z0 = torch.randn(SMOKE["reflow_pairs"] if smoke else REFLOW["pairs"], 2,
                         generator=torch.Generator().manual_seed(seed + 4))
        z0, z1 = fm.reflow_coupling(net, z0, n_steps=REFLOW["ode_steps"], progress=False)
        model = copy.deepcopy(net)
        fm.train_cfm(model, z1, path, SMOKE["reflow_steps"] if smoke else REFLOW["steps"], batch_size=cfg["batch"],
                     lr=REFLOW["lr"], coupling="pairs", x0=z0, generator=torch.Generator().manual_seed(seed + 5),
                     progress=False)
        return model

    reflow_net, cpu, wall = df.timed(reflow)
    runs["rectified flow (1 reflow)"] = {  # its training includes the first network's
        "train_cpu_s": cpu + runs["flow matching"]["train_cpu_s"],
        "train_wall_s": wall + runs["flow matching"]["train_wall_s"],
        "steps": flow_scores(reflow_net, x0, cfg["scale"], data, smoke)}
    return runs, net


def diffusion_runs(data: str, seed: int, smoke: bool) -> dict:
    """diffusion_flows' DDPM recipe (same seed, same draws), sampled on the step grid."""
    sample = gan_modes.DATA[data][0]
    cfg = df.DIFFUSION[data]
    schedule = dm.linear_schedule(df.T)
    torch.manual_seed(seed)
    net = dm.EpsMLP((2,), df.T, hidden=cfg["hidden"], n_layers=cfg["n_layers"])
    rng = torch.Generator().manual_seed(seed)
    _, cpu, wall = df.timed(lambda: dm.train_epsilon_model(
        net, lambda: sample(cfg["batch"], rng) / cfg["scale"], schedule,
        SMOKE["diffusion_steps"] if smoke else cfg["steps"], lr=cfg["lr"], progress=False))
    x_T = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(seed + 1))
    runs = {"DDPM": {"train_cpu_s": cpu, "train_wall_s": wall, "steps": {}},
            "DDIM": {"train_cpu_s": cpu, "train_wall_s": wall, "steps": {}}}
    with torch.no_grad():
        for n in steps_grid(smoke):
            g = torch.Generator().manual_seed(seed + 2)
            for name, call in (("DDPM", lambda: respaced_ddpm(net, x_T, schedule, n, g)),
                               ("DDIM", lambda: dm.ddim_sample(net, x_T, schedule, n, progress=False))):
                x, s_cpu, s_wall = df.timed(call)
                runs[name]["steps"][str(n)] = {**df.toy_scores(x * cfg["scale"], data), "sample_cpu_s": s_cpu,
                                               "sample_wall_s": s_wall}
    return runs


def flow_nll(net, data: str, seed: int, h_p: float, smoke: bool) -> dict:
    """Test NLL of the flow-matching network on diffusion_flows' test points of this seed."""
    sample = gan_modes.DATA[data][0]
    scale = FLOW[data]["scale"]
    g = torch.Generator().manual_seed(seed)
    n_train, n_test = (df.SMOKE["n_train"], SMOKE["n_test"]) if smoke else (df.FLOW["n_train"], df.FLOW["n_test"])
    sample(n_train, g)                                              # the flows' training draws, skipped
    x_test = sample(n_test, g).double() / scale

    def v64(x, t):
        return net(x.float(), t.float()).double()

    def standard_normal(y):
        return -0.5 * y.pow(2).sum(1) - math.log(2 * math.pi)

    ll, cpu, wall = df.timed(lambda: sde.ode_log_likelihood(v64, x_test, standard_normal, 1.0, 0.0, progress=False,
                                                         **NLL))
    nll = -(ll - 2 * math.log(scale))                                # log q(x) = log q_net(x / s) - D log s
    return {"test_nll": nll.mean().item(), "standard_error": nll.std().item() / math.sqrt(len(nll)),
            "gap_nats": nll.mean().item() - h_p, "n_test": len(nll), "cpu_s": cpu, "wall_s": wall}


def summarise(runs: list[dict]) -> dict:
    """Mean, std, min, max over seeds of each score, at each number of steps."""
    keys = ("modes", "high_quality_pct", "reverse_kl")
    out = {"steps": {n: df.summary([r["steps"][n] for r in runs], keys) for n in runs[0]["steps"]}}
    for key in ("train_cpu_s", "train_wall_s"):
        out[key] = df.summary(runs, (key,))[key]
    full = max(runs[0]["steps"], key=int)
    out["run_wall_s"] = df.summary([{"w": r["train_wall_s"] + r["steps"][full]["sample_wall_s"]} for r in runs],
                                   ("w",))["w"]
    return out


def toy_part(seeds, smoke: bool, report: dict) -> None:
    for data in ("grid", "ring"):
        h = df.entropy(data, smoke)
        out = report.setdefault("toy", {}).setdefault(data, {})
        out["entropy"] = h
        runs = {name: [] for name in MODELS}
        nll = []
        for seed in seeds:
            flow, net = flow_runs(data, seed, smoke)
            both = {**flow, **diffusion_runs(data, seed, smoke)}
            for name in MODELS:
                runs[name].append({"seed": seed, **both[name]})
            nll.append({"seed": seed, **flow_nll(net, data, seed, h["nats"], smoke)})
            print(data, seed, {name: {n: (r["modes"], round(r["high_quality_pct"], 1), round(r["reverse_kl"], 3))
                                      for n, r in both[name]["steps"].items()} for name in MODELS},
                  "NLL gap", round(nll[-1]["gap_nats"], 3), flush=True)
        for name in MODELS:
            out[name] = {"runs": runs[name], **summarise(runs[name])}
        out["flow matching likelihood"] = {"runs": nll, **df.summary(nll, ("test_nll", "gap_nats", "wall_s"))}
        reference = read_report("diffusion_flows").get("toy", {}).get(data, {})
        out["from diffusion_flows"] = {
            name: {key: reference[name][key] for key in ("modes", "high_quality_pct", "reverse_kl", "gap_nats",
                                                         "test_nll", "wall_s") if key in reference[name]}
            for name in (*df.GAN_RECIPES[data], "flow (RealNVP)", "flow (MAF)") if name in reference}
        out["from diffusion_flows"]["seeds"] = read_report("diffusion_flows").get("seeds")


# ----------------------------------------------------------------------------- digits

def digits_run(seed: int, smoke: bool, x_train, y_train, x_test, classifier) -> dict:
    cfg, latent = DIGITS, df.LATENT
    n = cfg["n_train"]
    torch.manual_seed(seed)
    vae = MLPVAE(x_shape=(1, 28, 28), z_dim=latent["z_dim"], hidden=latent["vae_hidden"])
    _, vae_cpu, vae_wall = df.timed(lambda: train_vae(
        vae, x_train[:n], epochs=SMOKE["vae_epochs"] if smoke else latent["vae_epochs"],
        batch_size=latent["vae_batch"], seed=seed, device=torch.device("cpu"), progress=False))
    u, m, s = dm.encode_latents(vae, x_train[:n])
    torch.manual_seed(seed)
    net = guidance.ConditionalVelocityMLP(latent["z_dim"], 10, hidden=cfg["hidden"], n_layers=cfg["n_layers"],
                                          emb=cfg["emb"])
    _, cpu, wall = df.timed(lambda: guidance.train_conditional_cfm(
        net, u, y_train[:n], fm.linear_path(), SMOKE["digit_steps"] if smoke else cfg["steps"],
        batch_size=cfg["batch"], lr=cfg["lr"], p_uncond=cfg["p_uncond"],
        generator=torch.Generator().manual_seed(seed + 1), progress=False))
    per_class = SMOKE["per_class"] if smoke else cfg["per_class"]
    labels = torch.arange(10).repeat_interleave(per_class)
    noise = torch.randn(len(labels), latent["z_dim"], generator=torch.Generator().manual_seed(seed + 2))
    scales = {}
    for w in cfg["scales"]:
        def draw():
            codes = fm.euler_sample(guidance.guided_velocity(net, labels, w), noise, cfg["euler_steps"],
                                    progress=False)
            return dm.decode_latents(vae, codes, m, s)

        x, s_cpu, s_wall = df.timed(draw)
        probs = predict_proba(classifier, x)
        scales[f"{w:g}"] = {"accuracy": (probs.argmax(1) == labels).float().mean().item(),
                            **df.digit_scores(x, x_test, classifier),
                            "sample_cpu_s": s_cpu, "sample_wall_s": s_wall}
    return {"seed": seed, "train_cpu_s": vae_cpu + cpu, "train_wall_s": vae_wall + wall, "vae_train_cpu_s": vae_cpu,
            "scales": scales}


def digits_part(seeds, smoke: bool, report: dict) -> None:
    x_train, y_train = load_mnist("train", source="embedded")
    x_test, y_test = load_mnist("test", source="embedded")
    classifier = load_classifier(device=torch.device("cpu"))
    real = (predict_proba(classifier, x_test).argmax(1) == y_test).float().mean().item()
    runs = []
    for seed in seeds:
        runs.append(digits_run(seed, smoke, x_train, y_train, x_test, classifier))
        print("digits", seed, {w: (round(r["accuracy"], 3), round(r["frechet"], 1)) for w, r in
                               runs[-1]["scales"].items()}, flush=True)
    keys = ("accuracy", "frechet", "confidence", "collision_entropy", "sample_wall_s")
    previous = read_report("diffusion_flows").get("digits", {})
    report["digits"] = {
        "settings": {**DIGITS, "latent_vae": {k: df.LATENT[k] for k in ("z_dim", "vae_hidden", "vae_epochs",
                                                                        "vae_batch")}},
        "real_test_digits_accuracy": real, "runs": runs,
        "scales": {w: df.summary([r["scales"][w] for r in runs], keys) for w in runs[0]["scales"]},
        **df.summary(runs, ("train_cpu_s", "train_wall_s")),
        "unguided latent diffusion (diffusion_flows)": {
            "seeds": read_report("diffusion_flows").get("seeds"),
            **{k: previous["latent diffusion"][k] for k in ("frechet", "confidence", "collision_entropy")}}
        if "latent diffusion" in previous else None}


# ----------------------------------------------------------------------------- targets

def targets(report: dict) -> dict:
    out = {}
    grid = report.get("toy", {}).get("grid")
    if grid:
        best_gan_kl = min(r["reverse_kl"]["mean"] for name, r in grid["from diffusion_flows"].items()
                          if name in df.GAN_RECIPES["grid"])
        fm_steps = grid["flow matching"]["steps"]
        good = [n for n in fm_steps if int(n) <= 20 and fm_steps[n]["modes"]["mean"] >= 24.5
                and fm_steps[n]["high_quality_pct"]["mean"] >= 90 and fm_steps[n]["reverse_kl"]["mean"] < best_gan_kl]
        out["grid: flow matching with <= 20 Euler steps: >= 24.5 modes, >= 90 % HQ, reverse KL below the best GAN's"] \
            = bool(good)
        out["grid: fewest such Euler steps"] = min(map(int, good)) if good else None
    for data, rows in report.get("toy", {}).items():
        if "2" in rows["flow matching"]["steps"]:
            fm2, re2 = rows["flow matching"]["steps"]["2"], rows["rectified flow (1 reflow)"]["steps"]["2"]
            out[f"{data}: rectified flow (1 reflow) ahead of flow matching at 2 steps (modes and reverse KL)"] = (
                re2["modes"]["mean"] >= fm2["modes"]["mean"] and re2["reverse_kl"]["mean"] < fm2["reverse_kl"]["mean"])
            out[f"{data}: ... and on % high quality"] = (
                re2["high_quality_pct"]["mean"] > fm2["high_quality_pct"]["mean"])
        gap = rows["flow matching likelihood"]["gap_nats"]["mean"]
        flows = [r["gap_nats"]["mean"] for name, r in rows["from diffusion_flows"].items()
                 if isinstance(r, dict) and "gap_nats" in r]
        out[f"{data}: flow matching's ODE NLL gap below RealNVP's and MAF's"] = len(flows) == 2 and gap < min(flows)
        out[f"{data}: every run <= 120 s (wall, training + full-chain sampling)"] = all(
            rows[name]["run_wall_s"]["max"] <= 120 for name in MODELS)
    digits = report.get("digits")
    if digits and digits.get("unguided latent diffusion (diffusion_flows)"):
        limit = digits["unguided latent diffusion (diffusion_flows)"]["frechet"]["mean"]
        good = [w for w, r in digits["scales"].items()
                if r["accuracy"]["mean"] >= 0.95 and r["frechet"]["mean"] <= limit]
        out["digits: a guidance scale with accuracy >= 0.95 and Fréchet <= unguided latent diffusion's"] = bool(good)
        out["digits: such scales"] = good
    return out


def main() -> None:
    parser = df.seeded_parser(__doc__, SEEDS)
    parser.add_argument("--parts", nargs="+", choices=("toy", "digits"), default=["toy", "digits"])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    report = {"smoke": args.smoke, "seeds": args.seeds, "tuned_on_seeds": TUNED_ON,
              "seeds_note": df.seeds_note(args.seeds, TUNED_ON),
              "torch_threads": THREADS, "n_eval_samples": N_EVAL, "sampling_steps": steps_grid(args.smoke),
              "settings": {"flow": FLOW, "ot_cfm": OT, "reflow": REFLOW, "likelihood": NLL,
                           "diffusion": df.DIFFUSION, "digits": DIGITS, **({"smoke": SMOKE} if args.smoke else {})},
              "tuning_on_seeds_0_4": TUNING}
    if args.out is None:
        previous = read_report("continuous")
        report.update({part: previous[part] for part in ("toy", "digits") if part in previous})
    if "toy" in args.parts:
        toy_part(args.seeds, args.smoke, report)
    if "digits" in args.parts:
        digits_part(args.seeds, args.smoke, report)
    report["targets_met"] = targets(report)
    report["total_wall_s"] = time.perf_counter() - start
    path = df.save("continuous", report, args.out)
    print(f"report: {path}")
    for data, rows in report.get("toy", {}).items():
        for name in MODELS:
            line = "  ".join(f"{n}: {r['modes']['mean']:.1f}/{r['high_quality_pct']['mean']:.0f}%/"
                             f"{r['reverse_kl']['mean']:.3f}" for n, r in rows[name]["steps"].items())
            print(f"{data:4s} {name:26s} {line}  (run {rows[name]['run_wall_s']['max']:.0f} s max)")
        print(f"{data:4s} flow matching ODE NLL gap {rows['flow matching likelihood']['gap_nats']['mean']:.3f} nats")
    if "digits" in report:
        for w, r in report["digits"]["scales"].items():
            print(f"digits w = {w}: accuracy {r['accuracy']['mean']:.3f}  Fréchet {r['frechet']['mean']:.1f}")
    for name, met in report["targets_met"].items():
        print(f"{met!s:6s} {name}")


if __name__ == "__main__":
    main()
