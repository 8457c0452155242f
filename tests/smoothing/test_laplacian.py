"""Laplacian smoothing: the linear system it solves, torchzero's numbers, and the
properties every transform keeps."""

from __future__ import annotations

import pytest
import torch

import infty_func as ifn
from tests.adapter_runs import assert_resume_is_bit_identical, functional_trained
from tests.conftest import make_batches, make_mlp, params_of
from tests.torchzero_runs import require_torchzero, torchzero_trained
from tests.vmap_loop import assert_vmap_equals_loop


def periodic_laplacian(n):
    eye = torch.eye(n, dtype=torch.float64)
    return -2 * eye + torch.roll(eye, 1, 0) + torch.roll(eye, -1, 0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_the_update_solves_i_minus_sigma_laplacian_u_equals_g(sigma):
    g = {"w": torch.randn(7, 5, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}
    tx = ifn.laplacian_smoothing(sigma, layerwise=True, min_numel=4)
    out, _ = tx.update(g, tx.init(g), g)
    u = out["w"].reshape(-1)
    system = torch.eye(35, dtype=torch.float64) - sigma * periodic_laplacian(35)
    torch.testing.assert_close(system @ u, g["w"].reshape(-1), rtol=0, atol=1e-12)
    assert torch.equal(out["b"], g["b"])  # 3 entries ≤ min_numel: passed through


def test_global_smoothing_treats_all_leaves_as_one_vector():
    g = {"w": torch.randn(4, 3, dtype=torch.float64), "b": torch.randn(6, dtype=torch.float64)}
    tx = ifn.laplacian_smoothing(2.0, layerwise=False)
    out, _ = tx.update(g, tx.init(g), g)
    flat_in = torch.cat([g["w"].reshape(-1), g["b"]])
    flat_out = torch.cat([out["w"].reshape(-1), out["b"]])
    torch.testing.assert_close(
        (torch.eye(18, dtype=torch.float64) - 2.0 * periodic_laplacian(18)) @ flat_out, flat_in, rtol=0, atol=1e-12
    )


def test_sigma_zero_is_the_identity():
    g = {"w": torch.randn(6, 6, dtype=torch.float64)}
    tx = ifn.laplacian_smoothing(0.0)
    out, _ = tx.update(g, tx.init(g), g)
    torch.testing.assert_close(out["w"], g["w"], rtol=0, atol=1e-14)


@pytest.mark.parametrize(("layerwise", "min_numel"), [(True, 4), (True, 20), (False, 4)])
def test_matches_torchzero_over_ten_steps(layerwise, min_numel):
    tz = require_torchzero()
    batches = make_batches(10, seed=2)
    reference = torchzero_trained(make_mlp(), [tz.m.LaplacianSmoothing(1.5, layerwise, min_numel), tz.m.LR(0.1)], batches)
    ours = ifn.chain(ifn.laplacian_smoothing(1.5, layerwise, min_numel), ifn.scale_by_learning_rate(0.1))
    params = functional_trained(ours, batches)
    for name, value in reference.items():
        torch.testing.assert_close(params[name], value, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layerwise", [True, False])
def test_vmap_over_members_equals_the_loop(layerwise):
    assert_vmap_equals_loop(ifn.chain(ifn.laplacian_smoothing(1.0, layerwise), ifn.sgd(0.1, momentum=0.9)), steps=4)


def test_state_dict_resume_is_bit_identical_and_degenerate_gradients_stay_finite():
    factory = lambda: ifn.chain(ifn.laplacian_smoothing(), ifn.adam(1e-2))  # noqa: E731
    assert_resume_is_bit_identical(factory, make_batches(8, seed=3), split=4)
    tx = ifn.laplacian_smoothing()
    params = params_of(make_mlp())
    for grads in (ifn.tree_zeros_like(params), ifn.tree_ones_like(params), ifn.tree_scale(ifn.tree_ones_like(params), -1.0)):
        out, _ = tx.update(grads, tx.init(params), params)
        assert bool(ifn.tree_all_finite(out))


def test_bad_min_numel_is_refused():
    with pytest.raises(ValueError, match="min_numel must be a non-negative int"):
        ifn.laplacian_smoothing(min_numel=-1)
