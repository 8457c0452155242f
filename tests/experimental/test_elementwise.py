"""The element-wise experimental modules (coordinate momentum, cubic Adam, reduce outward
LR): torchzero's numbers, their statistics and the properties every transform keeps."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.func import vmap

import infty_func as ifn
from infty_func.core import random
from infty_func.experimental.coordinate_momentum import _refresh_masks, coordinate_momentum
from infty_func.experimental.cubic_adam import cubic_adam, cubic_step
from infty_func.experimental.reduce_outward_lr import reduce_outward_lr
from tests.adapter_runs import assert_resume_is_bit_identical, functional_trained
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.torchzero_runs import torchzero_trained
from tests.vmap_loop import assert_vmap_equals_loop

TOLERANCE = 1e-8
LR = 0.05


def torchzero():
    return pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")


def torchzero_params(*modules, steps=10):
    """The test MLP's parameters after ``steps`` of ``tz.Optimizer(modules..., LR)``."""
    tz = torchzero()
    return torchzero_trained(make_mlp(), [*modules, tz.m.LR(LR)], make_batches(steps, seed=2))


def our_params(*transforms, steps=10):
    """The same run through ``ifn.step`` with ``chain(transforms..., lr)``."""
    return functional_trained(ifn.chain(*transforms, ifn.scale_by_learning_rate(LR)), make_batches(steps, seed=2))


def assert_same_run(ours: dict, theirs: dict, atol: float = TOLERANCE) -> None:
    start = params_of(make_mlp())
    assert max((theirs[k] - start[k]).abs().max().item() for k in start) > 1e-3  # the run moved
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=atol)


# --------------------------------------------------------------------------- coordinate momentum


def test_coordinate_momentum_refreshes_a_fraction_p_of_the_entries_each_step():
    n, p = 40_000, 0.2
    tx = coordinate_momentum(p, seed=3)
    params = {"w": torch.zeros(200, 150, dtype=torch.float64), "b": torch.zeros(10_000, dtype=torch.float64)}
    state = tx.init(params)
    first, state = tx.update(ifn.tree_ones_like(params), state, params)
    second, _ = tx.update(ifn.tree_full_like(params, 2.0), state, params)
    values = torch.cat([second["w"].reshape(-1), second["b"]])
    # after two steps an entry holds 2 w.p. p, 1 w.p. p(1 − p), 0 w.p. (1 − p)²
    for value, probability in ((2.0, p), (1.0, p * (1 - p)), (0.0, (1 - p) ** 2)):
        fraction = (values == value).double().mean().item()
        standard_error = (probability * (1 - probability) / n) ** 0.5
        assert abs(fraction - probability) < 4 * standard_error, (value, fraction, probability)
    # the second step's coins are new: refreshed-at-step-1 and refreshed-at-step-2 are independent
    both = ((torch.cat([first["w"].reshape(-1), first["b"]]) == 1) & (values == 2)).double().mean().item()
    assert abs(both - p * p) < 4 * (p * p * (1 - p * p) / n) ** 0.5


