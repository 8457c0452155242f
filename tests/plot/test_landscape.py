"""visualize_landscape: the loss on a plane through the parameters, evaluated in vmapped
chunks, with infty.plot's files and metrics."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from infty_func.core.tree import tree_map
from infty_func.curvature import DatasetObjective, as_objective
from infty_func.plot import filter_normalized_directions, loss_surface, visualize_landscape
from infty_func.plot.metrics import LANDSCAPE_FIELDS
from tests.plot.figures import assert_as_found, assert_pdf, assert_png, probe_model_and_loader, quadratic, read_json, snapshot

DPI = 40


def test_hessian_landscape_of_a_quadratic_reports_its_top_eigenvalues_and_curvature(tmp_path):
    hessian, params, loss_fn, _ = quadratic()
    paths = visualize_landscape(loss_fn, params, limit=0.4, samples=5, out=tmp_path, name="quad", task=3, dpi=DPI)
    folder = tmp_path / "quad"
    assert paths == {
        "eigen_path": str(folder / "eigen_task3.pt"),
        "loss_path": str(folder / "loss_list_task3.pt"),
        "plot_path": str(folder / "loss_surface_task3.pdf"),
        "plot_png_path": str(folder / "loss_surface_task3.png"),
        "metrics_path": str(folder / "landscape_metrics_task3.json"),
    }
    assert_png(paths["plot_png_path"], 12, 5, DPI)
    assert_pdf(paths["plot_path"])
    metrics = read_json(paths["metrics_path"])
    assert set(metrics) == {*LANDSCAPE_FIELDS, "directions", "optimizer_name", "task"}
    assert (metrics["directions"], metrics["optimizer_name"], metrics["task"]) == ("hessian", "quad", 3)
    assert metrics["lambda1"] == pytest.approx(3.0, rel=1e-6) and metrics["lambda2"] == pytest.approx(2.0, rel=1e-6)
    # along unit eigenvectors a quadratic's second differences are exact: λ₁ + λ₂
    assert metrics["center_fd_trace_2d"] == pytest.approx(5.0, rel=1e-6)
    z0 = float(loss_fn(params))
    assert metrics["loss_center"] == pytest.approx(z0)
    grid = torch.load(paths["loss_path"])
    z = grid["losses"]
    assert z.shape == (5, 5) and torch.allclose(grid["alphas"], torch.linspace(-0.4, 0.4, 5, dtype=torch.float64))
    assert metrics["r0_sharpness"] == pytest.approx(float(z.max()) - z0)
    assert metrics["relative_r0_sharpness"] == pytest.approx((float(z.max()) - z0) / abs(z0))
    assert metrics["basin_fraction_tau_0.1"] == pytest.approx(float((z <= z0 + 0.1).double().mean()))


def test_the_surface_equals_the_loss_at_each_grid_point_and_takes_one_vmapped_call_per_chunk():
    _, params, loss_fn, calls = quadratic()
    directions = filter_normalized_directions(params, seed=3).vectors
    alphas, betas = torch.linspace(-1, 1, 5, dtype=torch.float64), torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    surface = loss_surface(as_objective(loss_fn), params, directions, alphas, betas, chunk=7)
    assert calls["count"] == math.ceil(20 / 7)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = tree_map(lambda p, u, v: p + a * u + b * v, params, *directions)
            assert float(surface[i, j]) == pytest.approx(float(loss_fn(point)), rel=1e-12)


def test_a_dataset_surface_is_the_size_weighted_mean_over_batches():
    _, params, loss_fn, _ = quadratic()
    batches = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)]
    objective = DatasetObjective(lambda p, batch: batch.mean() * loss_fn(p), batches)
    directions = filter_normalized_directions(params).vectors
    grid = torch.linspace(-0.3, 0.3, 3, dtype=torch.float64)
    weighted = loss_surface(objective, params, directions, grid, grid, chunk=4)
    plain = loss_surface(as_objective(loss_fn), params, directions, grid, grid)
    torch.testing.assert_close(weighted, plain * (1.5 * 2 + 3.0) / 3)


def test_a_dataset_surface_over_no_batches_is_refused():
    _, params, loss_fn, _ = quadratic()
    objective = DatasetObjective(lambda p, batch: loss_fn(p), [])
    grid = torch.linspace(-0.3, 0.3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="the batches are empty"):
        loss_surface(objective, params, filter_normalized_directions(params).vectors, grid, grid)


def test_random_directions_are_filter_normalised_and_zero_on_one_dimensional_params():
    params = {"conv": torch.randn(4, 3, 2, 2, dtype=torch.float64), "bias": torch.randn(4, dtype=torch.float64)}
    first, second = filter_normalized_directions(params, seed=5).vectors
    for direction in (first, second):
        torch.testing.assert_close(direction["conv"].flatten(1).norm(dim=1), params["conv"].flatten(1).norm(dim=1))
        assert torch.equal(direction["bias"], torch.zeros(4, dtype=torch.float64))
    assert not torch.allclose(first["conv"], second["conv"])
    again = filter_normalized_directions(params, seed=5).vectors
    assert torch.equal(again[0]["conv"], first["conv"])  # a pure function of the seed


def test_a_model_and_loader_are_left_exactly_as_found_even_after_an_error(tmp_path):
    model, loader = probe_model_and_loader()
    model.train()
    model.body[3].eval()  # mixed modes must come back as they were
    before = snapshot(model)
    paths = visualize_landscape((model, loader, nn.functional.cross_entropy), samples=3, out=tmp_path, dpi=DPI)
    assert_as_found(model, before)
    model.eval()
    with torch.no_grad():
        expected = sum(nn.functional.cross_entropy(model(x), y) * len(y) for x, y in loader) / sum(len(y) for _, y in loader)
    model.train()
    model.body[3].eval()
    assert read_json(paths["metrics_path"])["loss_center"] == pytest.approx(float(expected), rel=1e-10)

    def failing(logits, targets):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        visualize_landscape((model, loader, failing), samples=3, out=tmp_path, name="fails", directions="random")
    assert_as_found(model, before)


def test_cached_directions_and_losses_are_reused_unless_overwrite(tmp_path):
    _, params, loss_fn, calls = quadratic()
    first = visualize_landscape(loss_fn, params, samples=3, out=tmp_path, dpi=DPI)
    stamps = {key: os.stat(first[key]).st_mtime_ns for key in ("eigen_path", "loss_path")}
    count = calls["count"]
    visualize_landscape(loss_fn, params, samples=3, out=tmp_path, dpi=DPI)
    assert calls["count"] == count  # neither Hessian products nor losses
    assert {key: os.stat(first[key]).st_mtime_ns for key in stamps} == stamps
    visualize_landscape(loss_fn, params, samples=3, out=tmp_path, dpi=DPI, overwrite=True)
    assert calls["count"] > count
    with pytest.raises(ValueError, match="other limit/samples.*overwrite=True"):
        visualize_landscape(loss_fn, params, samples=5, out=tmp_path, dpi=DPI)
    with pytest.raises(ValueError, match="holds 'hessian' directions, not 'random'"):
        visualize_landscape(loss_fn, params, samples=3, out=tmp_path, directions="random")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0.0}, "limit must be > 0"),
        ({"limit": -1.0}, "limit must be > 0"),
        ({"directions": "pca"}, "unknown direction kind 'pca'"),
        ({"samples": 1}, "samples must be an integer >= 2"),
        ({"dpi": 3}, "dpi must be an integer >= 10"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, kwargs, message):
    _, params, loss_fn, calls = quadratic()
    with pytest.raises(ValueError, match=message):
        visualize_landscape(loss_fn, params, out=tmp_path, **kwargs)
    assert calls["count"] == 0


def test_bad_targets_are_clear_errors(tmp_path):
    model, _ = probe_model_and_loader()
    with pytest.raises(ValueError, match="empty"):
        visualize_landscape((model, [], nn.functional.cross_entropy), out=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        visualize_landscape((model, [], nn.functional.cross_entropy), out=tmp_path, name="r", directions="random")
    with pytest.raises(ValueError, match="at least 2 parameters"):
        visualize_landscape(lambda p: (p["x"] ** 2).sum(), {"x": torch.ones(1, dtype=torch.float64)}, out=tmp_path)
    with pytest.raises(ValueError, match="pass params"):
        visualize_landscape(lambda p: p, out=tmp_path)
    with pytest.raises(ValueError, match=r"\(model, loader, criterion\)"):
        visualize_landscape((model, []), out=tmp_path)
