"""Every model family the course trains, on the same digits under the same CPU budget, in one table (issue 31).

Data: the 4,000 embedded training digits and the 1,000 embedded test digits (:func:`dgmcourse.data.load_mnist`,
``source="embedded"``). Each family trains from scratch for about ``BUDGET_CPU_S`` CPU seconds on one torch thread
(every stage counted: the VAE under latent diffusion, the VQ-VAE under the token models), with its lecture's
recipe; its number of epochs or steps is what fits in the budget, measured on a throw-away copy
(:func:`diffusion_flows.units_in`). Then it draws ``N_SAMPLES`` = 1,000 samples. The families and the representation
each models (grey: the digits in [0, 1]; binary: thresholded at 0.5; 14x14: average-pooled):

==========================  =======================  =====================================================
family                      data                     recipe (lecture)
==========================  =======================  =====================================================
VAE (IWAE bound)            binary 28x28             MLPVAE, 16 latents, Bernoulli decoder (01, 09)
DCGAN                       grey 28x28               DCGANGenerator/Discriminator, 32 channels (03)
WGAN-GP                     grey 28x28               same generator; critic without batch norm (04)
PixelCNN                    binary 14x14             PixelCNN, 32 channels, 4 layers (09, 13)
RealNVP                     binary 28x28, dequant.   6 checkerboard couplings of width 256 (09, 10)
pixel DDPM                  grey 14x14               EpsMLP 3 x 512, L_simple, DDIM 50 steps (11)
latent diffusion            grey 28x28 via a VAE     MLPVAE then EpsMLP on its codes, DDIM 50 steps (11)
flow matching               grey 28x28 via a VAE     the same VAE, VelocityMLP on its codes, Euler 50 (12)
EBM                         grey 14x14               EnergyMLP 2 x 256, CD, 30-step Langevin from noise (11)
pixel transformer           binary 14x14             causal transformer over 196 pixels, KV cache (13)
VQ-VAE + transformer        grey 28x28 via 7x7 codes VQ-VAE (EMA + restarts), transformer prior (13)
masked diffusion            grey 28x28 via 7x7 codes the same VQ-VAE, MDLM denoiser, 64 steps (13)
==========================  =======================  =====================================================

The two latent-space generators share one VAE per seed and the two token models one VQ-VAE; that first stage's
CPU seconds count in both rows (``train_cpu_s``).

Scores: every sample set is binarised at 0.5 (binary samples are unchanged; 14x14 samples are upsampled to
28x28 first: grey ones bilinearly, as lecture 11, binary ones by repeating each pixel) and compared with the 1,000
binarised test digits in the feature space of the course classifier (:func:`dgmcourse.classifier.load_classifier`):
Fréchet distance (:func:`dgmcourse.evaluation.classifier_frechet_distance`; not FID), improved precision and recall
(Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020) with k = 5
(:func:`dgmcourse.evaluation.classifier_precision_recall_density_coverage`), and the memorisation check
(:func:`dgmcourse.evaluation.memorisation_check`, pixel space, against the binarised training digits, the test
digits as the held-out yardstick): ``memorisation_rate`` is the fraction of samples closer to a training digit
than 95 % of the test digits are (about 0.05 for fresh data), ``memorisation_ratio`` the median distance ratio.
Bits/dim where the model gives one, on the 1,000 test digits, with its kind: ``exact`` (PixelCNN, pixel
transformer), ``upper bound`` (the VAE's IWAE bound with k = 100; RealNVP's dequantised bound). The number of
dimensions differs (784 or 196): compare bits/dim only within one data column. Samples per second: samples over
the sampling's CPU seconds, one thread. Rows ``real digits``: 1,000 training digits scored as samples (the floor
of the Fréchet distance; they are memorised by definition).

Seeds: the recipes come from the lectures and the benchmarks that tuned them on seeds 0-4 (``diffusion_flows``,
``tokens``); what is new here (the budget's use of each, WGAN-GP's critic and learning rates, the EBM's setting)
was chosen on seeds 0-1 (``TUNING``). The report uses seeds 100-102 (default ``--seeds``), never tuned on;
each figure is given as mean, std, min and max over them.

Run: ``python benchmarks/model_zoo.py [--seeds 100 101 102] [--jobs 2] [--families ...] [--smoke] [--out PATH]``
(about 15 CPU minutes per seed); writes ``benchmarks/reports/model_zoo.json``. With ``--families`` the rows of the
tasks not run are kept from the report it updates (``total_cpu_s`` then counts this invocation only). ``--jobs 2``
runs two tasks at a time, each on one torch thread (CPU seconds stay comparable, wall seconds do not). The table and
the precision-recall plot on the website and in lecture 9 are drawn from the report by
:func:`dgmcourse.reports.model_zoo_table` and :func:`dgmcourse.reports.plot_precision_recall`.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dgmcourse import autoregressive as ar
from dgmcourse import diffusion as dm
from dgmcourse import ebm
from dgmcourse import evaluation as ev
from dgmcourse import flow_matching as fm
from dgmcourse import flows, gan
from dgmcourse import masked_diffusion as md
from dgmcourse import transformer as tf
from dgmcourse.classifier import load_classifier
from dgmcourse.data import binarize, load_mnist
from dgmcourse.reports import read_report
from dgmcourse.vae import MLPVAE, iwae_bound, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_flows as df  # noqa: E402  (timing, summaries, seeds note, saving)
import tokens  # noqa: E402  (the VQ-VAE and token recipes)

THREADS = 1
SEEDS = [100, 101, 102]                         # report seeds, never tuned on
TUNED_ON = [0, 1]
BUDGET_CPU_S = 60.0                              # training CPU seconds per family, one thread
N_SAMPLES = 1000
IWAE_K = 100
FAMILIES = ("VAE (IWAE bound)", "DCGAN", "WGAN-GP", "PixelCNN", "RealNVP", "pixel DDPM", "latent diffusion",
            "flow matching", "EBM", "pixel transformer", "VQ-VAE + transformer", "masked diffusion")
# which task trains which rows: a shared first stage (VAE, VQ-VAE) trains once per seed for the two rows it serves
TASKS = {"VAE (IWAE bound)": ("VAE (IWAE bound)",), "DCGAN": ("DCGAN",), "WGAN-GP": ("WGAN-GP",),
         "PixelCNN": ("PixelCNN",), "RealNVP": ("RealNVP",), "pixel DDPM": ("pixel DDPM",),
         "latent": ("latent diffusion", "flow matching"), "EBM": ("EBM",), "pixel transformer": ("pixel transformer",),
         "tokens": ("VQ-VAE + transformer", "masked diffusion")}
DATA = {"VAE (IWAE bound)": "binary 28x28", "DCGAN": "grey 28x28", "WGAN-GP": "grey 28x28",
        "PixelCNN": "binary 14x14", "RealNVP": "binary 28x28 (dequantised)", "pixel DDPM": "grey 14x14",
        "latent diffusion": "grey 28x28, VAE codes", "flow matching": "grey 28x28, VAE codes", "EBM": "grey 14x14",
        "pixel transformer": "binary 14x14", "VQ-VAE + transformer": "grey 28x28, 7x7 VQ codes",
        "masked diffusion": "grey 28x28, 7x7 VQ codes"}
VAE = dict(z_dim=16, hidden=256, batch=128, lr=1e-3)                      # lecture 9
GAN = dict(z_dim=64, channels=32, batch=64)                               # diffusion_flows' DCGAN (lecture 3)
WGAN = dict(z_dim=64, channels=32, batch=64, n_critic=5, gp_weight=10.0, lr=2e-4, betas=(0.5, 0.9))
FLOW = dict(layers=6, hidden=256, batch=128, lr=1e-3)                     # lecture 9's RealNVP on the digits
DDPM = dict(hidden=512, n_layers=3, emb=64, batch=128, lr=1e-3, ddim_steps=50)   # diffusion_flows' DIGITS
LATENT = dict(vae_epochs=10, fm_hidden=256, fm_layers=4, fm_batch=256, fm_lr=2e-3, euler_steps=50)
# Nijkamp et al. (2019)'s short-run EBM: every chain (training and sampling) runs 30 Langevin steps from uniform noise,
# no replay buffer; Du & Mordatch's buffer and alpha = 1 left fresh chains as noise here (TUNING)
EBM = dict(hidden=256, n_layers=2, batch=64, lr=1e-3, alpha=0.1, langevin_steps=30, step_size=20.0, noise_scale=0.005)
TOKEN = dict(vq_variant=tokens.PRIOR_VARIANT, masked_steps=64)
TUNING = {
    "WGAN-GP, seed 0 (critic with layer norm, n_critic 5, lambda 10, Adam 2e-4, betas (0.5, 0.9), 58 CPU s)": {
        "frechet": 363.6, "precision": 0.86, "recall": 0.39},
    "EBM at 14x14 on seed 0 (Fréchet / precision / recall with K sampling steps from noise; about 30-60 CPU s)": {
        "EnergyMLP 256x2, replay buffer, alpha 1, lr 3e-4, 20 steps of size 20 (Du & Mordatch), K = 20 / 200":
            [[905, 0.08, 0.15], [1535, 0.11, 0.19]],
        "same without buffer, 30 steps": [1111, 0.04, 0.43],
        "no buffer, alpha 1, step size 200": [288, 0.91, 0.56],
        "no buffer, alpha 0.1, step size 20, lr 3e-4, 1,200 / 2,200 steps": [[248, 0.86, 0.71], [223, 0.90, 0.73]],
        "same, alpha 0.01": [250, 0.86, 0.60], "same, step size 100": [252, 0.85, 0.65],
        "EnergyCNN width 16, no buffer, alpha 0.1, lr 1e-3, 350 steps": [322, 0.83, 0.62],
        "chosen: no buffer, alpha 0.1, lr 1e-3, 30 steps of size 20, 2,200 steps; K = 30 / 60 / 120":
            [[127, 0.86, 0.82], [123, 0.88, 0.74], [309, 0.92, 0.64]],
        "chosen, seed 1, K = 30": [170, 0.90, 0.77],
        "lr 3e-4, 20 / 40 Langevin steps": [[199, 0.86, 0.80], [207, 0.90, 0.75]],
        "lr 2e-3": [353, 0.92, 0.63], "lr 1e-3, 40 Langevin steps": [335, 0.92, 0.69],
        "lr 1e-3, batches of 32": [194, 0.88, 0.83], "lr 1e-3, alpha 0.3": [226, 0.89, 0.78]},
    "budget use": "epoch counts were first probed without a warm-up epoch: the first call's set-up made the VAE "
                  "train for 20 of its 60 CPU s; every probe now runs one untimed warm-up call first",
}
SMOKE = dict(budget_cpu_s=3.0, n_samples=100, n_train=500, iwae_k=5, sample_steps=8)


def to_model(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 1, 28, 28)`` in [0, 1] -> ``(N, 1, size, size)`` in [-1, 1] (average-pooled)."""
    return F.avg_pool2d(x, 28 // size) * 2 - 1 if size < 28 else x * 2 - 1


def result(x: torch.Tensor, train_cpu: float, train_wall: float, sample_cpu: float, sample_wall: float,
           units: dict, bpd: float | None = None, bpd_kind: str | None = None, **extra) -> dict:
    return {"samples": x, "train_cpu_s": train_cpu, "train_wall_s": train_wall, "sample_cpu_s": sample_cpu,
            "sample_wall_s": sample_wall, "samples_per_cpu_s": len(x) / max(sample_cpu, 1e-9), **units,
            "bits_per_dim": bpd, "bits_per_dim_kind": bpd_kind, **extra}


# ----------------------------------------------------------------------------- families

def vae_family(seed: int, d: dict) -> dict:
    cfg, b = VAE, d["b_train"]

    def make():
        torch.manual_seed(seed)
        return MLPVAE(x_shape=(1, 28, 28), z_dim=cfg["z_dim"], hidden=cfg["hidden"])

    def train(model, epochs):
        return train_vae(model, b, epochs=epochs, batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
                         device=torch.device("cpu"), progress=False)

    epochs = df.units_in(d["budget"], make, train, probe=2, warm_up=1)
    model = make()
    _, cpu, wall = df.timed(lambda: train(model, epochs))
    model.eval()
    k = d["iwae_k"]
    ll = {j: iwae_bound(model, d["b_test"], j, generator=torch.Generator().manual_seed(seed)) for j in (1, k)}
    x, s_cpu, s_wall = df.timed(lambda: torch.bernoulli(
        model.sample(d["n"], generator=torch.Generator().manual_seed(seed)),
        generator=torch.Generator().manual_seed(seed + 1)))
    return result(x, cpu, wall, s_cpu, s_wall, {"epochs": epochs}, ev.bits_per_dim(ll[k], 784).mean().item(),
                  f"upper bound (IWAE, k={k})", elbo_bits_per_dim=ev.bits_per_dim(ll[1], 784).mean().item())


def dcgan_family(seed: int, d: dict) -> dict:
    cfg = GAN

    def make():
        torch.manual_seed(seed)
        return gan.DCGANGenerator(z_dim=cfg["z_dim"], channels=cfg["channels"]), gan.DCGANDiscriminator(cfg["channels"])

    def train(models, epochs):
        return gan.train_dcgan(*models, d["x_train"], epochs=epochs, batch_size=cfg["batch"], seed=seed,
                               device=torch.device("cpu"), progress=False)

    epochs = df.units_in(d["budget"], make, train, warm_up=1)
    models = make()
    _, cpu, wall = df.timed(lambda: train(models, epochs))
    models[0].eval()
    x, s_cpu, s_wall = df.timed(lambda: models[0].sample(d["n"], generator=torch.Generator().manual_seed(seed)))
    return result(x, cpu, wall, s_cpu, s_wall, {"epochs": epochs})


def wgan_critic(channels: int) -> nn.Module:
    """The DCGAN discriminator with each batch norm replaced by layer norm over (C, H, W) (GroupNorm with one group):
    the gradient penalty is per sample, which batch norm breaks (Gulrajani et al. 2017, sec. 4)."""
    critic = gan.DCGANDiscriminator(channels)
    for name, module in critic.body.named_children():
        if isinstance(module, nn.BatchNorm2d):
            critic.body[int(name)] = nn.GroupNorm(1, module.num_features)
    return critic


def train_wgan_gp(generator: nn.Module, critic: nn.Module, x: torch.Tensor, steps: int, seed: int) -> None:
    """Gulrajani et al. (2017), Algorithm 1: ``n_critic`` critic steps on the WGAN loss plus λ times
    :func:`dgmcourse.gan.gradient_penalty`, then one generator step; Adam(lr, β = (0.5, 0.9)). ``steps`` counts
    generator steps."""
    cfg = WGAN
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg["lr"], betas=cfg["betas"])
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg["lr"], betas=cfg["betas"])
    rng = torch.Generator().manual_seed(seed)
    data = x * 2 - 1
    generator.train()
    critic.train()
    for _ in range(steps):
        for _ in range(cfg["n_critic"]):
            real = data[torch.randint(len(data), (cfg["batch"],), generator=rng)]
            fake = generator(torch.randn(cfg["batch"], cfg["z_dim"], generator=rng)).detach()
            loss = (gan.wasserstein_critic_loss(critic(real), critic(fake))
                    + cfg["gp_weight"] * gan.gradient_penalty(critic, real, fake, generator=rng))
            opt_c.zero_grad()
            loss.backward()
            opt_c.step()
        fake = generator(torch.randn(cfg["batch"], cfg["z_dim"], generator=rng))
        loss = gan.wasserstein_generator_loss(critic(fake))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()


