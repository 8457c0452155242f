"""Properties every transform keeps: vmap equals a loop, checkpoints resume bit-identically,
the same inputs give the same bits, and degenerate gradients stay finite."""

from __future__ import annotations

import pytest
import torch

import infty_func as ifn
from tests.adapter_runs import adapter_run, assert_resume_is_bit_identical
from tests.conftest import make_batches, make_mlp, params_of
from tests.transforms.catalogue import NAMES, build
from tests.vmap_loop import assert_vmap_equals_loop


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_members_equals_python_loop(name):
    assert_vmap_equals_loop(build(name), steps=6, check_state=True)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name):
    assert_resume_is_bit_identical(lambda: build(name), make_batches(100, seed=3), split=50)


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_give_the_same_bits(name):
    batches = make_batches(5, seed=4)
    first, _ = adapter_run(lambda: build(name), batches)
    second, _ = adapter_run(lambda: build(name), batches)
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
