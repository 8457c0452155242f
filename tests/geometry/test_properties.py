"""Properties every geometry transform keeps: vmap over members (and over radii) equals a
loop, checkpoints resume bit-identically, equal inputs give equal bits, and degenerate
gradients stay finite."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import infty_func as ifn
from tests.adapter_runs import adapter_run, assert_resume_is_bit_identical
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.geometry.catalogue import NAMES, build
from tests.vmap_loop import assert_vmap_equals_loop


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_members_equals_python_loop(name):
    assert_vmap_equals_loop(ifn.chain(build(name), ifn.sgd(0.1, momentum=0.9)), steps=6)


@pytest.mark.parametrize("factory", [ifn.sam, ifn.gsam, ifn.looksam, ifn.c_flat], ids=lambda f: f.__name__)
def test_vmap_over_a_batch_of_rho_values_equals_the_loop(factory):
    # (no rho = 0: LookSAM then rescales a round-off-sized g_v by ‖g‖/1e-8, amplifying round-off)
    rhos = torch.tensor([0.01, 0.03, 0.05, 0.2], dtype=torch.float64)
    kwargs = {"k": 2} if factory is ifn.looksam else {}
    tx = ifn.chain(ifn.inject_hyperparams(factory)(rho=0.1, **kwargs), ifn.sgd(0.1))
    model = make_mlp()
    params = params_of(model)
    batches = make_batches(4)

    def train_step(p, s, x, y):
        return ifn.step(tx, s, p, loss_fn_for(model, x, y))[:2]

    def with_rho(state, rho):
        return ifn.tree_set(state, rho=rho)

    stacked = {k: v.expand(len(rhos), *v.shape).clone() for k, v in params.items()}
    states = vmap(lambda rho: with_rho(tx.init(params), rho))(rhos)
    for x, y in batches:
        stacked, states = vmap(train_step, in_dims=(0, 0, None, None))(stacked, states, x, y)

    for index, rho in enumerate(rhos):
        p, s = params, with_rho(tx.init(params), rho)
        for x, y in batches:
            p, s = train_step(p, s, x, y)
        for key in p:
            torch.testing.assert_close(stacked[key][index], p[key], rtol=0, atol=1e-12)


def with_adam(name):
    return lambda: ifn.chain(build(name), ifn.adam(1e-2))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name):
    assert_resume_is_bit_identical(with_adam(name), make_batches(12, seed=3), split=5)


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_give_the_same_bits(name):
    batches = make_batches(5, seed=4)
    first, _ = adapter_run(with_adam(name), batches)
    second, _ = adapter_run(with_adam(name), batches)
    for key, value in params_of(first).items():
        assert torch.equal(value, params_of(second)[key])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["zero", "parallel", "opposite"])
def test_degenerate_gradients_give_finite_updates(name, kind):
    """Incoming gradients that are zero, or repeat, or flip, with a loss that is flat
    (zero) or linear along them: no division by a zero norm leaks a NaN."""
    tx = build(name)
    params = params_of(make_mlp())
    direction = ifn.tree_ones_like(params)
    if kind == "zero":
        loss_fn = lambda p: sum(leaf.sum() for leaf in ifn.tree_leaves(p)) * 0.0  # noqa: E731
        sequence = [ifn.tree_zeros_like(params)] * 4
    else:
        sign = 1.0 if kind == "parallel" else -1.0
        loss_fn = lambda p: sign * sum(leaf.sum() for leaf in ifn.tree_leaves(p))  # noqa: E731
        sequence = [direction, ifn.tree_scale(direction, 2.0 * sign), direction, ifn.tree_scale(direction, sign)]
    state = tx.init(params)
    for grads in sequence:
        updates, state = tx.update(grads, state, params, loss_fn=loss_fn)
        assert bool(ifn.tree_all_finite(updates)), name
        params = ifn.apply_updates(params, ifn.tree_scale(updates, -0.1))
    assert bool(ifn.tree_all_finite(params))