def wgan_family(seed: int, d: dict) -> dict:
    cfg = WGAN

    def make():
        torch.manual_seed(seed)
        return gan.DCGANGenerator(z_dim=cfg["z_dim"], channels=cfg["channels"]), wgan_critic(cfg["channels"])

    def train(models, steps):
        return train_wgan_gp(*models, d["x_train"], steps, seed)

    steps = df.units_in(d["budget"], make, train, probe=20, warm_up=2)
    models = make()
    _, cpu, wall = df.timed(lambda: train(models, steps))
    models[0].eval()
    x, s_cpu, s_wall = df.timed(lambda: models[0].sample(d["n"], generator=torch.Generator().manual_seed(seed)))
    return result(x, cpu, wall, s_cpu, s_wall, {"generator_steps": steps})


def pixelcnn_family(seed: int, d: dict) -> dict:
    make, train = tokens.pixelcnn_recipe(seed, d["b14_train"])
    epochs = df.units_in(d["budget"], make, train, warm_up=1)
    model = make()
    _, cpu, wall = df.timed(lambda: train(model, epochs))
    model.eval()
    with torch.no_grad():
        bpd = ev.bits_per_dim(ar.log_likelihood(model, d["b14_test"]), 196).mean().item()
        x, s_cpu, s_wall = df.timed(lambda: F.interpolate(
            ar.sample(model, d["n"], shape=(14, 14), generator=torch.Generator().manual_seed(seed)),
            scale_factor=2, mode="nearest"))
    return result(x, cpu, wall, s_cpu, s_wall, {"epochs": epochs}, bpd, "exact")


