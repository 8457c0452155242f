"""Cubic Adam in GGT's low-rank eigenbasis: torchzero's numbers (GGT with the
SubspaceCubicAdam basis optimizer), what the basis is, and the properties every transform
keeps."""

from __future__ import annotations

import importlib

import pytest
import torch

import infty_func as ifn
from infty_func.experimental.subspace_cubic_adam import subspace_cubic_adam
from tests.adapter_runs import assert_resume_is_bit_identical, functional_trained
from tests.conftest import make_batches, make_mlp, params_of
from tests.torchzero_runs import torchzero_trained
from tests.vmap_loop import assert_vmap_equals_loop

LR = 0.05

# (rank, update_freq, truncate, eig_tol, damping): the buffer wraps (rank < 10 steps), the
# basis is reused between recomputations, truncated, and thinned by the eigenvalue cut-off
# (with damping and without).
SETTINGS = [
    (4, 1, None, 1e-7, 1e-4),
    (4, 3, None, 1e-7, 1e-4),
    (6, 4, 3, 1e-7, 1e-4),
    (8, 2, None, 0.2, 1e-4),
    (5, 1, None, 0.05, 0.0),
]


def torchzero_run(mode, rank, update_freq, truncate, eig_tol, damping, steps=10):
    tz = pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")
    model = make_mlp()
    ggt = tz.m.GGT(
        history_size=rank,
        update_freq=update_freq,
        truncate=truncate,
        eig_tol=eig_tol,
        damping=damping,
        basis_optimizer=tz.m.experimental.SubspaceCubicAdam(mode=mode),
    )
    return torchzero_trained(model, [ggt, tz.m.LR(LR)], make_batches(steps, seed=2))


def our_run(mode, rank, update_freq, truncate, eig_tol, damping, steps=10):
    tx = ifn.chain(
        subspace_cubic_adam(rank, mode=mode, update_freq=update_freq, truncate=truncate, eig_tol=eig_tol, damping=damping),
        ifn.scale_by_learning_rate(LR),
    )
    return functional_trained(tx, make_batches(steps, seed=2))


def assert_same_run(ours, theirs):
    start = params_of(make_mlp())
    assert max((theirs[k] - start[k]).abs().max().item() for k in start) > 1e-2  # the run moved
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-8)  # observed: ≤ 2e-15


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "rank{}-freq{}-trunc{}-tol{}-damp{}".format(*s))
@pytest.mark.parametrize("mode", ["signed_cbrt", "halve"])
def test_matches_torchzero_ggt_with_subspace_cubic_adam_over_ten_steps(mode, setting):
    assert_same_run(our_run(mode, *setting), torchzero_run(mode, *setting))


@pytest.mark.parametrize("setting", SETTINGS[:3], ids=lambda s: "rank{}-freq{}-trunc{}-tol{}-damp{}".format(*s))
def test_unsigned_cbrt_matches_torchzero_once_its_eigenvector_signs_are_fixed_like_ours(setting, monkeypatch):
    """``|s|^⅓`` does not change sign with a basis vector, so this mode's step depends on the
    signs LAPACK picks; torchzero is run with the signs fixed as ours are (each eigenvector's
    entry on the newest gradient non-negative)."""
    pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")
    torch_linalg = importlib.import_module("torchzero.linalg.torch_linalg")
    lapack_eigh = torch_linalg.eigh

    def eigh_with_fixed_signs(matrix, UPLO="L", retry_float64=False):
        eigenvalues, vectors = lapack_eigh(matrix, UPLO=UPLO, retry_float64=retry_float64)
        return eigenvalues, vectors * torch.where(vectors[-1] < 0, -1.0, 1.0)  # the last column of M is the newest

    monkeypatch.setattr(torch_linalg, "eigh", eigh_with_fixed_signs)
    assert_same_run(our_run("unsigned_cbrt", *setting), torchzero_run("unsigned_cbrt", *setting))


