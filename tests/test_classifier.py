import pytest
import torch

from dgmcourse import classifier
from dgmcourse.classifier import MNISTClassifier, load_classifier, predict_proba, train_classifier
from dgmcourse.data import load_mnist


@pytest.fixture(scope="module")
def mnist():
    torch.set_num_threads(1)
    return load_mnist("train", source="embedded"), load_mnist("test", source="embedded")


def test_shapes_and_probabilities():
    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, classifier.FEATURE_DIM)
    p = predict_proba(model, x, batch_size=2)
    assert p.shape == (5, 10)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    torch.testing.assert_close(p, torch.softmax(model(x), 1).detach())


def test_bad_input_raises():
    model = MNISTClassifier()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_proba(model, torch.full((2, 1, 28, 28), -1.0))
    with pytest.raises(ValueError, match="shape"):
        predict_proba(model, torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="y must"):
        train_classifier(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 10]))


def test_training_on_a_subset_learns(mnist):
    (x, y), (xt, yt) = mnist
    model = train_classifier(x[:1000], y[:1000], epochs=3, device=torch.device("cpu"), progress=False)
    assert not model.training
    accuracy = (predict_proba(model, xt).argmax(1) == yt).float().mean()
    assert accuracy > 0.8


def test_load_classifier_trains_once_and_caches(tmp_path, monkeypatch, mnist):
    (x, y), _ = mnist
    monkeypatch.setenv("DGMCOURSE_DATA", str(tmp_path))
    calls = []

    def quick(xs, ys, **kw):
        calls.append(len(xs))
        return train_classifier(xs[:128], ys[:128], epochs=1, progress=False, device=torch.device("cpu"))

    monkeypatch.setattr(classifier, "train_classifier", quick)
    first = load_classifier(device=torch.device("cpu"))
    assert (tmp_path / "mnist_classifier.pt").exists() and calls == [4000]
    second = load_classifier(device=torch.device("cpu"))
    assert calls == [4000] and not second.training
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b)
    (tmp_path / "mnist_classifier.pt").write_bytes(b"corrupt")
    load_classifier(device=torch.device("cpu"))
    assert calls == [4000, 4000]
