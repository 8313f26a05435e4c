"""dgmcourse.vq: nearest-code quantisation, the two VQ losses and an EMA step against numbers computed by hand on a
2-code, 2-D example; the straight-through gradient; perplexity and usage; dead-code restarts; a tiny VQ-VAE run."""

import math

import pytest
import torch

from dgmcourse.data import load_mnist
from dgmcourse.vq import (VQVAE, EMACodebook, codebook_perplexity, codebook_usage, quantize, restart_dead_codes,
                          train_vqvae)

# two codes e0 = (0, 0), e1 = (2, 0); three encoder outputs
CODES = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
Z_E = torch.tensor([[0.5, 0.5], [1.5, -1.0], [0.1, -0.1]])


def test_quantize_and_losses_by_hand():
    # squared distances to (e0, e1): (0.5, 2.5), (3.25, 1.25), (0.02, 3.62) -> codes 0, 1, 0
    z_q, indices, codebook_loss, commitment_loss = quantize(Z_E, CODES)
    assert indices.tolist() == [0, 1, 0]
    torch.testing.assert_close(z_q, CODES[[0, 1, 0]])
    # mean over the 3 vectors of the squared distance to the chosen code: (0.5 + 1.25 + 0.02) / 3
    assert codebook_loss.item() == pytest.approx(1.77 / 3, abs=1e-6)
    assert commitment_loss.item() == pytest.approx(1.77 / 3, abs=1e-6)


def test_quantize_on_a_channel_first_grid_matches_the_flat_vectors():
    z_e = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    codebook = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    z_q, indices, _, _ = quantize(z_e, codebook)
    assert indices.shape == (2, 4, 5) and z_q.shape == z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(indices.flatten(), expected)
    torch.testing.assert_close(z_q, codebook[indices].permute(0, 3, 1, 2))


def test_straight_through_passes_the_decoder_gradient_unchanged():
    z_e = Z_E.clone().requires_grad_(True)
    codebook = CODES.clone().requires_grad_(True)
    z_q, indices, codebook_loss, commitment_loss = quantize(z_e, codebook)
    weights = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])

    def decoder_loss(z):
        return (weights * z).sum() + (z ** 3).sum()

    decoder_loss(z_q).backward()
    z_ref = CODES[indices].clone().requires_grad_(True)       # d loss / d z_q at z_q = e_k
    decoder_loss(z_ref).backward()
    assert torch.equal(z_e.grad, z_ref.grad)
    assert codebook.grad is None                               # the reconstruction does not move the codes
    # codebook loss: gradient 2 (e_k - z_e) / N to the codes only; commitment: 2 (z_e - e_k) / N to z_e only
    (grad_e,) = torch.autograd.grad(codebook_loss, codebook)
    expected = torch.zeros_like(CODES).index_add_(0, indices, 2 * (CODES[indices] - Z_E) / 3)
    torch.testing.assert_close(grad_e, expected)
    (grad_z,) = torch.autograd.grad(commitment_loss, z_e)
    torch.testing.assert_close(grad_z, 2 * (Z_E - CODES[indices]) / 3)
    assert not torch.autograd.grad(codebook_loss, z_e, allow_unused=True)[0]
    assert torch.autograd.grad(commitment_loss, codebook, allow_unused=True)[0] is None


