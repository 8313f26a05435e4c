"""Discrete tokens on the embedded digits (issue 30): the VQ-VAE, a transformer prior over its codes against
lecture 11's latent diffusion, a transformer on binarised pixels against lecture 9's PixelCNN, masked diffusion
against autoregressive sampling, and the transformer's key/value cache.

Data: the 4,000 / 1,000 embedded train / test digits (:func:`dgmcourse.data.load_mnist`, ``source="embedded"``).
Per seed, one after another on one torch thread:

* ``vqvae``: :class:`dgmcourse.vq.VQVAE` (7x7 codes, ``VQ``) trained by :func:`~dgmcourse.vq.train_vqvae` four
  ways: codebook learned by the codebook loss or by EMA (van den Oord et al. 2017, eq. 3 / App. A.1), each without
  and with dead-code restarts after every epoch (Dhariwal et al. 2020). Scored on the 1,000 test digits: the
  reconstruction error :math:`-\\log p(x | z_q)` (Bernoulli, nats per image, as the training loss), the codebook
  perplexity :func:`~dgmcourse.vq.codebook_perplexity` and usage of the test codes.
* ``prior``: a :class:`dgmcourse.transformer.CausalTransformer` over the 49 codes (raster order, start token K) of
  the ``PRIOR_VARIANT`` VQ-VAE (van den Oord et al. 2017, sec. 3.3, with ImageGPT's transformer in place of the
  PixelCNN), trained by :func:`~dgmcourse.transformer.train_autoregressive`; 1,000 samples (KV cache, τ = 1)
  decoded to images (sigmoid of the decoder's logits). Its CPU budget is the VQ-VAE's training plus the
  encoding plus the transformer's training. ``latent diffusion``: ``diffusion_flows``' recipe (lecture 1's MLPVAE,
  16 codes, then an EpsMLP on its standardised encoder means, DDIM 50 steps; ``diffusion_flows.latent_run``) given
  the same CPU seconds, VAE included. Both scored by the course classifier as ``diffusion_flows``: Fréchet distance
  in its feature space to the 1,000 test digits (``evaluation.classifier_frechet_distance``; not FID), mean
  confidence, collision entropy of the class histogram. The transformer's exact test NLL is in bits per token.
* ``masked diffusion``: a :class:`dgmcourse.masked_diffusion.MaskedDenoiser` on the same 49 codes, trained by
  :func:`~dgmcourse.masked_diffusion.train_masked_diffusion` (MDLM, linear schedule) for the transformer prior's
  training CPU seconds (steps counted on a throw-away copy), sampled by ancestral unmasking with 8, 16 and 64
  steps, scored as the prior (whose autoregressive sampling takes one step per token, 49); its test ELBO
  (:func:`~dgmcourse.masked_diffusion.elbo`, stratified times) in bits per token next to the prior's exact NLL.
* ``pixels``: the digits average-pooled to 14x14 and binarised at 0.5 (196 binary tokens). Lecture 9's
  :class:`dgmcourse.autoregressive.PixelCNN` trains first for ``PIXELS["pixelcnn_epochs"]``; a causal transformer
  over the 196 pixels (vocabulary 2, start token 2) gets as many steps as fit in the same CPU seconds. Test
  bits/dim of both on the 1,000 test digits (exact likelihoods).
* ``kv_cache``: the pixel transformer samples a 196-token sequence with :func:`dgmcourse.transformer.sample`
  with and without the cache from the same generator seed: ``torch.equal`` of the two, both wall times (medians of
  ``KV["repeats"]`` / ``KV["batch_repeats"]`` alternating calls) and their ratio, for one sequence (the target) and
  for a batch of ``KV["batch"]``. With one sequence this small model (2 blocks of width 64) is bound by the
  overhead of each small torch call, not by arithmetic (``TUNING``); ``sample`` therefore runs in inference mode,
  skips the attention mask for a single new query and the token checks inside its loop, and the MLPs use GPT-2's
  tanh GELU, which on this CPU costs a fifth of the exact one.

Equal CPU time: step counts come from timing a throw-away copy, so budgets match only roughly; the summary's
``CPU shares`` gives each model's training CPU seconds over the budget it was given (``diffusion_flows.latent_run``
counts its own steps, the same way as ``diffusion_flows`` does).

Seeds: every setting was chosen on seeds 0-2 of the tuning seeds 0-4 (``TUNED_ON``; ``TUNING`` records what was
tried, with the exact GELU the transformer had then; the report's runs use the tanh approximation); the report uses
seeds 100-104 (default ``--seeds``), never tuned on. Every quality figure is given per seed
with its mean, std, min and max. Timing: 1 torch thread (``THREADS``; on this shared 2-core machine two threads ran
the VQ-VAE four times slower), one run at a time, CPU time ``time.process_time``, wall time ``time.perf_counter``. A
run is one model's training plus its sampling; the prior's run includes its VQ-VAE.

Run: ``python benchmarks/tokens.py [--seeds 100 101 102 103 104] [--smoke] [--out PATH]``; writes
``benchmarks/reports/tokens.json`` through ``dgmcourse.reports.write_report`` (``--out`` writes elsewhere; ``--smoke``
shrinks every budget, for testing the script only).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dgmcourse import autoregressive as ar
from dgmcourse import diffusion as dm
from dgmcourse import evaluation as ev
from dgmcourse import masked_diffusion as md
from dgmcourse import transformer as tf
from dgmcourse import vq
from dgmcourse.classifier import load_classifier
from dgmcourse.data import load_mnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_flows as df  # noqa: E402  (latent diffusion, saving)
from diffusion_flows import digit_scores, summary, timed, units_in  # noqa: E402

THREADS = 1
SEEDS = [100, 101, 102, 103, 104]               # report seeds, never tuned on
TUNED_ON = [0, 1, 2, 3, 4]
N_SAMPLES = 1000
VQ = dict(n_codes=32, code_dim=16, hidden=32, epochs=16, batch=64, lr=2e-3, beta=0.25, decay=0.99,
          restart_threshold=1.0)
VARIANTS = {"learned codebook": dict(ema=False, restarts=False),
            "learned codebook + restarts": dict(ema=False, restarts=True),
            "EMA": dict(ema=True, restarts=False),
            "EMA + restarts": dict(ema=True, restarts=True)}
PRIOR_VARIANT = "EMA + restarts"                # VQ-VAE-2's codebook, with Jukebox's restarts
PRIOR = dict(d_model=64, n_heads=4, n_layers=2, steps=5000, batch=16, lr=4e-3)
MASKED = dict(d_model=64, n_heads=4, n_layers=2, batch=16, lr=4e-3, sample_steps=[8, 16, 64], elbo_n_t=32)
PIXELS = dict(size=14, threshold=0.5, pixelcnn_channels=32, pixelcnn_layers=4, pixelcnn_epochs=20, pixelcnn_batch=64,
              pixelcnn_lr=2e-3, d_model=64, n_heads=4, n_layers=2, batch=4, lr=3e-3)
KV = dict(length=196, n=1, repeats=7, batch=64, batch_repeats=2)
PROBE_STEPS = (5, 50)                           # warm-up steps, then timed steps on a throw-away copy
# what the settings above rest on (1 torch thread; test figures of the tuning seeds; a shared machine)
TUNING = {
    "threads": "one VQ-VAE epoch on the 4,000 digits: 8.7 s wall on 2 torch threads, 2.1 s on 1 (seed 0)",
    "VQ-VAE, test reconstruction (nats) / perplexity for learned, learned + restarts, EMA, EMA + restarts": {
        "K = 32, 8 epochs, lr 1e-3, seed 0": [[107.2, 2.5], [68.7, 18.7], [98.6, 2.6], [72.0, 15.4]],
        "K = 64, 16 epochs, lr 2e-3, seeds 0 / 1 / 2": [
            [[77.3, 3.5], [59.5, 38.4], [95.7, 2.4], [61.5, 36.7]],
            [[80.8, 3.6], [59.8, 39.8], [93.2, 2.6], [60.4, 40.6]],
            [[75.0, 4.4], [59.4, 41.7], [80.4, 3.3], [61.3, 36.5]]],
        "K = 32, 16 epochs, lr 2e-3, seed 0 (chosen)": [[84.6, 3.3], [61.8, 23.4], [95.2, 2.4], [63.8, 18.4]]},
    "prior (EMA + restarts codes), Fréchet / confidence / test bits per token (training CPU s)": {
        "K = 64, 2 x 64, 2,000 steps of 64, lr 2e-3, seed 0": [68.9, 0.887, 2.20, 75],
        "K = 64, 4 x 128, 450 steps of 64, lr 1e-3, seed 0": [108.7, 0.856, 2.28, 83],
        "K = 64, 2 x 64, 3,000 steps of 32, lr 2e-3, seed 0": [73.3, 0.887, 2.20, 63],
        "K = 64, 2 x 64, 5,000 steps of 16, lr 2e-3, seeds 0 / 1": [[66.4, 0.883, 2.21, 54], [66.6, 0.890, 2.32, 52]],
        "K = 32, same, seeds 0 / 1": [[55.0, 0.890, 1.78, 54], [57.6, 0.896, 1.78, 49]],
        "K = 32, same, lr 4e-3, seeds 0 / 1 (chosen: sharper samples, 0.07 bits per token worse)": [
            [47.6, 0.914, 1.84, 45], [50.3, 0.908, 1.86, 46]]},
    "latent diffusion (diffusion_flows' recipe), K = 64 prior's budget of 92 CPU s, seed 0: Fréchet / confidence":
        [313.5, 0.859],
    "masked diffusion, Fréchet at 8 / 16 / 64 steps and test ELBO bits per token": {
        "K = 64, 2 x 64, batches of 64, lr 2e-3, seed 0, 844 steps (a first probe that counted the first call's "
        "set-up: now warmed up)": [333, 327, 314, 2.95],
        "same, 5,377 steps (202 CPU s, an undercounting probe)": [178, 165, 149, 2.37],
        "K = 32, 52 CPU s, 2 x 64, batches of 16, lr 2e-3, seed 0": [267, 254, 239, 2.18],
        "same, batches of 64": [281, 280, 281, 2.22],
        "same, 4 x 128, batches of 16, lr 1e-3": [314, 311, 304, 2.35],
        "same, 2 x 64, batches of 16, lr 4e-3, seeds 0 / 1 (chosen)": [[236, 233, 229, 2.10], [240, 223, 221, 2.09]],
        "same, batches of 8, lr 4e-3": [241, 232, 224, 2.09],
        "same, batches of 16, lr 6e-3": [236, 236, 233, 2.09]},
    "PixelCNN on 14x14 binarised digits, 32 channels, seed 0: test bits/dim (training CPU s)": {
        "lr 1e-3, batches of 64 (lecture 9), 20 / 30 epochs": [[0.2393, 42], [0.2344, 63]],
        "lr 2e-3, batches of 64, 12 / 20 epochs (chosen: 20)": [[0.2391, 29], [0.2339, 47]],
        "lr 1e-3, batches of 32, 14 epochs": [0.2374, 34],
        "64 channels, lr 2e-3, 8 epochs": [0.2356, 57]},
    "pixel transformer at 42 CPU s, seed 0: test bits/dim for width x layers, batch, lr": {
        "64 x 2, 64, 2e-3": 0.3027, "64 x 2, 32, 3e-3": 0.2575, "32 x 2, 32, 3e-3": 0.2722,
        "128 x 4, 16, 1e-3": 0.3255, "64 x 2, 16, 2e-3": 0.2520, "64 x 2, 16, 3e-3": 0.2409,
        "64 x 3, 16, 2e-3": 0.2555, "96 x 2, 16, 2e-3": 0.2512, "64 x 2, 8, 1e-3": 0.2516, "64 x 2, 8, 2e-3": 0.2377,
        "64 x 2, 8, 3e-3": 0.2305, "64 x 2, 8, 5e-3": 0.2296, "64 x 2, 4, 2e-3": 0.2300,
        "64 x 2, 4, 3e-3 (chosen)": 0.2258},
    "KV-cache speed-up (untrained weights, medians of 5) for 1 / 8 / 64 sequences of 196 tokens": {
        "64 x 2 (the pixel transformer's size)": [2.19, 6.32, 15.2], "128 x 4": [4.65, 8.65, 16.7],
        "note": "one sequence is bound by the per-operation overhead of about 20 small torch calls per block and "
                "token (cProfile), not by arithmetic; the size was chosen for bits/dim, not for this ratio"},
    "KV-cache speed-up for one sequence of 196 tokens, 64 x 2, untrained weights (torch seeds 100-104: a timing, "
    "the weights do not matter), medians of 7 per seed, median over seeds for two runs each (cProfile and "
    "timeit located the cost)": {
        "as above": [2.14, 2.12],
        "sample in inference mode, no attention mask for one new query, no token checks inside the loop":
        [2.84, 2.77],
        "the same and GPT-2's tanh GELU (exact GELU 7.7 us, tanh 1.4 us on a 256-wide row; chosen)": [3.21, 3.31]},
    "the chosen settings, seed 2 (the whole script)": {
        "VQ-VAE test reconstruction / perplexity": [[82.7, 3.4], [61.0, 21.6], [73.5, 4.5], [63.4, 19.9]],
        "prior / latent diffusion: Fréchet, confidence": [[54.5, 0.906], [345.5, 0.873]],
        "masked diffusion Fréchet at 8 / 16 / 64 steps": [220.1, 212.2, 197.9],
        "PixelCNN / pixel transformer test bits/dim": [0.2355, 0.2353], "KV-cache speed-up, 1 / 64 sequences":
        [2.08, 14.9], "wall s": 374},
}
SMOKE = dict(vq_epochs=1, prior_steps=30, pixelcnn_epochs=1, n_samples=200, n_train=1000, sample_steps=[8, 16],
             elbo_n_t=4, kv_batch=8)
TARGETS = {"kv_cache_speedup_at_least": 3.0, "run_wall_s_at_most": 300}


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 28, 28)`` digits in [0, 1] -> binary ``(N, 1, 14, 14)`` (average-pooled, thresholded)."""
    factor = 28 // PIXELS["size"]
    return (F.avg_pool2d(x, factor) > PIXELS["threshold"]).float()


