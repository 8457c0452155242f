"""The aliases reproduce torch.optim update for update (float64, 200 steps, ≤ 1e-10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, max_abs_diff, params_of

STEPS = 200

CASES = [
    ("sgd", ifn.sgd, torch.optim.SGD, dict(lr=0.05)),
    ("sgd_momentum", ifn.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd_nesterov_wd", ifn.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", ifn.adam, torch.optim.Adam, dict(lr=1e-2)),
    ("adam_wd_amsgrad", ifn.adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("adamw", ifn.adamw, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("rmsprop", ifn.rmsprop, torch.optim.RMSprop, dict(lr=1e-3)),
    ("rmsprop_centered_momentum", ifn.rmsprop, torch.optim.RMSprop, dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
]


def run_torch(torch_cls, kwargs, batches):
    model = make_mlp()
    opt = torch_cls(model.parameters(), **kwargs)
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return params_of(model)


def run_functional(alias, kwargs, batches):
    model = make_mlp()
    params = params_of(model)
    tx = alias(**kwargs)
    state = tx.init(params)
    for x, y in batches:
        params, state, _ = ifn.step(tx, state, params, loss_fn_for(model, x, y))
    return params


def run_adapter(alias, kwargs, batches):
    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), alias(**kwargs))
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return params_of(model)


@pytest.mark.parametrize("name,alias,torch_cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_alias_matches_torch_optim_over_200_steps(name, alias, torch_cls, kwargs):
    batches = make_batches(STEPS)
    expected = run_torch(torch_cls, kwargs, batches)
    functional = run_functional(alias, kwargs, batches)
    adapter = run_adapter(alias, kwargs, batches)
    assert max_abs_diff(functional, expected) <= 1e-10
    assert max_abs_diff(adapter, expected) <= 1e-10
    # the parameters really moved, so agreement is not trivial
    assert max_abs_diff(expected, params_of(make_mlp())) > 1e-3


@pytest.mark.parametrize("name,alias,torch_cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_adapter_equals_functional_path_bit_for_bit(name, alias, torch_cls, kwargs):
    batches = make_batches(20)
    functional = run_functional(alias, kwargs, batches)
    adapter = run_adapter(alias, kwargs, batches)
    for key in functional:
        assert torch.equal(functional[key], adapter[key]), key
