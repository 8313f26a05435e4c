"""dgmcourse.plotting: what a reader sees in the training curves."""

import matplotlib.pyplot as plt
import pytest

from dgmcourse.plotting import plot_history


def test_plot_history_draws_a_one_epoch_run_as_a_visible_point_at_epoch_1():
    ax = plot_history({"train_elbo": [-120.5], "test_elbo": [-121.0], "empty": []})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train_elbo", "test_elbo"]
    assert list(lines[0].get_xdata()) == [1] and list(lines[0].get_ydata()) == [-120.5]
    assert lines[0].get_marker() == "o"
    ax.figure.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(ax.figure)


def test_plot_history_long_runs_have_no_markers_and_epochs_from_1():
    ax = plot_history({"loss": list(range(40))})
    line = ax.get_lines()[0]
    assert line.get_marker() == "None" and line.get_xdata()[0] == 1 and line.get_xdata()[-1] == 40
    plt.close(ax.figure)


def test_plot_history_names_a_missing_key():
    with pytest.raises(ValueError, match="keys \\['kl'\\] are not in history"):
        plot_history({"loss": [1.0]}, keys=["kl"])


def test_plot_history_labels_and_a_second_shorter_run_on_the_same_axes():
    ax = plot_history({"test_recon": [9.0, 8.0, 7.0, 6.0]}, labels={"test_recon": "linear AE"})
    plot_history({"test_recon": [5.0, 4.0]}, ax=ax, labels={"test_recon": "non-linear AE"})
    assert [line.get_label() for line in ax.get_lines()] == ["linear AE", "non-linear AE"]
    assert ax.get_xlim() == (0.5, 4.5)      # the second call keeps the first run's four epochs in view
    plt.close(ax.figure)