def steps_in(budget_cpu: float, make, train) -> int:
    """:func:`diffusion_flows.units_in` with ``PROBE_STEPS`` (the first call in a process pays about a second of
    set-up, hence the warm-up)."""
    return units_in(budget_cpu, make, train, probe=PROBE_STEPS[1], warm_up=PROBE_STEPS[0])


def bits_per_token(nats: torch.Tensor, length: int) -> float:
    return ev.bits_per_dim(nats, length).mean().item()


@torch.no_grad()
def encode(model: vq.VQVAE, x: torch.Tensor) -> torch.Tensor:
    """The 49 code indices of each image, raster order: int64 ``(N, 49)``."""
    return torch.cat([model(chunk)["indices"].flatten(1) for chunk in x.split(500)])


@torch.no_grad()
def decode(model: vq.VQVAE, tokens: torch.Tensor) -> torch.Tensor:
    """Images ``(N, 1, 28, 28)`` in [0, 1] (Bernoulli means) of code sequences ``(N, 49)``."""
    grid = tokens.reshape(-1, model.grid, model.grid)
    return torch.cat([torch.sigmoid(model.decode_indices(chunk)) for chunk in grid.split(500)])


# ----------------------------------------------------------------------------- VQ-VAE

def vqvae_recipe(variant: str, seed: int, x_train: torch.Tensor):
    """``(make, train)`` of the ``VQ`` VQ-VAE trained the ``variant`` way on ``x_train``: a fresh seeded model, and
    ``train(model, epochs)``, which returns the training history."""
    cfg, how = VQ, VARIANTS[variant]

    def make():
        torch.manual_seed(seed)
        return vq.VQVAE(n_codes=cfg["n_codes"], code_dim=cfg["code_dim"], hidden=cfg["hidden"], ema=how["ema"],
                        decay=cfg["decay"], generator=torch.Generator().manual_seed(seed))

    def train(model, epochs):
        return vq.train_vqvae(model, x_train, epochs=epochs, batch_size=cfg["batch"], lr=cfg["lr"], beta=cfg["beta"],
                              restart_threshold=cfg["restart_threshold"] if how["restarts"] else None,
                              generator=torch.Generator().manual_seed(seed), progress=False)

    return make, train


