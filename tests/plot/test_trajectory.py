"""visualize_trajectory: optimizer paths on infty.plot's two-objective toy problem, with
the contour of the summed loss and the numerically found Pareto set."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad

import infty_func as ifn
from infty_func.plot import pareto_set, run_trajectory, two_objective_toy, visualize_trajectory
from tests.plot.figures import assert_pdf, assert_png, read_json

DPI = 40


def test_the_toy_matches_infty_plots_problem():
    toy = pytest.importorskip("infty.plot.trajectory.toy_problem")
    points = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 6
    torch.testing.assert_close(two_objective_toy(points), toy.Toy().batch_forward(points))
    start = torch.tensor(toy.DEFAULT_INIT, dtype=torch.float64)
    torch.testing.assert_close(two_objective_toy(start), toy.Toy()(start).to(torch.float64))


def test_the_pareto_set_runs_between_the_two_minimisers_and_no_lattice_point_dominates_it():
    front = pareto_set(weights=17)
    f2_min, f1_min = front[0], front[-1]  # weight 0 minimises f2, weight 1 minimises f1
    for point, which in ((f1_min, 0), (f2_min, 1)):
        gradient = grad(lambda x: two_objective_toy(x)[which])(point)
        assert gradient.abs().max() < 1e-8
    assert float(f1_min[0]) == pytest.approx(7.0, abs=1e-6) and float(f2_min[0]) == pytest.approx(-7.0, abs=1e-6)
    axis = torch.linspace(-11, 11, 121, dtype=torch.float64)
    lattice = two_objective_toy(torch.cartesian_prod(axis, axis))
    values = two_objective_toy(front)
    dominated = ((lattice[:, None, :] <= values[None] - 1e-9).all(-1)).any(0)
    assert not dominated.any()


def test_several_methods_on_one_figure_with_a_json_of_final_points(tmp_path):
    paths = visualize_trajectory(["sgd", "zo_sgd", "pcgrad"], n_iter=15, out=tmp_path, grid_size=60, dpi=DPI)
    stem = tmp_path / "traj_sgd_zo-sgd_pcgrad"
    assert paths == {
        "trajectory_path": f"{stem}.pt",
        "plot_path": f"{stem}.pdf",
        "plot_png_path": f"{stem}.png",
        "metrics_path": f"{stem}.json",
    }
    assert_png(paths["plot_png_path"], 8, 6, DPI)
    assert_pdf(paths["plot_path"])
    record = read_json(paths["metrics_path"])
    assert record["problem"] == "two_objective_toy" and record["init"] == [-8.5, 5.0] and record["n_iter"] == 15
    assert set(record["methods"]) == {"sgd", "zo_sgd", "pcgrad"}
    forms = {name: entry["loss_form"] for name, entry in record["methods"].items()}
    assert forms == {"sgd": "sum", "zo_sgd": "sum", "pcgrad": "stacked"}
    saved = torch.load(paths["trajectory_path"])
    for name, entry in record["methods"].items():
        assert saved[name].shape == (16, 2)
        assert entry["final_point"] == saved[name][-1].tolist()
        losses = two_objective_toy(saved[name][-1])
        assert entry["final_losses"] == pytest.approx(losses.tolist())
        assert entry["final_total"] == pytest.approx(float(losses.sum()))
        assert entry["distance_to_pareto_set"] >= 0


def test_a_given_transform_follows_exactly_the_steps_of_ifn_step():
    transform = ifn.adam(0.05)
    start = torch.tensor([-8.5, 5.0], dtype=torch.float64)
    path, form = run_trajectory(transform, two_objective_toy, start, 5)
    assert form == "sum"
    point, state = start, transform.init(start)
    for index in range(1, 6):
        point, state, _ = ifn.step(transform, state, point, lambda x: two_objective_toy(x).sum())
        torch.testing.assert_close(path[index], point)


def test_gradient_descent_on_the_sum_approaches_the_middle_of_the_pareto_set(tmp_path):
    paths = visualize_trajectory({"gd": ifn.sgd(0.5)}, n_iter=200, out=tmp_path, grid_size=40, dpi=DPI)
    entry = read_json(paths["metrics_path"])["methods"]["gd"]
    assert entry["distance_to_pareto_set"] < 0.02 and abs(entry["final_point"][0]) < 1e-6


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown methods \\['lbfgs'\\]"):
        visualize_trajectory(["sgd", "lbfgs"], out=tmp_path)
    with pytest.raises(ValueError, match="unknown problem 'rosenbrock'"):
        visualize_trajectory(["sgd"], problem="rosenbrock", out=tmp_path)
    with pytest.raises(ValueError, match="n_iter must be a positive integer"):
        visualize_trajectory(["sgd"], n_iter=0, out=tmp_path)
    with pytest.raises(ValueError, match="'mine' is a function, not a GradientTransformation"):
        visualize_trajectory({"mine": ifn.sgd}, out=tmp_path)
    with pytest.raises(ValueError, match="init must be a point"):
        visualize_trajectory(["sgd"], init=(1.0, 2.0, 3.0), out=tmp_path)