def test_a_steady_gradient_gives_the_unit_step_along_it():
    """Constant updates span one direction u = g/|g|; z = uᵀg = |g| has m = |g|, v = |g|²,
    s = |g|³, a cubic without a local minimum, so the step is Adam's z/(|z| + eps)·u."""
    g = {"w": torch.randn(5, 3, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)}
    norm = ifn.tree_norm(g)
    tx = subspace_cubic_adam(rank=3, damping=0.0, eps=1e-8)
    state = tx.init(g)
    for _ in range(5):
        out, state = tx.update(g, state, g)
        expected = ifn.tree_scale(g, float(1 / (norm + 1e-8)))
        for key in g:
            torch.testing.assert_close(out[key], expected[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["signed_cbrt", "unsigned_cbrt", "halve"])
def test_the_step_turns_with_the_gradients(mode):
    """The basis is built from inner products only: rotating every gradient by an
    orthogonal R rotates every step by R (eigenvector signs are fixed by the newest
    gradient, which turns along)."""
    generator = torch.Generator().manual_seed(3)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64, generator=generator))
    grads = [torch.randn(12, dtype=torch.float64, generator=generator) for _ in range(7)]
    tx = subspace_cubic_adam(rank=4, update_freq=2, mode=mode)
    plain, turned = tx.init({"x": grads[0]}), tx.init({"x": grads[0]})
    for g in grads:
        out, plain = tx.update({"x": g}, plain, None)
        out_turned, turned = tx.update({"x": rotation @ g}, turned, None)
        torch.testing.assert_close(out_turned["x"], rotation @ out["x"], rtol=0, atol=1e-10)


def test_the_basis_is_kept_between_recomputations():
    g = lambda seed: {"x": torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))}  # noqa: E731
    tx = subspace_cubic_adam(rank=3, update_freq=3)
    state = tx.init(g(0))
    assert state.history["x"].shape == (3 + 3 - 1, 9)  # the old basis' updates outlive the window
    bases = []
    for step in range(7):
        _, state = tx.update(g(step), state, None)
        bases.append(state.basis)
    assert torch.equal(bases[0], bases[1]) and torch.equal(bases[1], bases[2])
    assert not torch.equal(bases[2], bases[3]) and torch.equal(bases[3], bases[5])
    assert not torch.equal(bases[5], bases[6])
    assert int((bases[6].abs().sum(0) > 0).sum()) == 3  # rank 3: three basis vectors kept


def test_vmap_over_members_equals_the_loop():
    # update_freq 2: the recomputation branch is taken by a batched predicate
    assert_vmap_equals_loop(ifn.chain(subspace_cubic_adam(3, update_freq=2), ifn.sgd(0.05)), steps=5, check_state=True)


def test_state_dict_resume_is_bit_identical():
    factory = lambda: ifn.chain(subspace_cubic_adam(3, update_freq=2), ifn.adam(1e-2))  # noqa: E731
    assert_resume_is_bit_identical(factory, make_batches(7, seed=3), split=3)


def test_zero_gradients_give_a_zero_step_where_torchzero_gives_nan():
    params = params_of(make_mlp())
    tx = subspace_cubic_adam(4)
    state = tx.init(params)
    for grads in (ifn.tree_zeros_like(params), ifn.tree_zeros_like(params), ifn.tree_ones_like(params)):
        out, state = tx.update(grads, state, params)
        assert bool(ifn.tree_all_finite(out))
    zeros, _ = tx.update(ifn.tree_zeros_like(params), tx.init(params), params)
    assert all(bool((leaf == 0).all()) for leaf in ifn.tree_leaves(zeros))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rank": 0}, "subspace_cubic_adam: rank must be an int >= 1"),
        ({"update_freq": 1.5}, "subspace_cubic_adam: update_freq must be an int >= 1"),
        ({"truncate": 0}, "subspace_cubic_adam: truncate must be None or an int >= 1"),
        ({"eig_tol": -1e-3}, "subspace_cubic_adam: eig_tol must be a number >= 0"),
        ({"damping": -1.0}, "subspace_cubic_adam: damping must be a number >= 0"),
        ({"beta2": 1.0}, r"subspace_cubic_adam: beta2 must be in \[0, 1\)"),
        ({"eps": 0.0}, "subspace_cubic_adam: eps must be > 0"),
        ({"mode": "cubic"}, "subspace_cubic_adam: mode must be one of"),
    ],
)
def test_bad_arguments_are_refused_naming_the_method(arguments, message):
    with pytest.raises(ValueError, match=message):
        subspace_cubic_adam(**arguments)
