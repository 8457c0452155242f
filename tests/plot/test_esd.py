"""visualize_esd: the Hessian's spectral density on a log scale, its trace and the ESD
metrics, with infty.plot's files and PyHessian's broadening."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from infty_func.curvature import SpectralDensity
from infty_func.plot import esd_curve, visualize_esd
from tests.plot.figures import assert_as_found, assert_pdf, assert_png, probe_model_and_loader, quadratic, read_json, snapshot

DPI = 40
ESD_FIELDS = {
    "lambda_max", "lambda_min", "mean_eigenvalue", "negative_mass", "positive_mass", "right_tail_mass",
    "spectral_entropy", "effective_rank", "mean_trace", "optimizer_name", "task",
}  # fmt: skip


def test_esd_of_a_quadratic_finds_its_extreme_eigenvalues_and_trace(tmp_path):
    hessian, params, loss_fn, _ = quadratic()
    paths = visualize_esd(loss_fn, params, density_iter=6, density_runs=2, trace_probes=64, out=tmp_path, name="q", task=2, dpi=DPI)
    folder = tmp_path / "q"
    assert paths == {
        "trace_path": str(folder / "trace_task2.pt"),
        "esd_path": str(folder / "esd_task2.pt"),
        "plot_path": str(folder / "fig_task2.pdf"),
        "plot_png_path": str(folder / "fig_task2.png"),
        "metrics_path": str(folder / "esd_metrics_task2.json"),
    }
    assert_png(paths["plot_png_path"], 8, 6, DPI)
    assert_pdf(paths["plot_path"])
    metrics = read_json(paths["metrics_path"])
    assert set(metrics) == ESD_FIELDS
    assert (metrics["optimizer_name"], metrics["task"]) == ("q", 2)
    # 6 Lanczos steps on a 6×6 Hessian: the Ritz values are its eigenvalues
    assert metrics["lambda_max"] == pytest.approx(3.0, rel=1e-8) and metrics["lambda_min"] == pytest.approx(-1.0, rel=1e-8)
    trace = torch.load(paths["trace_path"])
    assert abs(trace["mean_trace"] - float(torch.trace(hessian))) <= 4 * trace["standard_error"] + 1e-9
    assert metrics["mean_trace"] == pytest.approx(trace["mean_trace"])
    saved = torch.load(paths["esd_path"])
    assert saved["density_eigen"].shape == saved["density_weight"].shape == (2, 6)


def test_the_curve_is_pyhessians_broadening_normalised_to_unit_area():
    nodes = torch.tensor([[-1.0, 0.5, 2.0], [-0.8, 0.7, 2.2]], dtype=torch.float64)
    weights = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3]], dtype=torch.float64)
    grid, density = esd_curve(SpectralDensity(nodes, weights), points=400)
    low, high = (-1.0 - 0.8) / 2 - 0.01, (2.0 + 2.2) / 2 + 0.01
    assert grid.shape == (400,) and float(grid[0]) == pytest.approx(low) and float(grid[-1]) == pytest.approx(high)
    variance = 1e-5 * max(1.0, high - low)
    expected = torch.zeros(400, dtype=torch.float64)
    for run in range(2):  # the definition, point by point
        for k, x in enumerate(grid.tolist()):
            gauss = torch.exp(-((x - nodes[run]) ** 2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)
            expected[k] += (weights[run] * gauss).sum() / 2
    expected /= expected.sum() * (grid[1] - grid[0])
    torch.testing.assert_close(density, expected)
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0)


def test_a_model_is_left_as_found_and_cached_spectra_are_reused_unless_overwrite(tmp_path):
    model, loader = probe_model_and_loader()
    model.train()
    before = snapshot(model)
    calls = {"count": 0}

    def criterion(logits, targets):
        calls["count"] += 1
        return nn.functional.cross_entropy(logits, targets)

    target = (model, loader, criterion)
    first = visualize_esd(target, density_iter=5, trace_probes=4, out=tmp_path, dpi=DPI)
    assert_as_found(model, before)
    assert read_json(first["metrics_path"]).keys() == ESD_FIELDS
    stamps = {key: os.stat(first[key]).st_mtime_ns for key in ("trace_path", "esd_path")}
    count = calls["count"]
    again = visualize_esd(target, density_iter=5, trace_probes=4, out=tmp_path, dpi=DPI)
    assert calls["count"] == count  # no Hessian product at all
    assert {key: os.stat(first[key]).st_mtime_ns for key in stamps} == stamps
    assert read_json(again["metrics_path"]) == read_json(first["metrics_path"])
    visualize_esd(target, density_iter=5, trace_probes=4, out=tmp_path, dpi=DPI, overwrite=True)
    assert calls["count"] > count
    assert_as_found(model, before)


def test_bad_input_is_a_clear_error(tmp_path):
    model, _ = probe_model_and_loader()
    _, params, loss_fn, _ = quadratic()
    with pytest.raises(ValueError, match="empty"):
        visualize_esd((model, [], nn.functional.cross_entropy), out=tmp_path)
    with pytest.raises(ValueError, match="density_iter must be a positive integer"):
        visualize_esd(loss_fn, params, density_iter=0, out=tmp_path)
    with pytest.raises(ValueError, match="trace_probes must be a positive integer"):
        visualize_esd(loss_fn, params, trace_probes=-3, out=tmp_path)
    with pytest.raises(ValueError, match="plain folder name"):
        visualize_esd(loss_fn, params, name="../elsewhere", out=tmp_path)