def vqvae_run(variant: str, seed: int, smoke: bool, x_train, x_test) -> tuple[dict, vq.VQVAE]:
    cfg = VQ
    make, train = vqvae_recipe(variant, seed, x_train)
    model = make()
    history, cpu, wall = timed(lambda: train(model, SMOKE["vq_epochs"] if smoke else cfg["epochs"]))
    with torch.no_grad():
        out = model(x_test)
    k = cfg["n_codes"]
    return {"test_reconstruction_nats": out["reconstruction"].item(),
            "test_perplexity": vq.codebook_perplexity(out["indices"], k),
            "test_usage": vq.codebook_usage(out["indices"], k),
            "train_perplexity_last_epoch": history["perplexity"][-1],
            "train_reconstruction_last_epoch": history["reconstruction"][-1],
            "codes_restarted": sum(history["restarted"]), "train_cpu_s": cpu, "train_wall_s": wall}, model


# ----------------------------------------------------------------------------- token models

def prior_recipe(seed: int, tokens: torch.Tensor):
    """``(make, train)`` of the ``PRIOR`` transformer on code sequences ``tokens`` ``(N, L)`` (start token K): a fresh
    seeded model, and ``train(model, steps)``."""
    cfg, k = PRIOR, VQ["n_codes"]

    def make():
        torch.manual_seed(seed)
        return tf.CausalTransformer(k + 1, tokens.shape[1], cfg["d_model"], cfg["n_heads"], cfg["n_layers"],
                                    output_size=k)

    def train(model, steps):
        return tf.train_autoregressive(model, tokens, steps, bos=k, batch_size=cfg["batch"], lr=cfg["lr"],
                                       generator=torch.Generator().manual_seed(seed), progress=False)

    return make, train


