"""Gradient sampling: each aggregate as a formula over the sampled points, torchzero's
numbers with the same perturbations injected, its documented defects pinned, and the
properties every transform keeps."""

from __future__ import annotations

import pytest
import torch

import infty_func as ifn
from tests.adapter_runs import adapter_run, assert_resume_is_bit_identical, functional_trained
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.torchzero_runs import require_torchzero, torchzero_trained
from tests.vmap_loop import assert_vmap_equals_loop


def sampled_points(params, state, samples, distribution="gaussian"):
    """The points the transform evaluates this step, built from its own perturbations."""
    perturbations = ifn.sampling_perturbations(state.key, params, samples, distribution)
    return [{k: params[k] + state.sigma * perturbations[k][i] for k in params} for i in range(samples)]


def values_and_gradients(loss_fn, points):
    pairs = [torch.func.grad_and_value(loss_fn)(p) for p in points]
    return torch.stack([v for _, v in pairs]), [g for g, _ in pairs]


def one_update(tx, params, loss_fn):
    state = tx.init(params)
    grads, value = torch.func.grad_and_value(loss_fn)(params)
    updates, new_state = tx.update(grads, state, params, loss_fn=loss_fn, value=value)
    return updates, state, new_state


@pytest.fixture
def problem():
    model = make_mlp()
    x, y = make_batches(1, seed=4)[0]
    return params_of(model), loss_fn_for(model, x, y)


