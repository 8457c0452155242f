"""Properties every transform keeps: vmap equals a loop, checkpoints resume bit-identically,
the same inputs give the same bits, and degenerate gradients stay finite."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.func import stack_module_state, vmap

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.transforms.catalogue import NAMES, build

MEMBERS = 4


def stacked_problem(steps):
    models = [make_mlp(seed) for seed in range(MEMBERS)]
    params, _ = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    batches = [make_batches(steps, seed=10 + m) for m in range(MEMBERS)]
    xs = torch.stack([torch.stack([x for x, _ in member]) for member in batches], dim=1)
    ys = torch.stack([torch.stack([y for _, y in member]) for member in batches], dim=1)
    return models[0], params, xs, ys


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_members_equals_python_loop(name):
    tx = build(name)
    base, params, xs, ys = stacked_problem(6)

    def train_step(p, s, x, y):
        return ifn.step(tx, s, p, loss_fn_for(base, x, y))[:2]

    states = vmap(tx.init)(params)
    batched_params = params
    for t in range(xs.shape[0]):
        batched_params, states = vmap(train_step)(batched_params, states, xs[t], ys[t])

    for m in range(MEMBERS):
        p = {k: v[m] for k, v in params.items()}
        s = tx.init(p)
        for t in range(xs.shape[0]):
            p, s = train_step(p, s, xs[t, m], ys[t, m])
        for key in p:
            torch.testing.assert_close(batched_params[key][m], p[key], rtol=0, atol=1e-12)
        for looped, batched in zip(ifn.tree_leaves(s), ifn.tree_leaves(states)):
            torch.testing.assert_close(batched[m], looped, rtol=0, atol=1e-12)


def adapter_run(name, batches, model=None, opt=None):
    model = model or make_mlp()
    opt = opt or ifn.optim.TransformOptimizer(model.named_parameters(), build(name))
    for x, y in batches:
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return model, opt


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name):
    batches = make_batches(100, seed=3)
    uninterrupted, _ = adapter_run(name, batches)

    model, opt = adapter_run(name, batches[:50])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_model = make_mlp(seed=99)
    resumed_model.load_state_dict(saved["model"])
    resumed_opt = ifn.optim.TransformOptimizer(resumed_model.named_parameters(), build(name))
    resumed_opt.load_state_dict(saved["opt"])
    adapter_run(name, batches[50:], resumed_model, resumed_opt)

    for key, value in params_of(uninterrupted).items():
        assert torch.equal(value, params_of(resumed_model)[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_give_the_same_bits(name):
    batches = make_batches(5, seed=4)
    first, _ = adapter_run(name, batches)
    second, _ = adapter_run(name, batches)
    for key, value in params_of(first).items():
        assert torch.equal(value, params_of(second)[key])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["zero", "parallel", "opposite"])
def test_degenerate_gradients_give_finite_updates(name, kind):
    tx = build(name)
    params = params_of(make_mlp())
    state = tx.init(params)
    direction = ifn.tree_map(lambda p: torch.ones_like(p), params)
    sequence = {
        "zero": [ifn.tree_zeros_like(params)] * 3,
        "parallel": [direction, ifn.tree_scale(direction, 2.0), direction],
        "opposite": [direction, ifn.tree_scale(direction, -1.0), direction],
    }[kind]
    for grads in sequence:
        updates, state = tx.update(grads, state, params)
        assert bool(ifn.tree_all_finite(updates)), name
        params = ifn.apply_updates(params, updates)
    assert bool(ifn.tree_all_finite(params))
