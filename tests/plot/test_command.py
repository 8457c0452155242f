"""``python -m infty_func plot ...`` trains the demo MLP briefly and writes the pictures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the demo's data ship with scikit-learn (the 'examples' extra)")

from infty_func.__main__ import main  # noqa: E402
from tests.plot.figures import assert_png, read_json  # noqa: E402


def test_plot_landscape_esd_and_trajectory_end_to_end(tmp_path, capsys):
    out = str(tmp_path)
    common = ["--out", out, "--task", "1", "--epochs", "1", "--hidden", "16", "--dpi", "30"]
    assert main(["plot", "landscape", *common, "--samples", "3", "--limit", "0.2"]) == 0
    assert main(["plot", "esd", *common, "--density-iter", "8", "--trace-probes", "4"]) == 0
    assert (
        main(["plot", "trajectory", "--out", out, "--iters", "5", "--methods", "sgd,mgda", "--grid-size", "30", "--dpi", "30"]) == 0
    )
    folder = tmp_path / "sgd_momentum"
    assert_png(str(folder / "loss_surface_task1.png"), 12, 5, 30)
    assert_png(str(folder / "fig_task1.png"), 8, 6, 30)
    assert_png(str(tmp_path / "traj_sgd_mgda.png"), 8, 6, 30)
    assert read_json(str(folder / "landscape_metrics_task1.json"))["task"] == 1
    assert read_json(str(folder / "esd_metrics_task1.json"))["optimizer_name"] == "sgd_momentum"
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    for line in printed.splitlines():
        if line.startswith("wrote "):
            assert Path(line[len("wrote ") :]).exists()


def test_multi_objective_methods_and_unknown_tasks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--method must be one of"):
        main(["plot", "esd", "--out", str(tmp_path), "--method", "pcgrad"])
    with pytest.raises(ValueError, match="--task must be in 0..4"):
        main(["plot", "landscape", "--out", str(tmp_path), "--task", "7"])