def realnvp_family(seed: int, d: dict) -> dict:
    cfg = FLOW
    flat = d["b_train"].flatten(1)
    noise = torch.Generator().manual_seed(seed)
    y_test = flows.dequantize(d["b_test"].flatten(1), 2, generator=torch.Generator().manual_seed(seed + 1))

    def make():
        torch.manual_seed(seed)
        return flows.standardize(flows.realnvp_flow(784, layers=cfg["layers"], hidden=cfg["hidden"],
                                                    image_shape=(28, 28)),
                                 flows.dequantize(flat, 2, generator=torch.Generator().manual_seed(seed)))

    def train(flow, epochs):
        return flows.train_dequantized_flow(flow, flat, 2, epochs=epochs, batch_size=cfg["batch"], lr=cfg["lr"],
                                            device=torch.device("cpu"), generator=noise, progress=False)

    epochs = df.units_in(d["budget"], make, train, warm_up=1)
    flow = make()
    noise.manual_seed(seed)
    _, cpu, wall = df.timed(lambda: train(flow, epochs))
    flow.eval()
    with torch.no_grad():
        bpd = flows.bits_per_dim(flow.log_prob(y_test), 784, 2).mean().item()
        # a dequantised sample y = (x + u) / 2 in [0, 1) is the binary pixel x = floor(2 y), clamped (the flow's
        # density leaks outside [0, 1))
        x, s_cpu, s_wall = df.timed(lambda: (2 * flow.sample(d["n"], generator=torch.Generator().manual_seed(seed + 2)))
                                 .floor().clamp(0, 1).reshape(-1, 1, 28, 28))
    return result(x, cpu, wall, s_cpu, s_wall, {"epochs": epochs}, bpd, "upper bound (dequantised)")