@pytest.mark.parametrize("include_x0", [True, False])
def test_mean_is_the_average_gradient_over_the_points(problem, include_x0):
    params, loss_fn = problem
    tx = ifn.gradient_sampling(sigma=0.3, n=6, include_x0=include_x0, seed=1)
    updates, state, new_state = one_update(tx, params, loss_fn)
    points = ([params] if include_x0 else []) + sampled_points(params, state, 6 - include_x0)
    values, grads = values_and_gradients(loss_fn, points)
    for k in params:
        torch.testing.assert_close(updates[k], torch.stack([g[k] for g in grads]).mean(0), rtol=0, atol=1e-14)
    torch.testing.assert_close(new_state.value, values.mean(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("aggregate", ["min-norm", "min-value"])
def test_min_norm_and_min_value_pick_one_points_gradient(problem, aggregate):
    params, loss_fn = problem
    tx = ifn.gradient_sampling(sigma=0.5, n=7, aggregate=aggregate, seed=2)
    updates, state, new_state = one_update(tx, params, loss_fn)
    values, grads = values_and_gradients(loss_fn, [params, *sampled_points(params, state, 6)])
    scores = torch.stack([ifn.tree_norm(g) for g in grads]) if aggregate == "min-norm" else values
    best = int(torch.argmin(scores))
    for k in params:
        torch.testing.assert_close(updates[k], grads[best][k], rtol=0, atol=1e-14)
    torch.testing.assert_close(new_state.value, values[best], rtol=0, atol=1e-14)


@pytest.mark.parametrize("aggregate", ["min", "max"])
def test_min_and_max_choose_each_entry_by_magnitude_with_its_own_sign(problem, aggregate):
    params, loss_fn = problem
    tx = ifn.gradient_sampling(sigma=0.5, n=5, aggregate=aggregate, seed=3)
    updates, state, new_state = one_update(tx, params, loss_fn)
    values, grads = values_and_gradients(loss_fn, [params, *sampled_points(params, state, 4)])
    choose = torch.argmin if aggregate == "min" else torch.argmax
    for k in params:
        stacked = torch.stack([g[k] for g in grads])
        expected = stacked.gather(0, choose(stacked.abs(), dim=0, keepdim=True)).squeeze(0)
        torch.testing.assert_close(updates[k], expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(new_state.value, values.min() if aggregate == "min" else values.max(), rtol=0, atol=1e-14)


def test_non_finite_points_are_dropped_and_all_non_finite_gives_inf():
    def loss_fn(params):
        x = params["x"]
        return torch.where(x[0] > 0.5, torch.inf, 0.5 * (x**2).sum())

    params = {"x": torch.tensor([0.2, -1.0, 0.3], dtype=torch.float64)}
    tx = ifn.gradient_sampling(sigma=0.4, n=9, seed=5)
    updates, state, new_state = one_update(tx, params, loss_fn)
    points = [params, *sampled_points(params, state, 8)]
    kept = [p["x"] for p in points if float(p["x"][0]) <= 0.5]
    assert 1 < len(kept) < 9  # the seed gives both kinds
    torch.testing.assert_close(updates["x"], torch.stack(kept).mean(0), rtol=0, atol=1e-14)
    assert torch.isfinite(new_state.value)

    far = {"x": torch.tensor([50.0, 0.0, 0.0], dtype=torch.float64)}
    updates, _, new_state = one_update(tx, far, loss_fn)
    assert torch.isinf(updates["x"]).all() and torch.isinf(new_state.value)


def test_perturbations_are_fixed_by_default_and_fresh_each_step_otherwise(problem):
    params, loss_fn = problem
    for fixed in (True, False):
        tx = ifn.gradient_sampling(n=4, fixed=fixed, seed=7)
        state = tx.init(params)
        first = ifn.step(tx, state, params, loss_fn)[1]
        second = ifn.step(tx, first, params, loss_fn)[1]
        assert torch.equal(first.key, state.key) is fixed
        assert torch.equal(second.key, first.key) is fixed


def test_the_same_seed_gives_the_same_bits_and_another_seed_other_noise(problem):
    params, loss_fn = problem
    runs = {}
    for seed in (0, 0, 1):
        tx = ifn.gradient_sampling(n=4, fixed=False, seed=seed)
        p, s = params, tx.init(params)
        for _ in range(3):
            p, s, _ = ifn.step(tx, s, p, loss_fn)
        runs.setdefault(seed, []).append(p)
    assert all(torch.equal(runs[0][0][k], runs[0][1][k]) for k in params)
    assert not torch.equal(runs[0][0]["0.weight"], runs[1][0]["0.weight"])


def test_all_perturbed_gradients_come_from_one_vmapped_call(problem):
    params, loss_fn = problem
    calls = []

    def counting(p):
        calls.append(1)
        return loss_fn(p)

    tx = ifn.gradient_sampling(n=16, seed=1)
    value, grads = ifn.value_and_grad(loss_fn)(params)
    tx.update(grads, tx.init(params), params, loss_fn=counting, value=value)
    assert len(calls) == 1
    chunked = ifn.gradient_sampling(n=16, seed=1, chunk_size=5)
    whole, _ = tx.update(grads, tx.init(params), params, loss_fn=loss_fn, value=value)
    parts, _ = chunked.update(grads, chunked.init(params), params, loss_fn=loss_fn, value=value)
    for k in params:
        torch.testing.assert_close(parts[k], whole[k], rtol=0, atol=1e-15)


def test_gaussian_mean_is_the_gradient_of_the_smoothed_quadratic():
    # f(x) = ½ xᵀ D x: E f(x + σp) has gradient D x, so the mean of many samples is near it.
    scales = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    loss_fn = lambda p: 0.5 * (scales * p["x"] ** 2).sum()  # noqa: E731
    params = {"x": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)}
    tx = ifn.gradient_sampling(sigma=0.7, n=4000, include_x0=False, seed=11)
    updates, _ = tx.update(None, tx.init(params), params, loss_fn=loss_fn)
    standard_error = scales * 0.7 / 4000**0.5
    assert ((updates["x"] - scales * params["x"]).abs() < 4 * standard_error).all()


@pytest.mark.parametrize(("strategy", "expected"), [("value", 2 / 3), ("grad-norm", 2 / 3)])
def test_sigma_shrinks_at_the_minimum_of_a_convex_function(strategy, expected):
    loss_fn = lambda p: (p["x"] ** 2).sum() + (p["x"] ** 4).sum()  # noqa: E731
    params = {"x": torch.zeros(4, dtype=torch.float64)}
    tx = ifn.gradient_sampling(sigma=0.5, n=6, sigma_strategy=strategy, seed=0)
    _, _, new_state = one_update(tx, params, loss_fn)
    torch.testing.assert_close(new_state.sigma, torch.tensor(0.5 * expected, dtype=torch.float64))


def test_sigma_grows_when_enough_points_improve():
    loss_fn = lambda p: -(p["x"] ** 2).sum()  # noqa: E731 (concave: every perturbation lowers it)
    params = {"x": torch.zeros(4, dtype=torch.float64)}
    tx = ifn.gradient_sampling(sigma=0.5, n=6, sigma_strategy="value", sigma_target=5, seed=0)
    _, _, new_state = one_update(tx, params, loss_fn)
    torch.testing.assert_close(new_state.sigma, torch.tensor(0.5 * 4 / 3, dtype=torch.float64))


@pytest.mark.parametrize("kw", [dict(aggregate="mean"), dict(aggregate="min-norm", fixed=False)])
def test_vmap_over_members_equals_the_loop(kw):
    assert_vmap_equals_loop(ifn.chain(ifn.gradient_sampling(0.1, 4, seed=3, **kw), ifn.sgd(0.1)), steps=3)


def test_adapter_equals_the_functional_path():
    batches = make_batches(4, seed=6)
    factory = lambda: ifn.chain(ifn.gradient_sampling(0.2, 4, fixed=False, seed=2), ifn.sgd(0.1, momentum=0.9))  # noqa: E731
    model, _ = adapter_run(factory, batches)
    params = functional_trained(factory(), batches)
    for name, value in params_of(model).items():
        torch.testing.assert_close(value, params[name], rtol=0, atol=1e-13)


def test_resume_is_bit_identical():
    factory = lambda: ifn.chain(ifn.gradient_sampling(0.2, 3, fixed=False, sigma_strategy="value", seed=1), ifn.sgd(0.1))  # noqa: E731
    assert_resume_is_bit_identical(factory, make_batches(6, seed=3), split=3)


def test_zero_and_constant_objectives_give_finite_updates():
    params = {"x": torch.zeros(3, dtype=torch.float64)}
    for aggregate in ("mean", "max", "min", "min-norm", "min-value"):
        tx = ifn.gradient_sampling(n=4, aggregate=aggregate, sigma_strategy="grad-norm", seed=0)
        updates, _, new_state = one_update(tx, params, lambda p: p["x"].sum() * 0.0)
        assert torch.isfinite(updates["x"]).all() and torch.isfinite(new_state.sigma)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(n=0), "n must be a positive int"),
        (dict(n=1), "n must be ≥ 2"),
        (dict(aggregate="median"), "aggregate must be one of"),
        (dict(distribution="cauchy"), "distribution must be one of"),
        (dict(sigma=0.0), "sigma must be positive"),
        (dict(sigma_strategy="loss"), "sigma_strategy must be one of"),
        (dict(sigma_target=-1), "sigma_target"),
    ],
)
def test_bad_arguments_are_refused_by_name(kw, message):
    with pytest.raises(ValueError, match=message):
        ifn.gradient_sampling(**kw)


