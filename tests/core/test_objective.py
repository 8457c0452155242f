"""Guards in the objective helpers and the flat views of pytrees that dense methods use."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import vmap

import infty_func as ifn
from infty_func.core.control import refuse_vmap
from infty_func.optim.closure_objective import ClosureObjective
from tests.conftest import make_batches, make_mlp, params_of


def test_hvp_refuses_an_objective_built_from_a_closure_instead_of_crashing():
    """torch 2.13 segfaults on a jvp through a closure objective (it swaps the module's
    parameters in place); hvp and hvp_operator refuse it by name instead."""
    model = make_mlp()
    x, y = make_batches(1)[0]
    params = params_of(model)

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    objective = ClosureObjective(closure, list(params), list(model.parameters()))
    for helper in (lambda: ifn.hvp(objective, params, params), lambda: ifn.hvp_operator(objective, params)):
        with pytest.raises(ValueError, match="hvp.* needs Hessian-vector products of loss_fn by torch.func"):
            helper()


def test_tree_ravel_round_trips_in_leaf_order():
    tree = {"b": torch.arange(3.0), "a": torch.arange(6.0).reshape(2, 3), "c": torch.tensor(7.0)}
    vector, unravel = ifn.tree_ravel(tree)
    assert vector.shape == (10,)
    assert torch.equal(vector, torch.cat([leaf.reshape(-1) for leaf in ifn.tree_leaves(tree)]))
    back = unravel(vector * 2)
    for key, leaf in tree.items():
        assert back[key].shape == leaf.shape and torch.equal(back[key], leaf * 2)


def test_refuse_vmap_names_the_method_only_under_vmap():
    refuse_vmap("solver", "calls SciPy", {"w": torch.ones(3)})  # not batched: no error

    def inside(w):
        refuse_vmap("solver", "calls SciPy", {"w": w})
        return w

    with pytest.raises(ValueError, match="solver calls SciPy and cannot run under torch.func.vmap"):
        vmap(inside)(torch.ones(2, 3))