def ddpm_family(seed: int, d: dict) -> dict:
    cfg, schedule = DDPM, dm.linear_schedule(df.T)
    digits = to_model(d["x_train"], 14)
    rng = torch.Generator().manual_seed(seed)

    def make():
        torch.manual_seed(seed)
        return dm.EpsMLP((1, 14, 14), df.T, hidden=cfg["hidden"], n_layers=cfg["n_layers"], emb=cfg["emb"])

    def train(model, steps):
        return dm.train_epsilon_model(model, lambda: digits[torch.randint(len(digits), (cfg["batch"],),
                                                                          generator=rng)],
                                      schedule, steps, lr=cfg["lr"], progress=False)

    steps = df.units_in(d["budget"], make, train, probe=40, warm_up=5)
    model = make()
    rng.manual_seed(seed)
    _, cpu, wall = df.timed(lambda: train(model, steps))
    x_T = torch.randn(d["n"], 1, 14, 14, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        x, s_cpu, s_wall = df.timed(lambda: df.to_pixels(dm.ddim_sample(model, x_T, schedule, d["sample_steps"],
                                                                  progress=False)))
    return result(x, cpu, wall, s_cpu, s_wall, {"steps": steps, "sampling_steps": d["sample_steps"]})


def latent_families(seed: int, d: dict) -> dict:
    """One VAE (``diffusion_flows.LATENT``), then latent diffusion and flow matching on its codes, each for the
    budget minus the VAE's and the encoding's CPU seconds."""
    cfg, vae_cfg, schedule = LATENT, df.LATENT, dm.linear_schedule(df.T)
    torch.manual_seed(seed)
    vae = MLPVAE(x_shape=(1, 28, 28), z_dim=vae_cfg["z_dim"], hidden=vae_cfg["vae_hidden"])
    _, vae_cpu, vae_wall = df.timed(lambda: train_vae(vae, d["x_train"], epochs=d["vae_epochs"],
                                                   batch_size=vae_cfg["vae_batch"], seed=seed,
                                                   device=torch.device("cpu"), progress=False))
    (u, m, s), enc_cpu, enc_wall = df.timed(lambda: dm.encode_latents(vae, d["x_train"]))
    first_cpu, first_wall = vae_cpu + enc_cpu, vae_wall + enc_wall
    left = max(d["budget"] - first_cpu, d["budget"] / 10)
    rng = torch.Generator().manual_seed(seed)

    def batch(size):
        return u[torch.randint(len(u), (size,), generator=rng)]

    def make_eps():
        torch.manual_seed(seed)
        return dm.EpsMLP((vae_cfg["z_dim"],), df.T, hidden=vae_cfg["hidden"], n_layers=vae_cfg["n_layers"],
                         emb=vae_cfg["emb"])

    def train_eps(model, steps):
        return dm.train_epsilon_model(model, lambda: batch(vae_cfg["batch"]), schedule, steps, lr=vae_cfg["lr"],
                                      progress=False)

    def make_v():
        torch.manual_seed(seed)
        return fm.VelocityMLP(vae_cfg["z_dim"], hidden=cfg["fm_hidden"], n_layers=cfg["fm_layers"])

    def train_v(model, steps):
        return fm.train_cfm(model, u, fm.linear_path(), steps, batch_size=cfg["fm_batch"], lr=cfg["fm_lr"],
                            generator=torch.Generator().manual_seed(seed), progress=False)

    noise = torch.randn(d["n"], vae_cfg["z_dim"], generator=torch.Generator().manual_seed(seed + 1))
    out = {}
    for name, make, train, draw in (
            ("latent diffusion", make_eps, train_eps,
             lambda net: dm.ddim_sample(net, noise, schedule, d["sample_steps"], progress=False)),
            ("flow matching", make_v, train_v,
             lambda net: fm.euler_sample(net, noise, d["sample_steps"], progress=False))):
        steps = df.units_in(left, make, train, probe=40, warm_up=5)
        net = make()
        rng.manual_seed(seed)
        _, cpu, wall = df.timed(lambda: train(net, steps))
        net.eval()
        with torch.no_grad():
            x, s_cpu, s_wall = df.timed(lambda: dm.decode_latents(vae, draw(net), m, s))
        out[name] = result(x, first_cpu + cpu, first_wall + wall, s_cpu, s_wall,
                           {"steps": steps, "sampling_steps": d["sample_steps"], "vae_epochs": d["vae_epochs"]},
                           vae_train_cpu_s=first_cpu)
    return out


def ebm_family(seed: int, d: dict) -> dict:
    cfg = EBM
    digits = to_model(d["x_train"], 14).flatten(1)

    def make():
        torch.manual_seed(seed)
        return ebm.EnergyMLP(196, cfg["hidden"], cfg["n_layers"])

    def train(energy, steps):
        return ebm.train_ebm(energy, digits, steps, batch_size=cfg["batch"], lr=cfg["lr"], alpha=cfg["alpha"],
                             langevin_steps=cfg["langevin_steps"], step_size=cfg["step_size"],
                             noise_scale=cfg["noise_scale"], clip=(-1.0, 1.0), buffer=False, noise_range=(-1.0, 1.0),
                             generator=torch.Generator().manual_seed(seed), progress=False)

    steps = df.units_in(d["budget"], make, train, probe=20, warm_up=5)
    energy = make()
    _, cpu, wall = df.timed(lambda: train(energy, steps))
    rng = torch.Generator().manual_seed(seed + 1)
    start = 2 * torch.rand(d["n"], 196, generator=rng) - 1            # fresh chains from the training noise
    x, s_cpu, s_wall = df.timed(lambda: df.to_pixels(ebm.langevin_sample(
        energy, start, cfg["langevin_steps"], cfg["step_size"], cfg["noise_scale"], (-1.0, 1.0), rng)
        .detach().reshape(-1, 1, 14, 14)))
    return result(x, cpu, wall, s_cpu, s_wall, {"steps": steps, "sampling_steps": cfg["langevin_steps"]})


def pixel_transformer_family(seed: int, d: dict) -> dict:
    seqs, test = d["b14_train"].flatten(1).long(), d["b14_test"].flatten(1).long()
    make, train = tokens.pixel_transformer_recipe(seed, seqs)
    steps = df.units_in(d["budget"], make, train, probe=50, warm_up=5)
    model = make()
    _, cpu, wall = df.timed(lambda: train(model, steps))
    with torch.no_grad():
        bpd = ev.bits_per_dim(torch.cat([tf.log_likelihood(model, c, 2) for c in test.split(250)]), 196).mean().item()
    x, s_cpu, s_wall = df.timed(lambda: F.interpolate(
        tf.sample(model, d["n"], 196, 2, generator=torch.Generator().manual_seed(seed + 1)).reshape(-1, 1, 14, 14)
        .float(), scale_factor=2, mode="nearest"))
    return result(x, cpu, wall, s_cpu, s_wall, {"steps": steps}, bpd, "exact")


def token_families(seed: int, d: dict) -> dict:
    """One VQ-VAE (``tokens.VQ``, its epochs fitted into a third of the budget), then the transformer prior and masked
    diffusion on its 49 codes, each for the rest of the budget."""
    k = tokens.VQ["n_codes"]
    make_vq, train_vq = tokens.vqvae_recipe(TOKEN["vq_variant"], seed, d["x_train"])
    epochs = df.units_in(d["budget"] / 3, make_vq, train_vq, warm_up=1)
    vqvae = make_vq()
    _, vq_cpu, vq_wall = df.timed(lambda: train_vq(vqvae, epochs))
    vqvae.eval()
    (seqs, test), enc_cpu, enc_wall = df.timed(lambda: (tokens.encode(vqvae, d["x_train"]),
                                                     tokens.encode(vqvae, d["x_test"])))
    first_cpu, first_wall = vq_cpu + enc_cpu, vq_wall + enc_wall
    left = max(d["budget"] - first_cpu, d["budget"] / 10)
    length = seqs.shape[1]
    make_prior, train_prior = tokens.prior_recipe(seed, seqs)
    make_masked, train_masked = tokens.masked_recipe(seed, seqs)
    masked_steps = d["sample_steps"] if d["smoke"] else TOKEN["masked_steps"]
    out = {}
    for name, make, train, draw in (
            ("VQ-VAE + transformer", make_prior, train_prior,
             lambda net: tf.sample(net, d["n"], length, k, generator=torch.Generator().manual_seed(seed + 1))),
            ("masked diffusion", make_masked, train_masked,
             lambda net: md.sample(net, d["n"], length, k, steps=masked_steps,
                                   generator=torch.Generator().manual_seed(seed + 1)))):
        steps = df.units_in(left, make, train, probe=50, warm_up=5)
        net = make()
        _, cpu, wall = df.timed(lambda: train(net, steps))
        net.eval()
        with torch.no_grad():
            x, s_cpu, s_wall = df.timed(lambda: tokens.decode(vqvae, draw(net)))
        out[name] = result(x, first_cpu + cpu, first_wall + wall, s_cpu, s_wall,
                           {"steps": steps, "vqvae_epochs": epochs,
                            "sampling_steps": length if name == "VQ-VAE + transformer" else masked_steps},
                           vqvae_train_cpu_s=first_cpu)
    return out


RUNNERS = {"VAE (IWAE bound)": vae_family, "DCGAN": dcgan_family, "WGAN-GP": wgan_family,
           "PixelCNN": pixelcnn_family, "RealNVP": realnvp_family, "pixel DDPM": ddpm_family,
           "latent": latent_families, "EBM": ebm_family, "pixel transformer": pixel_transformer_family,
           "tokens": token_families}


# ----------------------------------------------------------------------------- scoring

def scores(x: torch.Tensor, d: dict, classifier) -> dict:
    """The table's measures of samples ``x`` ``(N, 1, 28, 28)`` in [0, 1] (binarised here)."""
    xb = binarize(x.clamp(0, 1))
    memo = ev.memorisation_check(xb, d["b_train"], d["b_test"])
    return {"frechet": ev.classifier_frechet_distance(d["b_test"], xb, model=classifier),
            **ev.classifier_precision_recall_density_coverage(d["b_test"], xb, model=classifier, k=5),
            "memorisation_rate": memo.fraction_closer, "memorisation_ratio": memo.ratio}


# ----------------------------------------------------------------------------- running

_DATA: dict = {}


def _setup(smoke: bool) -> None:
    torch.set_num_threads(THREADS)
    x_train, _ = load_mnist("train", source="embedded")
    x_test, _ = load_mnist("test", source="embedded")
    if smoke:
        x_train, x_test = x_train[:SMOKE["n_train"]], x_test[:SMOKE["n_samples"]]
    _DATA.update(x_train=x_train, x_test=x_test, b_train=binarize(x_train), b_test=binarize(x_test),
                 b14_train=tokens.to_pixels(x_train), b14_test=tokens.to_pixels(x_test), smoke=smoke,
                 budget=SMOKE["budget_cpu_s"] if smoke else BUDGET_CPU_S,
                 n=SMOKE["n_samples"] if smoke else N_SAMPLES, iwae_k=SMOKE["iwae_k"] if smoke else IWAE_K,
                 sample_steps=SMOKE["sample_steps"] if smoke else DDPM["ddim_steps"],
                 vae_epochs=1 if smoke else LATENT["vae_epochs"])
    _DATA["classifier"] = load_classifier(device=torch.device("cpu"))


def run_task(task: tuple[str, int]) -> list[dict]:
    """Train one task's rows on one seed and score them: ``[{"family", "seed", ...}]`` without the samples."""
    name, seed = task
    start = time.perf_counter()
    out = RUNNERS[name](seed, _DATA)
    rows = out.items() if name in ("latent", "tokens") else [(name, out)]
    done = []
    for family, r in rows:
        x = r.pop("samples")
        r.update(scores(x, _DATA, _DATA["classifier"]))
        done.append({"family": family, "seed": seed, **r})
    print(f"{name} seed {seed}: " + "; ".join(
        f"{r['family']} Fréchet {r['frechet']:.1f} P {r['precision']:.2f} R {r['recall']:.2f} "
        f"train {r['train_cpu_s']:.0f} CPU s" for r in done) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return done


def summarise(runs: list[dict]) -> dict:
    keys = ("bits_per_dim", "frechet", "precision", "recall", "density", "coverage", "memorisation_rate",
            "memorisation_ratio", "train_cpu_s", "samples_per_cpu_s")
    table = {}
    for family in FAMILIES:
        rows = [r for r in runs if r["family"] == family]
        if not rows:
            continue
        present = [k for k in keys if rows[0].get(k) is not None]
        table[family] = {"data": DATA[family], "bits_per_dim_kind": rows[0]["bits_per_dim_kind"],
                         "seeds": [r["seed"] for r in rows], **df.summary(rows, present)}
    return table


def main() -> None:
    parser = df.seeded_parser(__doc__, SEEDS)
    parser.add_argument("--families", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help="tasks to run (the latent and token tasks train two rows each)")
    parser.add_argument("--jobs", type=int, default=1, help="tasks run at once, each on one torch thread")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    start = time.perf_counter()
    tasks = [(name, seed) for seed in args.seeds for name in args.families]
    if args.jobs == 1:
        _setup(args.smoke)
        runs = [row for task in tasks for row in run_task(task)]
    else:
        with multiprocessing.get_context("spawn").Pool(args.jobs, _setup, (args.smoke,)) as pool:
            runs = [row for rows in pool.imap_unordered(run_task, tasks) for row in rows]
    _setup(args.smoke)
    if args.out is None and set(args.families) != set(TASKS):      # the tasks not run keep their rows
        kept = {family for name in TASKS if name not in args.families for family in TASKS[name]}
        runs += [r for r in read_report("model_zoo").get("runs", []) if r["family"] in kept and r["seed"] in args.seeds]
    real = {"family": "real digits", "seed": None, "data": "1,000 training digits, binary 28x28",
            **scores(_DATA["x_train"][:_DATA["n"]], _DATA, _DATA["classifier"])}
    report = {"smoke": args.smoke, "seeds": args.seeds, "tuned_on_seeds": TUNED_ON,
              "seeds_note": df.seeds_note(args.seeds, TUNED_ON), "torch_threads": THREADS, "jobs": args.jobs,
              "budget_cpu_s": _DATA["budget"], "n_samples": _DATA["n"],
              "reference_set": f"{len(_DATA['x_test'])} embedded test digits, binarised at 0.5",
              "n_train": len(_DATA["x_train"]), "families": list(FAMILIES), "data": DATA,
              "settings": {"vae": VAE, "gan": GAN, "wgan_gp": WGAN, "pixels": tokens.PIXELS, "realnvp": FLOW,
                           "ddpm": DDPM, "latent": {**LATENT, "vae": df.LATENT}, "ebm": EBM,
                           "tokens": {**TOKEN, "vq": tokens.VQ, "prior": tokens.PRIOR, "masked": tokens.MASKED},
                           "iwae_k": _DATA["iwae_k"],
                           **({"smoke": SMOKE} if args.smoke else {})},
              "tuning_on_seeds_0_1": TUNING, "real_digits": real,
              "runs": sorted(runs, key=lambda r: (FAMILIES.index(r["family"]), r["seed"]))}
    report["table"] = summarise(report["runs"])
    report["total_wall_s"] = time.perf_counter() - start
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    report["total_cpu_s"] = sum(u.ru_utime + u.ru_stime for u in used)       # this invocation, workers included
    path = df.save("model_zoo", report, args.out)
    print(f"report: {path}")
    print(f"{'family':22s} {'bits/dim':>16s} {'Fréchet':>8s} {'prec':>5s} {'rec':>5s} {'dens':>5s} {'cov':>5s} "
          f"{'memo':>5s} {'CPU s':>6s} {'samples/s':>9s}")
    for family, r in report["table"].items():
        bpd = f"{r['bits_per_dim']['mean']:.3f} {r['bits_per_dim_kind'][:5]}" if "bits_per_dim" in r else "-"
        print(f"{family:22s} {bpd:>16s} {r['frechet']['mean']:8.1f} {r['precision']['mean']:5.2f} "
              f"{r['recall']['mean']:5.2f} {r['density']['mean']:5.2f} {r['coverage']['mean']:5.2f} "
              f"{r['memorisation_rate']['mean']:5.2f} {r['train_cpu_s']['mean']:6.0f} "
              f"{r['samples_per_cpu_s']['mean']:9.0f}")


if __name__ == "__main__":
    main()