def prior_run(seed: int, smoke: bool, vqvae: vq.VQVAE, tokens, test_tokens, n_samples: int) -> tuple[dict, object]:
    k = VQ["n_codes"]
    length = tokens.shape[1]
    make, train = prior_recipe(seed, tokens)
    model = make()
    steps = SMOKE["prior_steps"] if smoke else PRIOR["steps"]
    _, cpu, wall = timed(lambda: train(model, steps))
    with torch.no_grad():
        test_bits = bits_per_token(tf.log_likelihood(model, test_tokens, k), length)
    x, s_cpu, s_wall = timed(lambda: decode(vqvae, tf.sample(model, n_samples, length, k,
                                                              generator=torch.Generator().manual_seed(seed + 1))))
    return {"steps": steps, "test_bits_per_token": test_bits, "train_cpu_s": cpu, "train_wall_s": wall,
            "sample_steps": length, "sample_cpu_s": s_cpu, "sample_wall_s": s_wall}, x


def masked_recipe(seed: int, tokens: torch.Tensor):
    """``(make, train)`` of the ``MASKED`` denoiser on code sequences ``tokens`` ``(N, L)``: a fresh seeded model, and
    ``train(model, steps)``."""
    cfg, k = MASKED, VQ["n_codes"]

    def make():
        torch.manual_seed(seed)
        return md.MaskedDenoiser(k, tokens.shape[1], cfg["d_model"], cfg["n_heads"], cfg["n_layers"])

    def train(model, steps):
        return md.train_masked_diffusion(model, tokens, k, steps, batch_size=cfg["batch"], lr=cfg["lr"],
                                         generator=torch.Generator().manual_seed(seed), progress=False)

    return make, train


