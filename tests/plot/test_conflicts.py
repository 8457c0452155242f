"""visualize_conflicts: cosine-similarity curves from an optimizer's sim_list, from
aggregator diagnostics (before and after), from INFTY's records, or from numbers."""

from __future__ import annotations

import random

import pytest
import torch

import infty_func as ifn
from infty_func.plot import similarity_curves, visualize_conflicts
from infty_func.plot.metrics import CONFLICT_FIELDS
from tests.adapter_runs import infty_two_task_run
from tests.conftest import make_batches, make_mlp
from tests.plot.figures import assert_pdf, assert_png, read_json

DPI = 40


def two_losses(anchor):
    return lambda p: torch.stack([((p["w"] - anchor) ** 2).sum(), ((p["w"] + 0.5 * anchor.flip(0)) ** 2).sum()])


def pcgrad_states(steps=12):
    transform = ifn.chain(ifn.pcgrad(seed=0), ifn.sgd(0.05))
    params = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)}
    loss_fn = two_losses(torch.tensor([0.3, 1.0, -1.0], dtype=torch.float64))
    state, states = transform.init(params), []
    for _ in range(steps):
        params, state, _ = ifn.step(transform, state, params, loss_fn)
        states.append(state)
    return states


def test_an_infty_optimizers_sim_list_gives_the_before_curve(tmp_path):
    random.seed(0)
    model = make_mlp()
    opt = ifn.optim.PCGrad(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model, args={})
    batches = make_batches(8, seed=3)
    infty_two_task_run(opt, model, batches)
    paths = visualize_conflicts(opt, task=1, out=tmp_path, dpi=DPI)
    folder = tmp_path / "pcgrad"  # the optimizer's name, as INFTY names its folders
    assert paths == {
        "sim_path": str(folder / "sim_list_task1.pt"),
        "plot_path": str(folder / "similarity_task1.pdf"),
        "plot_png_path": str(folder / "similarity_task1.png"),
        "metrics_path": str(folder / "conflicts_metrics_task1.json"),
    }
    assert_png(paths["plot_png_path"], 10, 5, DPI)
    assert_pdf(paths["plot_path"])
    metrics = read_json(paths["metrics_path"])
    assert set(metrics) == {*CONFLICT_FIELDS, "optimizer_name", "task"}
    sims = torch.tensor(opt.sim_list, dtype=torch.float64)
    assert metrics["count"] == 4 and metrics["mean"] == pytest.approx(float(sims.mean()))
    assert metrics["min"] == pytest.approx(float(sims.min())) and metrics["max"] == pytest.approx(float(sims.max()))
    assert metrics["fraction_negative"] == pytest.approx(float((sims < 0).double().mean()))
    assert all(metrics[f"after_{key}"] is None for key in ("count", "mean", "min", "max", "fraction_negative"))
    assert torch.equal(torch.load(paths["sim_path"])["before"], sims)


def test_transform_states_give_before_and_after_curves_from_their_diagnostics(tmp_path):
    states = pcgrad_states()
    before, after = similarity_curves(states)
    cosines = torch.stack([state[0].diagnostics.cosine[0, 1] for state in states])
    worst = torch.stack([state[0].diagnostics.update_cosine.min() for state in states])
    torch.testing.assert_close(before, cosines)
    torch.testing.assert_close(after, worst)
    assert (after >= -1e-9).all()  # PCGrad's update never opposes a gradient (two objectives)
    # the same curves from diagnostics stacked over steps (e.g. collected under a scan)
    stacked = ifn.multiobjective.ConflictDiagnostics(*(torch.stack(f) for f in zip(*[s[0].diagnostics for s in states])))
    torch.testing.assert_close(similarity_curves(stacked)[0], before)
    paths = visualize_conflicts(states, out=tmp_path, name="pcgrad_states", dpi=DPI)
    metrics = read_json(paths["metrics_path"])
    assert metrics["after_count"] == 12 and metrics["after_min"] == pytest.approx(float(worst.min()))
    assert_png(paths["plot_png_path"], 10, 5, DPI)


def test_a_vanishing_update_counts_as_no_conflict_after_aggregation():
    # exactly opposed gradients: PCGrad's update is zero up to rounding, and the raw
    # diagnostics' cos(g_i, d) is rounding error over a clamped zero norm
    transform = ifn.pcgrad(seed=0)
    anchor = torch.tensor([-0.7830641027703554, 1.0621710284337496, -0.2613142149611394], dtype=torch.float64)
    params = {"w": -0.20580017566680908 * anchor}
    opposed = lambda p: torch.stack([((p["w"] - anchor) ** 2).sum(), ((p["w"] + anchor) ** 2).sum()])
    _, state, _ = ifn.step(transform, transform.init(params), params, opposed)
    before, after = similarity_curves([state])
    assert float(before[0]) == pytest.approx(-1.0)
    assert float(after[0]) == 0.0


def test_records_and_plain_numbers_are_accepted(tmp_path):
    records = [{"cos_before": -0.2, "cos_after": 0.1}, {"cos_before": 0.4, "cos_after": 0.4}]
    before, after = similarity_curves(records)
    assert before.tolist() == [-0.2, 0.4] and after.tolist() == [0.1, 0.4]
    assert similarity_curves([{"cos_before": 0.3}])[1] is None
    before, after = similarity_curves(torch.tensor([0.5, -0.5]))
    assert before.tolist() == [0.5, -0.5] and after is None
    paths = visualize_conflicts([0.1, -0.3, 0.2], out=tmp_path, dpi=DPI)
    metrics = read_json(paths["metrics_path"])
    assert metrics["optimizer_name"] == "custom" and metrics["fraction_negative"] == pytest.approx(1 / 3)


def test_empty_or_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no similarity values"):
        visualize_conflicts([], out=tmp_path)
    with pytest.raises(ValueError, match="needs an optimizer with sim_list"):
        visualize_conflicts(object(), out=tmp_path)
    with pytest.raises(ValueError, match="at least 2 objectives"):
        similarity_curves([ifn.multiobjective.ConflictDiagnostics(*(torch.zeros(s) for s in ((1, 1), (1,), (1,), (1,), ())))])