def test_missing_loss_fn_is_refused_with_advice(problem):
    params, _ = problem
    tx = ifn.gradient_sampling(n=3)
    with pytest.raises(ValueError, match="gradient_sampling re-evaluates the objective and needs loss_fn"):
        tx.update(params, tx.init(params), params)


# --- torchzero, with our perturbations injected -------------------------------------------


def torchzero_run(monkeypatch, batches, lr=0.1, **kw):
    """torchzero's GradientSampling (with an inner LR, the form that does not recurse in
    0.4.4), fed the perturbations our transform draws, and ours over the same batches."""
    tz = require_torchzero()
    from torchzero.utils import TensorList

    model = make_mlp()
    params = params_of(model)
    tx = ifn.chain(ifn.gradient_sampling(**kw), ifn.scale_by_learning_rate(lr))
    state = tx.init(params)
    samples = kw["n"] - kw.get("include_x0", True)
    queue = []
    for x, y in batches:
        drawn = ifn.sampling_perturbations(state[0].key, params, samples, kw.get("distribution", "gaussian"))
        queue.extend(TensorList([drawn[k][i] for k in params]) for i in range(samples))
        params, state, _ = ifn.step(tx, state, params, loss_fn_for(model, x, y))
    monkeypatch.setattr(TensorList, "sample_like", lambda self, *a, **k: queue.pop(0))
    kw = {k: v for k, v in kw.items() if k != "seed"}
    return params, torchzero_trained(make_mlp(), [tz.m.GradientSampling([tz.m.LR(lr)], **kw)], batches), state[0]


@pytest.mark.parametrize(
    "kw",
    [
        dict(aggregate="mean"),
        dict(aggregate="mean", include_x0=False),
        dict(aggregate="min-norm"),
        dict(aggregate="min-norm", include_x0=False),
        dict(aggregate="mean", fixed=False),
        dict(aggregate="mean", fixed=False, distribution="uniform"),
        dict(aggregate="mean", fixed=False, distribution="sphere"),
        dict(aggregate="mean", fixed=False, distribution="rademacher"),
        dict(aggregate="min-norm", fixed=False, sigma_strategy="value"),
        dict(aggregate="min-norm", fixed=False, sigma_strategy="value", sigma_target=2),
        dict(aggregate="min-norm", fixed=False, sigma_strategy="grad-norm"),
        dict(aggregate="mean", include_x0=False, fixed=False, sigma_strategy="value"),
        dict(aggregate="mean", include_x0=False, fixed=False, sigma_strategy="grad-norm"),
    ],
)
def test_matches_torchzero_over_ten_steps(monkeypatch, kw):
    ours, reference, state = torchzero_run(monkeypatch, make_batches(10, seed=2), sigma=0.5, n=5, seed=3, **kw)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-10)
    if kw.get("sigma_strategy"):
        assert float(state.sigma) != 0.5  # the strategy acted


@pytest.mark.parametrize("aggregate", ["min", "max", "min-value"])
def test_torchzero_min_max_and_min_value_keep_the_first_samples_sign_or_gradient(monkeypatch, aggregate):
    """torchzero 0.4.4's defects, pinned on one step: ``min``/``max`` take each entry's
    magnitude from the winner but its sign from the first point; ``min-value`` clamps the
    running loss before comparing, so it always returns the first point's gradient."""
    x, y = make_batches(1, seed=2)[0]
    ours, reference, _ = torchzero_run(monkeypatch, [(x, y)], lr=1.0, sigma=0.2, n=5, seed=3, aggregate=aggregate)
    start = params_of(make_mlp())
    first_gradient = torch.func.grad(loss_fn_for(make_mlp(), x, y))(start)
    for k in start:
        ours_step, reference_step = start[k] - ours[k], start[k] - reference[k]
        if aggregate == "min-value":
            torch.testing.assert_close(reference_step, first_gradient[k], rtol=0, atol=1e-12)
        else:
            expected = ours_step.abs() * torch.where(first_gradient[k] < 0, -1.0, 1.0)
            torch.testing.assert_close(reference_step, expected, rtol=0, atol=1e-12)
    assert any(not torch.allclose(start[k] - ours[k], start[k] - reference[k]) for k in start)