def masked_run(seed: int, smoke: bool, vqvae: vq.VQVAE, tokens, test_tokens, budget_cpu: float, n_samples: int,
               x_test, classifier) -> dict:
    cfg, k = MASKED, VQ["n_codes"]
    length = tokens.shape[1]
    make, train = masked_recipe(seed, tokens)
    steps = steps_in(budget_cpu, make, train)
    model = make()
    _, cpu, wall = timed(lambda: train(model, steps))
    with torch.no_grad():
        elbo = md.elbo(model, test_tokens, k, n_t=SMOKE["elbo_n_t"] if smoke else cfg["elbo_n_t"],
                       generator=torch.Generator().manual_seed(seed + 2))
    out = {"steps": steps, "test_elbo_bits_per_token": bits_per_token(elbo, length), "train_cpu_s": cpu,
           "train_wall_s": wall, "sampling": {}}
    for n in SMOKE["sample_steps"] if smoke else cfg["sample_steps"]:
        x, s_cpu, s_wall = timed(lambda: decode(vqvae, md.sample(
            model, n_samples, length, k, steps=n, generator=torch.Generator().manual_seed(seed + 1))))
        out["sampling"][str(n)] = {**digit_scores(x, x_test, classifier), "sample_cpu_s": s_cpu,
                                   "sample_wall_s": s_wall}
    return out


# ----------------------------------------------------------------------------- binarised pixels

def pixelcnn_recipe(seed: int, b_train: torch.Tensor):
    """``(make, train)`` of the ``PIXELS`` PixelCNN on binary images ``b_train`` ``(N, 1, 14, 14)``: a fresh seeded
    model, and ``train(model, epochs)``."""
    cfg = PIXELS

    def make():
        torch.manual_seed(seed)
        return ar.PixelCNN(channels=cfg["pixelcnn_channels"], layers=cfg["pixelcnn_layers"])

    def train(model, epochs):
        return ar.train_pixelcnn(model, b_train, epochs=epochs, batch_size=cfg["pixelcnn_batch"], lr=cfg["pixelcnn_lr"],
                                 device=torch.device("cpu"), seed=seed, progress=False)

    return make, train


def pixel_transformer_recipe(seed: int, tokens: torch.Tensor):
    """``(make, train)`` of the ``PIXELS`` transformer on binary pixel sequences ``tokens`` ``(N, D)`` (start token 2):
    a fresh seeded model, and ``train(model, steps)``."""
    cfg = PIXELS

    def make():
        torch.manual_seed(seed)
        return tf.CausalTransformer(3, tokens.shape[1], cfg["d_model"], cfg["n_heads"], cfg["n_layers"], output_size=2)

    def train(model, steps):
        return tf.train_autoregressive(model, tokens, steps, bos=2, batch_size=cfg["batch"], lr=cfg["lr"],
                                       generator=torch.Generator().manual_seed(seed), progress=False)

    return make, train


