"""dgmcourse.training.train_epoch: the minibatch epoch every trainer uses (known-answer tests)."""

import pytest
import torch

from dgmcourse.training import start_training, train_epoch


def test_train_epoch_visits_every_example_once_in_randperm_order_and_steps_once_per_batch():
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=0.1)
    seen, clipped = [], []
    x = torch.arange(10.0)

    def losses(idx):
        seen.append(idx)
        return {"loss": w * 1.0, "x": x[idx].mean(), "batch": float(len(idx))}

    means = train_epoch(optimizer, 10, 4, losses, generator=torch.Generator().manual_seed(3),
                        after_step=lambda: clipped.append(w.item()))
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3)).split(4)
    assert [s.tolist() for s in seen] == [e.tolist() for e in expected]          # batches of 4, 4, 2
    assert w.item() == pytest.approx(-0.3) and clipped == pytest.approx([-0.1, -0.2, -0.3])  # d loss/dw = 1
    assert means["x"] == pytest.approx(4.5)                   # per-example mean of 0..9: batches weighted by size
    assert means["batch"] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)
    assert means["loss"] == pytest.approx((4 * 0.0 + 4 * -0.1 + 2 * -0.2) / 10)  # the loss before each step


def test_train_epoch_uses_the_global_rng_without_a_generator():
    seen = []
    w = torch.nn.Parameter(torch.zeros(()))
    torch.manual_seed(7)
    train_epoch(torch.optim.SGD([w], lr=0.1), 5, 5, lambda idx: seen.append(idx) or {"loss": w * 1.0})
    torch.manual_seed(7)
    assert seen[0].tolist() == torch.randperm(5).tolist()


def test_train_epoch_rejects_bad_sizes_and_a_missing_loss():
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="need n >= 1 and batch_size >= 1, got n=0"):
        train_epoch(optimizer, 0, 4, lambda idx: {"loss": w})
    with pytest.raises(ValueError, match="batch_size=0"):
        train_epoch(optimizer, 4, 0, lambda idx: {"loss": w})
    with pytest.raises(ValueError, match="'loss' entry, got keys \\['nll'\\]"):
        train_epoch(optimizer, 4, 2, lambda idx: {"nll": w})


def test_start_training_seeds_moves_and_builds_adam():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).eval()
    device, optimizer = start_training(model, 0.01, seed=7, device=torch.device("cpu"), weight_decay=0.1)
    first = torch.rand(3)
    start_training(model, 0.01, seed=7, device=torch.device("cpu"))
    assert torch.equal(first, torch.rand(3))          # seeded: the draws after set-up repeat
    assert device == torch.device("cpu") and model.training
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 0.1
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    with pytest.raises(ValueError, match="lr must be > 0"):
        start_training(model, 0.0)