def test_ema_update_by_hand():
    ema = EMACodebook(2, 2, decay=0.5, eps=0.1)
    ema.embedding.copy_(CODES)
    ema.sums.copy_(CODES)                                        # the initial state: N = (1, 1), m = e
    ema.update(Z_E, torch.tensor([0, 1, 0]))
    # n = (2, 1), sums s0 = (0.6, 0.4), s1 = (1.5, -1)
    # N = 0.5 (1, 1) + 0.5 (2, 1) = (1.5, 1);  m0 = 0.5 (0, 0) + 0.5 (0.6, 0.4) = (0.3, 0.2),
    # m1 = 0.5 (2, 0) + 0.5 (1.5, -1) = (1.75, -0.5); total 2.5, smoothed N^ = (N + 0.1) / 2.7 * 2.5
    torch.testing.assert_close(ema.counts, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(ema.sums, torch.tensor([[0.3, 0.2], [1.75, -0.5]]))
    n0, n1 = 1.6 / 2.7 * 2.5, 1.1 / 2.7 * 2.5
    torch.testing.assert_close(ema.embedding, torch.tensor([[0.3 / n0, 0.2 / n0], [1.75 / n1, -0.5 / n1]]))
    assert ema.embedding[0].tolist() == pytest.approx([0.2025, 0.135], abs=1e-6)


def test_perplexity_and_usage():
    K = 8
    uniform = torch.arange(K).repeat(5)
    assert codebook_perplexity(uniform, K) == pytest.approx(K, abs=1e-9)
    assert codebook_usage(uniform, K) == 1.0
    one = torch.full((40,), 3)
    assert codebook_perplexity(one, K) == pytest.approx(1.0, abs=1e-12)
    assert codebook_usage(one, K) == 1 / K
    skewed = torch.tensor([0, 0, 0, 1])                           # p = (3/4, 1/4): H = -(3/4 log 3/4 + 1/4 log 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert codebook_perplexity(skewed.view(2, 2), K) == pytest.approx(math.exp(entropy), abs=1e-12)
    assert codebook_usage(skewed, K) == 2 / K


def test_restart_dead_codes_moves_only_the_dead_codes_onto_encoder_outputs():
    codebook = torch.arange(12.0).view(4, 3)
    z_e = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([5.0, 0.0, 2.0, 0.5])
    new, dead = restart_dead_codes(codebook, counts, z_e, threshold=1.0, generator=torch.Generator().manual_seed(1))
    assert dead.tolist() == [False, True, False, True]
    assert torch.equal(new[~dead], codebook[~dead])
    for row in new[dead]:
        assert (z_e == row).all(dim=1).any()                     # each restarted code is an encoder output
    assert not torch.equal(new[1], new[3])                       # drawn without replacement
    again, _ = restart_dead_codes(codebook, counts, z_e, threshold=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(new, again)


def test_vqvae_shapes_and_a_short_training_run():
    # Only what holds for every run is asserted (checked over seeds 0-23: see the comments). One code at the
    # origin and K - 1 codes at distance ~2800 make the first epoch's statistics deterministic: the encoder's
    # outputs (a few units in size) all choose code 0 whatever the initialisation, so the perplexity is exactly 1,
    # the usage 1/K, and the K - 1 unused codes are all restarted onto encoder outputs.
    x = load_mnist(verbose=False)[0][:512]
    K = 16
    torch.manual_seed(0)                                          # the convolutions' initialisation
    model = VQVAE(n_codes=K, code_dim=8, hidden=16, ema=True, generator=torch.Generator().manual_seed(0))
    out = model(x[:4])
    assert out["logits"].shape == (4, 1, 28, 28) and out["indices"].shape == (4, 7, 7)
    assert out["indices"].dtype == torch.int64
    far = torch.full((K, 8), 1e3)
    far[0] = 0.0
    model.ema_codebook.reset_codes(torch.ones(K, dtype=torch.bool), far)
    model.eval()
    model(x[:4])
    assert torch.equal(model.codebook, far)                      # EMA updates in training mode only
    generator = torch.Generator().manual_seed(0)
    first = train_vqvae(model, x, epochs=1, batch_size=32, lr=3e-3, restart_threshold=1.0, generator=generator,
                        progress=False)
    assert first["perplexity"] == [1.0] and first["usage"] == [1 / K] and first["restarted"] == [K - 1]
    # the restarted codes are encoder outputs now (seeds 0-23: norms <= 2.4), with a fresh EMA state (N_j = 1)
    assert model.codebook[1:].norm(dim=1).max() < 100
    assert torch.equal(model.ema_codebook.counts[1:], torch.ones(K - 1))
    assert not model.training
    rest = train_vqvae(model, x, epochs=2, batch_size=32, lr=3e-3, restart_threshold=1.0, generator=generator,
                       progress=False)
    # nats per image: a decoder that outputs logit 0 everywhere scores 784 log 2 = 543. Seeds 0-23: first epoch
    # 431-562, last epoch 204-362 (ratio 0.40-0.77); the bounds below leave wide margins on both.
    assert rest["reconstruction"][-1] < 0.9 * first["reconstruction"][0]
    assert rest["reconstruction"][-1] < 0.85 * 784 * math.log(2)
    assert len(rest["perplexity"]) == 2 and all(1 <= p <= K for p in rest["perplexity"])
    assert all(1 / K <= u <= 1 for u in rest["usage"])
    torch.testing.assert_close(model.decode_indices(out["indices"]).shape, torch.Size([4, 1, 28, 28]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="z_e must have D = 2 channels"):
        quantize(torch.zeros(3, 5), CODES)
    with pytest.raises(ValueError, match="z_e must be a non-empty floating tensor"):
        quantize(torch.zeros(2, 2, 3), CODES)
    with pytest.raises(ValueError, match="codebook must be a non-empty floating tensor"):
        quantize(Z_E, torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="decay must lie in"):
        EMACodebook(2, 2, decay=1.0)
    with pytest.raises(ValueError, match="indices must give one code per vector"):
        EMACodebook(2, 2).update(Z_E, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        codebook_perplexity(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        codebook_usage(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="counts must have shape"):
        restart_dead_codes(CODES, torch.ones(3), Z_E)
    with pytest.raises(ValueError, match="x must have shape"):
        VQVAE()(torch.zeros(2, 1, 14, 14))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        train_vqvae(VQVAE(), torch.zeros(2, 1, 28, 28), beta=-1.0)