def pixels_run(seed: int, smoke: bool, b_train, b_test) -> tuple[dict, tf.CausalTransformer]:
    cfg = PIXELS
    d = b_train[0].numel()
    epochs = SMOKE["pixelcnn_epochs"] if smoke else cfg["pixelcnn_epochs"]
    make_cnn, train_cnn = pixelcnn_recipe(seed, b_train)
    cnn = make_cnn()
    _, cnn_cpu, cnn_wall = timed(lambda: train_cnn(cnn, epochs))
    with torch.no_grad():
        cnn_bpd = ev.bits_per_dim(ar.log_likelihood(cnn, b_test), d).mean().item()
    tokens, test_tokens = b_train.flatten(1).long(), b_test.flatten(1).long()
    make, train = pixel_transformer_recipe(seed, tokens)
    steps = steps_in(cnn_cpu, make, train)
    model = make()
    _, cpu, wall = timed(lambda: train(model, steps))
    with torch.no_grad():
        bpd = bits_per_token(torch.cat([tf.log_likelihood(model, chunk, 2) for chunk in test_tokens.split(250)]), d)
    return {"pixelcnn": {"epochs": epochs, "test_bits_per_dim": cnn_bpd, "train_cpu_s": cnn_cpu,
                         "train_wall_s": cnn_wall},
            "transformer": {"steps": steps, "test_bits_per_dim": bpd, "train_cpu_s": cpu, "train_wall_s": wall}}, model


def kv_cache_run(model: tf.CausalTransformer, seed: int, smoke: bool) -> dict:
    out = {}
    for name, n, repeats in (("one sequence", KV["n"], KV["repeats"]),
                             ("batch", SMOKE["kv_batch"] if smoke else KV["batch"], KV["batch_repeats"])):
        walls = {True: [], False: []}
        samples = {}
        for _ in range(1 if smoke else repeats):
            for cache in (True, False):
                x, _, wall = timed(lambda: tf.sample(model, n, KV["length"], 2, use_cache=cache,
                                                     generator=torch.Generator().manual_seed(seed)))
                walls[cache].append(wall)
                samples[cache] = x
        cached, recomputed = statistics.median(walls[True]), statistics.median(walls[False])
        out[name] = {"n": n, "length": KV["length"], "identical": torch.equal(samples[True], samples[False]),
                     "cached_wall_s": cached, "recomputed_wall_s": recomputed, "speedup": recomputed / cached,
                     "cached_walls_s": walls[True], "recomputed_walls_s": walls[False]}
    return out


# ----------------------------------------------------------------------------- one seed