def test_coordinate_momentum_is_an_ema_with_beta_one_minus_p_in_expectation():
    n, p, steps = 50_000, 0.3, 8
    g_sequence = torch.randn(steps, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tx = coordinate_momentum(p, seed=11)
    params = {"x": torch.zeros(n, dtype=torch.float64)}
    state, ema = tx.init(params), 0.0
    for g in g_sequence:
        out, state = tx.update({"x": torch.full((n,), float(g), dtype=torch.float64)}, state, params)
        ema = p * float(g) + (1 - p) * ema  # E[vₜ] = p gₜ + (1 − p) E[vₜ₋₁]
    mean, spread = out["x"].mean().item(), out["x"].std().item()
    assert abs(mean - ema) < 4 * spread / n**0.5, (mean, ema)


def test_coordinate_momentum_same_seed_gives_the_same_bits_and_seeds_differ():
    params = params_of(make_mlp())
    grads = ifn.tree_map(lambda t: torch.randn_like(t), params)

    def outputs(seed):
        tx = coordinate_momentum(0.5, seed=seed)
        state, result = tx.init(params), []
        for _ in range(3):
            out, state = tx.update(grads, state, params)
            result.append(out)
        return result

    a, b, c = outputs(7), outputs(7), outputs(8)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert any(not torch.equal(x["0.weight"], z["0.weight"]) for x, z in zip(a, c))
    # the key advanced: with a constant gradient, repeated coins would repeat the output
    assert not torch.equal(a[0]["0.weight"], a[1]["0.weight"])


@pytest.mark.parametrize("p", [0.0, 0.35, 1.0])
def test_coordinate_momentum_matches_torchzero_given_the_same_coins(p, monkeypatch):
    """torchzero draws its coins from the global generator: hand it ours (p = 0 and 1
    need no coins and match as they are)."""
    tz = torchzero()
    tensorlist = importlib.import_module("torchzero.utils.tensorlist")
    keys = [random.key(13)]

    def our_coins(self, p=0.5, generator=None, **kwargs):
        masks = _refresh_masks(keys[0], round(p[0] * 2**32), list(self))  # p: one per leaf, all equal
        keys[0] = random.next_key(keys[0])
        return tensorlist.TensorList(mask.to(t.dtype) for mask, t in zip(masks, self))

    if 0.0 < p < 1.0:
        monkeypatch.setattr(tensorlist.TensorList, "bernoulli_like", our_coins)
    theirs = torchzero_params(tz.m.experimental.CoordinateMomentum(p))
    ours = our_params(coordinate_momentum(p, seed=13))
    if p == 0.0:  # the buffer never takes a value: nothing moves
        assert all(torch.equal(ours[k], v) for k, v in params_of(make_mlp()).items())
        assert all(torch.equal(theirs[k], v) for k, v in params_of(make_mlp()).items())
    else:
        assert_same_run(ours, theirs)


def test_coordinate_momentum_vmapped_over_seeds_equals_one_run_per_seed():
    params = {"w": torch.randn(6, 5, dtype=torch.float64), "b": torch.randn(5, dtype=torch.float64)}
    grads = [ifn.tree_map(lambda t: torch.randn_like(t), params) for _ in range(3)]
    seeds = [0, 1, 5]
    tx = coordinate_momentum(0.4)
    states = random.reseed(tx.init(params), seeds)
    batched = []
    for g in grads:
        out, states = vmap(tx.update, in_dims=(None, 0, None))(g, states, params)
        batched.append(out)
    for member, seed in enumerate(seeds):
        alone = coordinate_momentum(0.4, seed=seed)
        state = alone.init(params)
        for g, stacked in zip(grads, batched):
            out, state = alone.update(g, state, params)
            assert all(torch.equal(stacked[k][member], out[k]) for k in out)
    assert not torch.equal(batched[-1]["w"][0], batched[-1]["w"][1])


# ------------------------------------------------------------------------------------ cubic adam


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("mode", ["signed_cbrt", "unsigned_cbrt", "halve"])
def test_cubic_adam_matches_torchzero_over_ten_steps(mode, debiased):
    tz = torchzero()
    theirs = torchzero_params(tz.m.experimental.CubicAdam(0.8, 0.9, 0.95, 1e-8, debiased=debiased, mode=mode))
    ours = our_params(cubic_adam(0.8, 0.9, 0.95, 1e-8, mode=mode, debiased=debiased))
    assert_same_run(ours, theirs)  # observed: bit-identical


@pytest.mark.parametrize("mode", ["signed_cbrt", "unsigned_cbrt", "halve"])
def test_cubic_step_matches_torchzero_on_every_branch(mode):
    """A grid of moments that reaches all three outcomes: no local minimum (Adam's step),
    the local minimum, and |2A| below eps (the clipped denominator)."""
    torchzero()
    tz_cubic = importlib.import_module("torchzero.modules.experimental.cubic_adam")
    eps = 1e-4
    values = torch.tensor([-2.0, -0.3, -1e-4, -1e-15, 1e-16, 1e-7, 1e-3, 0.5, 3.0], dtype=torch.float64)
    m1, m3 = torch.meshgrid(values, values, indexing="ij")
    m1, m3 = m1.reshape(-1), m3.reshape(-1)
    m2 = torch.tensor([1e-6, 0.04, 1.0, 9.0], dtype=torch.float64).repeat_interleave(m1.numel())
    m1, m3 = m1.repeat(4), m3.repeat(4)
    a = {"signed_cbrt": tz_cubic.signed_cbrt(m3), "unsigned_cbrt": m3.abs().pow(1 / 3), "halve": 0.5 * m3}[mode]
    b = m2.sqrt()
    theirs = -tz_cubic._cubic_minimize(a, b, m1, eps)
    discriminant = b**2 - 4 * a * m1
    assert (discriminant < 0).any() and (discriminant >= 0).any() and (2 * a.abs() < eps).any()
    torch.testing.assert_close(cubic_step(m1, m2, m3, mode, eps), theirs, rtol=1e-14, atol=0)


def test_cubic_step_with_zero_leading_coefficient_is_torchzeros_limit_not_nan():
    torchzero()
    tz_cubic = importlib.import_module("torchzero.modules.experimental.cubic_adam")
    m1 = torch.tensor([0.0, 0.3, -0.2, 1e-9], dtype=torch.float64)
    m2 = torch.tensor([0.0, 0.25, 0.09, 1e-20], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    assert torch.isnan(tz_cubic._cubic_minimize(0.5 * zero, m2.sqrt(), m1, 1e-8)).any()
    limit = -tz_cubic._cubic_minimize(torch.full((4,), 1e-300, dtype=torch.float64), m2.sqrt(), m1, 1e-8)
    for mode in ("signed_cbrt", "unsigned_cbrt", "halve"):
        torch.testing.assert_close(cubic_step(m1, m2, zero, mode, 1e-8), limit, rtol=0, atol=0)


def test_cubic_adam_on_a_steady_gradient_takes_adams_unit_step():
    """A constant gradient gives m = g, v = g², s = g³ after debiasing, so A = g, B = |g|,
    C = g: B² − 4AC = −3g² < 0, no local minimum, and the step is Adam's g / (|g| + eps)."""
    g = {"x": torch.tensor([2.0, -0.5, 1e-3], dtype=torch.float64)}
    tx = cubic_adam(eps=1e-8)
    state = tx.init(g)
    for _ in range(4):
        out, state = tx.update(g, state, g)
    torch.testing.assert_close(out["x"], g["x"] / (g["x"].abs() + 1e-8), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- reduce outward LR


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("use_grad", [False, True])
def test_reduce_outward_lr_matches_torchzero_over_ten_steps(use_grad, invert):
    """After a moving average of the gradients, so that the update's signs and the
    gradient's differ (torchzero's EMA is ours trace scaled by 1 − β)."""
    tz = torchzero()
    theirs = torchzero_params(tz.m.EMA(0.9), tz.m.experimental.ReduceOutwardLR(0.3, use_grad, invert))
    ours = our_params(ifn.trace(0.9), ifn.scale(0.1), reduce_outward_lr(0.3, use_grad, invert))
    assert_same_run(ours, theirs, atol=1e-12)  # observed: ≤ 1e-16


def test_reduce_outward_lr_scales_exactly_the_steps_that_move_away_from_zero():
    w = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    u = torch.tensor([-3.0, 3.0, 3.0, -3.0, 5.0, 0.0], dtype=torch.float64)
    # the step −u moves w outward where w·u < 0: entries 0 and 2
    outward = torch.tensor([True, False, True, False, False, False])
    inward = torch.tensor([False, True, False, True, False, False])
    out, _ = reduce_outward_lr(0.1).update({"w": u}, ifn.EmptyState(), {"w": w})
    assert torch.equal(out["w"], torch.where(outward, u * 0.1, u))
    inverted, _ = reduce_outward_lr(0.1, invert=True).update({"w": u}, ifn.EmptyState(), {"w": w})
    assert torch.equal(inverted["w"], torch.where(inward, u * 0.1, u))


def test_reduce_outward_lr_with_use_grad_reads_the_gradient_of_loss_fn_not_the_update():
    w = {"w": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    loss_fn = lambda p: (p["w"] * torch.tensor([1.0, 1.0], dtype=torch.float64)).sum()  # noqa: E731  ∇ = (1, 1)
    u = {"w": torch.tensor([-2.0, -2.0], dtype=torch.float64)}
    out, _ = reduce_outward_lr(0.5, use_grad=True).update(u, ifn.EmptyState(), w, loss_fn=loss_fn)
    assert torch.equal(out["w"], torch.tensor([-2.0, -1.0], dtype=torch.float64))  # w·∇ < 0 on entry 1 only


def test_reduce_outward_lr_needs_params_and_with_use_grad_loss_fn():
    g = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="reduce_outward_lr .*params"):
        reduce_outward_lr().update(g, ifn.EmptyState())
    with pytest.raises(ValueError, match=r"reduce_outward_lr\(use_grad=True\) .*loss_fn"):
        reduce_outward_lr(use_grad=True).update(g, ifn.EmptyState(), g)


# ------------------------------------------------------------------------ properties of all three

FACTORIES = {
    "coordinate_momentum": lambda: coordinate_momentum(0.3, seed=4),
    "cubic_adam": lambda: cubic_adam(),
    "cubic_adam_halve": lambda: cubic_adam(mode="halve", debiased=False),
    "reduce_outward_lr": lambda: reduce_outward_lr(0.3),
    "reduce_outward_lr_use_grad": lambda: ifn.chain(ifn.trace(0.9), reduce_outward_lr(0.3, use_grad=True, invert=True)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_vmap_over_members_equals_the_loop(name):
    # "halve" clips |2A| < eps for most entries, and then x+ = (√(B² − 4AC) − B) / eps
    # multiplies the last-bit differences of the batched forward pass by about 1/eps.
    atol = 1e-9 if name == "cubic_adam_halve" else 1e-12
    assert_vmap_equals_loop(ifn.chain(FACTORIES[name](), ifn.sgd(0.05)), steps=4, atol=atol, check_state=True)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_resume_is_bit_identical(name):
    assert_resume_is_bit_identical(lambda: ifn.chain(FACTORIES[name](), ifn.adam(1e-2)), make_batches(6, seed=3), split=3)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_zero_and_constant_gradients_give_finite_updates(name):
    model = make_mlp()
    params = params_of(model)
    loss_fn = loss_fn_for(model, *make_batches(1)[0])
    tx = FACTORIES[name]()
    for grads in (ifn.tree_zeros_like(params), ifn.tree_ones_like(params), ifn.tree_scale(ifn.tree_ones_like(params), -1e-30)):
        state = tx.init(params)
        for _ in range(3):
            out, state = tx.update(grads, state, params, loss_fn=loss_fn)
            assert bool(ifn.tree_all_finite(out))
    zeros, _ = tx.update(ifn.tree_zeros_like(params), tx.init(params), params, loss_fn=loss_fn)
    assert all(bool((leaf == 0).all()) for leaf in ifn.tree_leaves(zeros))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: coordinate_momentum(1.5), "coordinate_momentum: p must be a probability"),
        (lambda: coordinate_momentum(-0.1), "coordinate_momentum: p must be a probability"),
        (lambda: coordinate_momentum(0.1, seed=1.5), "coordinate_momentum: seed must be an int"),
        (lambda: cubic_adam(beta1=1.0), r"cubic_adam: beta1 must be in \[0, 1\)"),
        (lambda: cubic_adam(beta3=-0.1), r"cubic_adam: beta3 must be in \[0, 1\)"),
        (lambda: cubic_adam(eps=0.0), "cubic_adam: eps must be > 0"),
        (lambda: cubic_adam(mode="cube"), "cubic_adam: mode must be one of"),
        (lambda: reduce_outward_lr("half"), "reduce_outward_lr: mul must be a number"),
        (lambda: reduce_outward_lr(use_grad=1), "reduce_outward_lr: use_grad must be a bool"),
        (lambda: reduce_outward_lr(invert="yes"), "reduce_outward_lr: invert must be a bool"),
    ],
)
def test_bad_arguments_are_refused_naming_the_method(build, message):
    with pytest.raises(ValueError, match=message):
        build()
