"""The model zoo (benchmarks/model_zoo.py -> benchmarks/reports/model_zoo.json): every family the course trains is in
the report, measured on independent seeds; the table and the precision-recall plot render what the report holds.

"A family the course trains" is read from the library: every public ``train_*`` function of ``dgmcourse`` either
trains a family of the table (``FAMILY_OF``) or is listed in ``NOT_A_FAMILY`` with the reason. A new trainer fails
``test_every_library_trainer_is_a_family_or_excused`` until it is placed; a family missing from the report fails
``test_the_report_holds_every_family_on_independent_seeds``.
"""

import ast
import json
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from dgmcourse.reports import model_zoo_table, plot_precision_recall  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "reports" / "model_zoo.json"

# library trainer (or, for WGAN-GP, the loss it is built from) -> the table's row(s)
FAMILY_OF = {
    "vae.train_vae": ("VAE (IWAE bound)",),
    "gan.train_dcgan": ("DCGAN",),
    "gan.gradient_penalty": ("WGAN-GP",),
    "autoregressive.train_pixelcnn": ("PixelCNN",),
    "flows.train_dequantized_flow": ("RealNVP",),
    "diffusion.train_epsilon_model": ("pixel DDPM", "latent diffusion"),
    "flow_matching.train_cfm": ("flow matching",),
    "ebm.train_ebm": ("EBM",),
    "transformer.train_autoregressive": ("pixel transformer", "VQ-VAE + transformer"),
    "vq.train_vqvae": ("VQ-VAE + transformer", "masked diffusion"),
    "masked_diffusion.train_masked_diffusion": ("masked diffusion",),
}
NOT_A_FAMILY = {
    "autoencoders.train_autoencoder": "a deterministic auto-encoder: no samples (lecture 0)",
    "class_radius.train_omega_vae": "a VAE variant for the class-radius experiment (lecture 7), a VAE row",
    "classifier.train_classifier": "the course classifier that scores the samples",
    "discrete.train_bernoulli_vae": "a VAE with discrete latents (gradient estimators), a VAE row",
    "flows.train_flow": "maximum likelihood on continuous data; train_dequantized_flow calls it",
    "gan.train_toy_gan": "GANs on the 2-D toy mixtures (lectures 2-4), not on digits",
    "geometry.train_vae_with_jacobian_penalty": "a VAE with a smoothness penalty (lecture 6), a VAE row",
    "guidance.train_conditional_cfm": "conditional flow matching: the flow-matching row's guided variant",
    "ssvae.train_m2": "the semi-supervised VAE (lecture 8): a classifier's training, a VAE row",
    "ssvae.train_labels_only": "the labels-only baseline classifier of lecture 8",
    "training.train_epoch": "one epoch of any model, a helper",
}
COLUMNS = ("frechet", "precision", "recall", "density", "coverage", "memorisation_rate", "train_cpu_s",
           "samples_per_cpu_s")


def _library_trainers() -> set[str]:
    names = set()
    for path in sorted((ROOT / "dgmcourse").glob("*.py")):
        tree = ast.parse(path.read_text())
        names |= {f"{path.stem}.{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("train_")}
    return names


def test_every_library_trainer_is_a_family_or_excused():
    trainers = _library_trainers()
    unplaced = trainers - set(FAMILY_OF) - set(NOT_A_FAMILY)
    assert not unplaced, (f"{sorted(unplaced)} train a model the table does not list: add a row to "
                          "benchmarks/model_zoo.py and FAMILY_OF here, or a reason to NOT_A_FAMILY")
    stale = (set(FAMILY_OF) | set(NOT_A_FAMILY)) - trainers - {"gan.gradient_penalty"}
    assert not stale, f"{sorted(stale)} are no longer in dgmcourse"


def test_the_report_holds_every_family_on_independent_seeds():
    report = json.loads(REPORT.read_text())
    families = {family for rows in FAMILY_OF.values() for family in rows}
    assert not report["smoke"]
    missing = families - set(report["table"])
    assert not missing, f"benchmarks/reports/model_zoo.json lacks {sorted(missing)}: run benchmarks/model_zoo.py"
    assert len(report["seeds"]) >= 3 and not set(report["seeds"]) & set(report["tuned_on_seeds"])
    assert report["n_samples"] == 1000 and report["n_train"] == 4000
    for family in families:
        row = report["table"][family]
        assert sorted(row["seeds"]) == sorted(report["seeds"]), family
        for key in COLUMNS:
            assert row[key]["min"] <= row[key]["mean"] <= row[key]["max"], (family, key)
        runs = [r for r in report["runs"] if r["family"] == family]
        assert len(runs) == len(report["seeds"])
        assert row["frechet"]["mean"] == pytest.approx(sum(r["frechet"] for r in runs) / len(runs))
    exact = {f for f, row in report["table"].items() if row.get("bits_per_dim_kind") == "exact"}
    assert exact == {"PixelCNN", "pixel transformer"}       # the families with a tractable likelihood of pixels


def _report(precision=(0.5, 0.7), recall=(0.2, 0.4)) -> dict:
    def stats(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        return {"mean": mean, "std": std, "min": min(values), "max": max(values)}

    row = {key: stats((1.0, 3.0)) for key in COLUMNS}
    table = {"A": {**row, "data": "binary 14x14", "bits_per_dim_kind": "exact", "bits_per_dim": stats((0.2, 0.3)),
                   "precision": stats(precision), "recall": stats(recall)},
             "B": {**row, "data": "grey 28x28", "bits_per_dim_kind": None}}
    return {"table": table, "seeds": [100, 101], "budget_cpu_s": 60.0,
            "real_digits": {key: 0.5 for key in COLUMNS[:6]}}


def test_model_zoo_table_prints_mean_and_spread_of_each_family():
    lines = model_zoo_table(_report()).splitlines()
    assert lines[0].startswith("| family | data | bits/dim | Fréchet | precision | recall |")
    assert lines[2] == ("| A | binary 14x14 | 0.250 ± 0.050 (exact) | 2.0 ± 1.0 | 0.60 ± 0.10 | 0.30 ± 0.10 | "
                        "2.00 ± 1.00 | 2.00 ± 1.00 | 2.000 ± 1.000 | 2 ± 1 | 2 ± 1 |")
    assert lines[3].startswith("| B | grey 28x28 | – | 2.0 ± 1.0 |")
    assert lines[4].startswith("| real digits (1,000 training digits) | binary 28x28 | – | 0.5 | 0.50 |")
    assert lines[4].endswith("| – | – |") and len(lines) == 5


@pytest.mark.parametrize("bad", [{}, {"table": {}}, {"table": []}, [1, 2]])
def test_model_zoo_table_and_plot_reject_what_is_not_a_model_zoo_report(bad):
    with pytest.raises(ValueError, match=re.escape("model-zoo report")):
        model_zoo_table(bad)
    with pytest.raises(ValueError, match=re.escape("model-zoo report")):
        plot_precision_recall(bad)


def test_plot_precision_recall_puts_each_family_at_its_mean_with_its_spread():
    ax = plot_precision_recall(_report())
    points = {text.get_text(): text.xy for text in ax.texts}
    assert points == {"A": pytest.approx((0.3, 0.6)), "B": pytest.approx((2.0, 2.0))}
    bars = ax.containers
    assert len(bars) == 2
    x_err = bars[0].lines[2][0].get_segments()[0]            # the recall bar of A: mean ± std
    assert x_err[:, 0] == pytest.approx([0.2, 0.4])
    assert [line.get_label() for line in ax.lines if line.get_marker() == "*"] == ["real digits"]