def seed_run(seed: int, smoke: bool, data: dict, classifier) -> dict:
    start = time.perf_counter()
    x_train, x_test = data["x_train"], data["x_test"]
    n_samples = SMOKE["n_samples"] if smoke else N_SAMPLES
    out = {"seed": seed, "vqvae": {}}
    models = {}
    for variant in VARIANTS:
        out["vqvae"][variant], models[variant] = vqvae_run(variant, seed, smoke, x_train, x_test)
    vqvae = models[PRIOR_VARIANT]
    (tokens, test_tokens), enc_cpu, _ = timed(lambda: (encode(vqvae, x_train), encode(vqvae, x_test)))
    out["vq_reconstructions"] = digit_scores(decode(vqvae, encode(vqvae, x_train[:n_samples])), x_test, classifier)

    prior, x_prior = prior_run(seed, smoke, vqvae, tokens, test_tokens, n_samples)
    v = out["vqvae"][PRIOR_VARIANT]
    budget = v["train_cpu_s"] + enc_cpu + prior["train_cpu_s"]
    prior.update({**digit_scores(x_prior, x_test, classifier), "vqvae_train_cpu_s": v["train_cpu_s"],
                  "encode_cpu_s": enc_cpu, "budget_cpu_s": budget,
                  "run_wall_s": v["train_wall_s"] + prior["train_wall_s"] + prior["sample_wall_s"]})
    out["prior"] = prior
    latent = df.latent_run(seed, smoke, x_train, x_test, classifier, budget, n_samples, dm.linear_schedule(df.T))
    latent["run_wall_s"] = latent["train_wall_s"] + latent["sample_wall_s"]
    out["latent diffusion"] = latent
    masked = masked_run(seed, smoke, vqvae, tokens, test_tokens, prior["train_cpu_s"], n_samples, x_test, classifier)
    masked["run_wall_s"] = masked["train_wall_s"] + sum(r["sample_wall_s"] for r in masked["sampling"].values())
    out["masked diffusion"] = masked

    pixels, pixel_model = pixels_run(seed, smoke, data["b_train"], data["b_test"])
    out["pixels"] = pixels
    out["kv_cache"] = kv_cache_run(pixel_model, seed, smoke)
    out["wall_s"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- report

def summarise(runs: list[dict]) -> dict:
    vq_keys = ("test_reconstruction_nats", "test_perplexity", "test_usage", "codes_restarted", "train_wall_s")
    scores = ("frechet", "confidence", "collision_entropy")
    out = {"vqvae": {v: summary([r["vqvae"][v] for r in runs], vq_keys) for v in VARIANTS},
           "vq_reconstructions": summary([r["vq_reconstructions"] for r in runs], scores),
           "prior": summary([r["prior"] for r in runs], (*scores, "test_bits_per_token", "budget_cpu_s",
                                                         "sample_wall_s", "run_wall_s")),
           "latent diffusion": summary([r["latent diffusion"] for r in runs], (*scores, "train_cpu_s",
                                                                                "sample_wall_s", "run_wall_s")),
           "masked diffusion": {
               **summary([r["masked diffusion"] for r in runs], ("test_elbo_bits_per_token", "train_cpu_s",
                                                                 "run_wall_s")),
               "sampling": {n: summary([r["masked diffusion"]["sampling"][n] for r in runs],
                                       (*scores, "sample_wall_s"))
                            for n in runs[0]["masked diffusion"]["sampling"]}},
           "pixels": {m: summary([r["pixels"][m] for r in runs], ("test_bits_per_dim", "train_cpu_s",
                                                                  "train_wall_s"))
                      for m in ("pixelcnn", "transformer")},
           "kv_cache": {name: {**summary([r["kv_cache"][name] for r in runs],
                                         ("cached_wall_s", "recomputed_wall_s", "speedup")),
                               "identical_on_every_seed": all(r["kv_cache"][name]["identical"] for r in runs)}
                        for name in runs[0]["kv_cache"]},
           "seed_wall_s": summary(runs, ("wall_s",))["wall_s"]}
    out["CPU shares (training CPU s over the budget it was given, mean over seeds)"] = {
        "latent diffusion / prior's budget (VQ-VAE included)": statistics.mean(
            r["latent diffusion"]["train_cpu_s"] / r["prior"]["budget_cpu_s"] for r in runs),
        "masked diffusion / prior's transformer": statistics.mean(
            r["masked diffusion"]["train_cpu_s"] / r["prior"]["train_cpu_s"] for r in runs),
        "pixel transformer / PixelCNN": statistics.mean(
            r["pixels"]["transformer"]["train_cpu_s"] / r["pixels"]["pixelcnn"]["train_cpu_s"] for r in runs)}
    out["prior ahead of latent diffusion on"] = {
        "frechet": sum(r["prior"]["frechet"] < r["latent diffusion"]["frechet"] for r in runs),
        "confidence": sum(r["prior"]["confidence"] > r["latent diffusion"]["confidence"] for r in runs),
        "out_of": len(runs)}
    out["transformer ahead of PixelCNN on bits/dim"] = {
        "seeds": sum(r["pixels"]["transformer"]["test_bits_per_dim"] < r["pixels"]["pixelcnn"]["test_bits_per_dim"]
                     for r in runs), "out_of": len(runs)}
    return out


def run_walls(runs: list[dict]) -> dict:
    """The wall seconds of every run (one model's training plus sampling), the largest per kind."""
    kinds = {f"VQ-VAE ({v})": [r["vqvae"][v]["train_wall_s"] for r in runs] for v in VARIANTS}
    kinds.update({"transformer prior (VQ-VAE included)": [r["prior"]["run_wall_s"] for r in runs],
                  "latent diffusion": [r["latent diffusion"]["run_wall_s"] for r in runs],
                  "masked diffusion (all step counts)": [r["masked diffusion"]["run_wall_s"] for r in runs],
                  "PixelCNN": [r["pixels"]["pixelcnn"]["train_wall_s"] for r in runs],
                  "pixel transformer (+ KV-cache timing)": [
                      r["pixels"]["transformer"]["train_wall_s"]
                      + sum(sum(k["cached_walls_s"]) + sum(k["recomputed_walls_s"]) for k in r["kv_cache"].values())
                      for r in runs]})
    return {name: max(walls) for name, walls in kinds.items()}


def targets(report: dict) -> dict:
    s = report["summary"]
    speedups = [r["kv_cache"]["one sequence"]["speedup"] for r in report["runs"]]
    identical = all(k["identical_on_every_seed"] for k in s["kv_cache"].values())
    walls = report["max_run_wall_s"]
    return {
        "KV-cache sampling of one 196-token sequence >= 3x faster than recomputing (median over seeds)": {
            "value": statistics.median(speedups), "per_seed": speedups,
            "batch_speedup_median": statistics.median(r["kv_cache"]["batch"]["speedup"] for r in report["runs"]),
            "met": statistics.median(speedups) >= TARGETS["kv_cache_speedup_at_least"]},
        "KV-cache and recomputed samples identical (torch.equal; every seed, one sequence and the batch)": {
            "value": identical, "met": identical},
        "every quality figure reported with its seeds' spread (per seed, mean, std, min, max)": {
            "value": f"{len(report['runs'])} seeds", "met": len(report["runs"]) >= 2},
        "each run <= 5 min (wall, one model's training + sampling)": {
            "value": max(walls.values()), "largest": max(walls, key=walls.get),
            "met": max(walls.values()) <= TARGETS["run_wall_s_at_most"]},
    }


def main() -> None:
    parser = df.seeded_parser(__doc__, SEEDS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    x_train, _ = load_mnist("train", source="embedded")
    x_test, _ = load_mnist("test", source="embedded")
    if args.smoke:
        x_train = x_train[:SMOKE["n_train"]]
    data = {"x_train": x_train, "x_test": x_test, "b_train": to_pixels(x_train), "b_test": to_pixels(x_test)}
    classifier = load_classifier(device=torch.device("cpu"))
    n_samples = SMOKE["n_samples"] if args.smoke else N_SAMPLES
    runs = []
    for seed in args.seeds:
        runs.append(seed_run(seed, args.smoke, data, classifier))
        r = runs[-1]
        print(seed, {v: (round(x["test_reconstruction_nats"], 1), round(x["test_perplexity"], 1))
                     for v, x in r["vqvae"].items()},
              "prior", round(r["prior"]["frechet"], 1), round(r["prior"]["confidence"], 3),
              "latent", round(r["latent diffusion"]["frechet"], 1), round(r["latent diffusion"]["confidence"], 3),
              "masked", {n: round(x["frechet"], 1) for n, x in r["masked diffusion"]["sampling"].items()},
              "bpd", round(r["pixels"]["pixelcnn"]["test_bits_per_dim"], 4),
              round(r["pixels"]["transformer"]["test_bits_per_dim"], 4),
              "kv", round(r["kv_cache"]["one sequence"]["speedup"], 2), f"{r['wall_s']:.0f} s", flush=True)
    report = {"smoke": args.smoke, "seeds": args.seeds, "tuned_on_seeds": TUNED_ON,
              "seeds_note": df.seeds_note(args.seeds, TUNED_ON), "torch_threads": THREADS,
              "n_samples": n_samples, "reference_set": f"{len(x_test)} embedded test digits",
              "settings": {"vqvae": VQ, "variants": VARIANTS, "prior_variant": PRIOR_VARIANT, "prior": PRIOR,
                           "masked": MASKED, "pixels": PIXELS, "kv_cache": KV, "probe_steps": PROBE_STEPS,
                           "latent": df.LATENT, **({"smoke": SMOKE} if args.smoke else {})},
              "tuning_on_seeds_0_4": TUNING,
              "real_data_scores": {
                  "real train digits": digit_scores(x_train[:n_samples], x_test, classifier)},
              "runs": runs}
    report["summary"] = summarise(runs)
    report["max_run_wall_s"] = run_walls(runs)
    report["targets"] = targets(report)
    report["total_wall_s"] = time.perf_counter() - start
    path = df.save("tokens", report, args.out)
    print(f"report: {path}")
    s = report["summary"]
    for v, r in s["vqvae"].items():
        print(f"VQ-VAE {v:28s} test rec {r['test_reconstruction_nats']['mean']:6.1f} nats  "
              f"perplexity {r['test_perplexity']['mean']:5.1f}  usage {r['test_usage']['mean']:.2f}")
    for name in ("prior", "latent diffusion"):
        r = s[name]
        print(f"{name:16s} Fréchet {r['frechet']['mean']:6.1f} ± {r['frechet']['std']:5.1f}  "
              f"confidence {r['confidence']['mean']:.3f}")
    r = s["prior"]
    print(f"autoregressive prior, 49 steps: sampling {r['sample_wall_s']['mean']:.2f} s, test "
          f"{r['test_bits_per_token']['mean']:.3f} bits per token; masked diffusion test ELBO "
          f"{s['masked diffusion']['test_elbo_bits_per_token']['mean']:.3f} bits per token")
    for n, r in s["masked diffusion"]["sampling"].items():
        print(f"masked diffusion {n:>3s} steps: Fréchet {r['frechet']['mean']:6.1f}  confidence "
              f"{r['confidence']['mean']:.3f}  sampling {r['sample_wall_s']['mean']:.2f} s")
    for m, r in s["pixels"].items():
        print(f"pixels {m:12s} test {r['test_bits_per_dim']['mean']:.4f} bits/dim")
    for name, t in report["targets"].items():
        print(f"{'met' if t['met'] else 'MISSED':6s} {name}: {t['value']}")


if __name__ == "__main__":
    main()
