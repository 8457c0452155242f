"""The vmap property every transform keeps: one vmapped training step over stacked
members equals a Python loop over the members."""

from __future__ import annotations

import torch
from torch.func import stack_module_state, vmap

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp

MEMBERS = 4


def stacked_problem(steps):
    """``MEMBERS`` MLPs stacked, and ``steps`` batches per member: ``xs[t, m]``, ``ys[t, m]``."""
    models = [make_mlp(seed) for seed in range(MEMBERS)]
    params, _ = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    batches = [make_batches(steps, seed=10 + m) for m in range(MEMBERS)]
    xs = torch.stack([torch.stack([x for x, _ in member]) for member in batches], dim=1)
    ys = torch.stack([torch.stack([y for _, y in member]) for member in batches], dim=1)
    return models[0], params, xs, ys


def assert_vmap_equals_loop(tx, steps=6, loss_for=loss_fn_for, atol=1e-12, check_state=False):
    """Train the stacked members with ``vmap(ifn.step)`` and each member alone; the
    parameters (and, with ``check_state``, the states) must agree to ``atol``."""
    base, params, xs, ys = stacked_problem(steps)

    def train_step(p, s, x, y):
        return ifn.step(tx, s, p, loss_for(base, x, y))[:2]

    batched, states = params, vmap(tx.init)(params)
    for t in range(xs.shape[0]):
        batched, states = vmap(train_step)(batched, states, xs[t], ys[t])
    for m in range(MEMBERS):
        p = {k: v[m] for k, v in params.items()}
        s = tx.init(p)
        for t in range(xs.shape[0]):
            p, s = train_step(p, s, xs[t, m], ys[t, m])
        for key in p:
            torch.testing.assert_close(batched[key][m], p[key], rtol=0, atol=atol)
        if check_state:
            for looped, stacked in zip(ifn.tree_leaves(s), ifn.tree_leaves(states)):
                torch.testing.assert_close(stacked[m], looped, rtol=0, atol=atol)
