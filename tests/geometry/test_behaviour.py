"""What each geometry method promises: its formula on a quadratic, its evaluation count,
its errors, its radius schedule, and batch-norm statistics kept out of perturbed passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.geometry.catalogue import GEOMETRY, NAMES, build


def quadratic(seed=0, n=5):
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(n, n, generator=generator, dtype=torch.float64)
    hessian = root @ root.T + torch.eye(n, dtype=torch.float64)
    w = torch.randn(n, generator=generator, dtype=torch.float64)
    return hessian, {"w": w}, lambda p: 0.5 * p["w"] @ hessian @ p["w"]


def updates_of(transform, params, loss_fn):
    _, grads = ifn.value_and_grad(loss_fn)(params)
    updates, _ = transform.update(grads, transform.init(params), params, loss_fn=loss_fn)
    return updates["w"]


def test_sam_gradient_on_a_quadratic_is_hessian_at_the_ascent_point():
    hessian, params, loss_fn = quadratic()
    rho = 0.3
    g = hessian @ params["w"]
    expected = hessian @ (params["w"] + rho * g / g.norm())
    torch.testing.assert_close(updates_of(ifn.sam(rho, eps=0.0), params, loss_fn), expected, rtol=1e-14, atol=1e-12)


def test_asam_moves_along_w_squared_times_g_scaled_by_the_weighted_norm():
    hessian, params, loss_fn = quadratic(1)
    rho, w = 0.2, params["w"]
    g = hessian @ w
    expected = hessian @ (w + rho * w**2 * g / (w.abs() * g).norm())
    torch.testing.assert_close(updates_of(ifn.sam(rho, adaptive=True, eps=0.0), params, loss_fn), expected, rtol=1e-14, atol=1e-12)


def test_gsam_subtracts_alpha_times_the_part_of_g_orthogonal_to_the_sam_gradient():
    hessian, params, loss_fn = quadratic(2)
    rho, alpha, w = 0.3, 0.4, params["w"]
    g = hessian @ w
    sam_grad = hessian @ (w + rho * g / g.norm())
    orthogonal = g - (g @ sam_grad) / sam_grad.norm() ** 2 * sam_grad
    out = updates_of(ifn.gsam(rho, alpha, eps=0.0), params, loss_fn)
    torch.testing.assert_close(out, sam_grad - alpha * orthogonal, rtol=1e-13, atol=1e-12)
    assert abs(float((sam_grad - out) @ sam_grad)) < 1e-9  # the correction is orthogonal to g_s


def test_c_flat_on_a_quadratic_adds_lamb_times_rho_hessian_along_the_ascent_gradient():
    """On ½wᵀHw the flatness difference g₃ − h is exactly rho·H h/‖h‖."""
    hessian, params, loss_fn = quadratic(3)
    rho, lamb, w = 0.1, 0.5, params["w"]
    g = hessian @ w
    sam_grad = hessian @ (w + rho * g / g.norm())
    d = sam_grad - g
    ascended = w + rho * d / d.norm()
    h = hessian @ ascended
    expected = sam_grad + lamb * rho * hessian @ h / h.norm()
    torch.testing.assert_close(updates_of(ifn.c_flat(rho, lamb, eps=0.0), params, loss_fn), expected, rtol=1e-12, atol=1e-12)


def counting(loss_fn):
    calls = []

    def counted(params):
        calls.append(1)
        return loss_fn(params)

    return counted, calls


@pytest.mark.parametrize("name", [n for n in NAMES if GEOMETRY[n][1] is not None])
def test_loss_fn_evaluations_per_step_are_the_documented_minimum(name):
    transform, expected = build(name), GEOMETRY[name][1]
    model = make_mlp()
    params = params_of(model)
    state = transform.init(params)
    for (x, y), extra in zip(make_batches(len(expected)), expected):
        loss_fn, calls = counting(loss_fn_for(model, x, y))
        params, state, _ = ifn.step(transform, state, params, loss_fn)
        assert len(calls) == 1 + extra, f"{name}: {len(calls) - 1} extra evaluations, documented {extra}"


def test_c_flat_plus_evaluates_three_times_only_when_its_gate_opens():
    transform = ifn.c_flat(0.05, strategy="plus", A=0.5, t0=3, k=1.0)
    model = make_mlp()
    params, state = params_of(model), None
    state = transform.init(params)
    extras = []
    for x, y in make_batches(8):
        loss_fn, calls = counting(loss_fn_for(model, x, y))
        grads_norm = ifn.tree_norm(ifn.value_and_grad(loss_fn)(params)[1])
        t = float(state.count) + 1
        gate = float(state.threshold) / (1 + torch.exp(torch.tensor(-1.0 * (t - 3)))) - grads_norm
        calls.clear()
        params, state, _ = ifn.step(transform, state, params, loss_fn)
        extras.append(len(calls) - 1)
        assert extras[-1] == (3 if gate <= 0 else 0)
    assert 0 in extras and 3 in extras, extras  # the problem exercises both branches


@pytest.mark.parametrize("name", NAMES)
def test_missing_loss_fn_raises_a_value_error_naming_the_method(name):
    transform = build(name)
    params = params_of(make_mlp())
    grads = ifn.tree_ones_like(params)
    method = name.replace("asam", "sam").replace("c_flat_plus", "c_flat")
    with pytest.raises(ValueError, match=f"^{method} re-evaluates the objective and needs loss_fn"):
        for _ in range(3):  # looksam evaluates only on its k-th step: it still insists at once
            transform.update(grads, transform.init(params), params)


def test_missing_params_raises_a_value_error():
    with pytest.raises(ValueError, match="sam perturbs the parameters"):
        ifn.sam().update({"w": torch.ones(2)}, ifn.sam().init({"w": torch.ones(2)}), loss_fn=lambda p: p["w"].sum())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strategy must be one of"):
        ifn.c_flat(strategy="fancy")
    with pytest.raises(ValueError, match="positive integer k"):
        ifn.looksam(k=0)


def test_rho_schedule_sets_the_radius_at_each_step():
    """A schedule count -> rho equals the fixed radius it returns at that step."""
    hessian, params, loss_fn = quadratic(4)
    schedule = ifn.transforms.schedules.linear(0.4, 0.1, 3)
    scheduled = ifn.sam(schedule, eps=0.0)
    state = scheduled.init(params)
    for count in range(4):
        _, grads = ifn.value_and_grad(loss_fn)(params)
        out, state = scheduled.update(grads, state, params, loss_fn=loss_fn)
        fixed, _ = ifn.sam(float(schedule(torch.tensor(count))), eps=0.0).update(grads, state, params, loss_fn=loss_fn)
        torch.testing.assert_close(out, fixed, rtol=1e-14, atol=1e-14)


def test_a_schedule_returning_a_vector_is_refused():
    hessian, params, loss_fn = quadratic()
    tx = ifn.sam(lambda count: torch.ones(2))
    with pytest.raises(ValueError, match="sam: the schedule must return a scalar"):
        tx.update(params, tx.init(params), params, loss_fn=loss_fn)


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)).double()


def test_frozen_batch_norm_keeps_running_statistics_in_perturbed_passes_only():
    model = bn_model()
    x, y = make_batches(1)[0]
    buffers = dict(model.named_buffers())
    base = lambda p: nn.functional.cross_entropy(functional_call(model, {**p, **buffers}, (x,)), y)  # noqa: E731
    params = params_of(model)

    def stats_after(loss_fn):
        with torch.no_grad():
            for b, v in zip(buffers.values(), initial):
                b.copy_(v)
        ifn.step(ifn.chain(ifn.sam(0.5), ifn.sgd(0.1)), ifn.chain(ifn.sam(0.5), ifn.sgd(0.1)).init(params), params, loss_fn)
        return {k: v.clone() for k, v in buffers.items()}

    initial = [b.clone() for b in buffers.values()]
    with torch.no_grad():  # what one unperturbed training pass alone leaves
        for b, v in zip(buffers.values(), initial):
            b.copy_(v)
        base(params)
    unperturbed_only = {k: v.clone() for k, v in buffers.items()}

    frozen = stats_after(ifn.freeze_batch_norm_when_perturbed(base, model))
    unfrozen = stats_after(base)
    for key in ("1.running_mean", "1.running_var"):
        torch.testing.assert_close(frozen[key], unperturbed_only[key], rtol=0, atol=0)
        assert not torch.equal(unfrozen[key], unperturbed_only[key])
    assert all(layer.momentum == 0.1 for layer in model.modules() if isinstance(layer, nn.BatchNorm1d))


def test_frozen_batch_norm_restores_momentum_when_the_block_raises():
    model = bn_model()
    with pytest.raises(RuntimeError), ifn.frozen_batch_norm(model):
        assert model[1].momentum == 0.0
        raise RuntimeError("boom")
    assert model[1].momentum == 0.1


def test_transform_optimizer_with_model_freezes_batch_norm_in_perturbed_passes():
    x, y = make_batches(1)[0]
    stats = {}
    for freeze in (True, False):
        model = bn_model()
        opt = ifn.optim.TransformOptimizer(
            model.named_parameters(), ifn.chain(ifn.sam(0.5), ifn.sgd(0.1)), model=model if freeze else None
        )

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        stats[freeze] = model[1].running_mean.clone()
    reference = bn_model()
    reference(x)  # one unperturbed training pass
    torch.testing.assert_close(stats[True], reference[1].running_mean, rtol=0, atol=0)
    assert not torch.equal(stats[False], reference[1].running_mean)
