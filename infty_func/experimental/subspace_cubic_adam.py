"""Cubic Adam in the low-rank eigenbasis of recent gradients (GGT's basis)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import cond
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten
from infty_func.experimental.cubic_adam import CubicAdamMode, check_cubic_adam_arguments, cubic_step

__all__ = ["subspace_cubic_adam", "SubspaceCubicAdamState"]


class SubspaceCubicAdamState(NamedTuple):
    count: Tensor  # int64: updates taken
    history: PyTree  # each leaf [slots, *leaf.shape]: a ring buffer of recent updates
    gram: Tensor  # [slots, slots]: inner products of the buffered updates
    basis: Tensor  # [slots, slots]: column i holds basis vector i's coefficients on the slots
    mu: Tensor  # [slots]: EMA of the projected update, one entry per basis vector
    nu: Tensor  # [slots]: EMA of its square
    cu: Tensor  # [slots]: EMA of its cube


def _check_arguments(rank, update_freq, truncate, eig_tol, damping) -> None:
    for name, value in (("rank", rank), ("update_freq", update_freq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"subspace_cubic_adam: {name} must be an int >= 1, got {value!r}")
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1):
        raise ValueError(f"subspace_cubic_adam: truncate must be None or an int >= 1, got {truncate!r}")
    for name, value in (("eig_tol", eig_tol), ("damping", damping)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"subspace_cubic_adam: {name} must be a number >= 0, got {value!r}")


def _eigenbasis(gram: Tensor, count: Tensor, rank: int, truncate: int | None, eig_tol: float, damping: float) -> Tensor:
    """The coefficients ``P`` of the basis ``U = M P`` (``M``: the buffered updates as
    columns) from the eigenpairs ``(L, q)`` of ``MᵀM + damping·I`` over the window of the
    last ``rank`` updates: ``P[:, i] = qᵢ / √Lᵢ`` for the kept pairs, 0 for the others."""
    slots = gram.shape[0]
    index = torch.arange(slots, device=gram.device)
    age = torch.remainder(count - index, slots)  # how many updates ago each slot was written
    window = (age < rank) & (age <= count)
    newest = age == 0
    # Slots outside the window get a negative eigenvalue of their own, so they sort first.
    outside = torch.where(window, torch.diagonal(gram), 0.0).max() + damping
    inside = window[:, None] & window[None, :]
    matrix = torch.where(inside, gram, 0.0) + torch.diag_embed(torch.where(window, damping, -outside))
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    kept = (index >= slots - torch.clamp(count + 1, max=rank)) & (eigenvalues > eig_tol * eigenvalues[-1])
    if truncate is not None:
        kept = kept & (index >= slots - truncate)
    # Eigenvector signs are arbitrary; fix them so that each basis vector has a
    # non-negative inner product with the newest update (entry of q on its slot ≥ 0).
    signs = torch.where((vectors * newest[:, None]).sum(0) < 0, -1.0, 1.0).to(vectors.dtype)
    scale = torch.where(kept, eigenvalues, 1.0).rsqrt() * signs
    return torch.where(kept, vectors * scale, 0.0)


def subspace_cubic_adam(
    rank: int = 100,
    beta1: float = 0.9,
    beta2: float = 0.95,
    beta3: float = 0.95,
    eps: float = 1e-8,
    mode: CubicAdamMode = "signed_cbrt",
    update_freq: int = 1,
    truncate: int | None = None,
    eig_tol: float = 1e-7,
    damping: float = 1e-4,
) -> GradientTransformation:
    """Cubic Adam in a low-rank eigenbasis (torchzero's experimental ``SubspaceCubicAdam``,
    run as the ``basis_optimizer`` of its ``GGT`` module, which supplies the basis).

    The basis (Agarwal et al. 2019, "Efficient Full-Matrix Adaptive Regularization", GGT):
    keep the last ``rank`` updates as the columns of ``M`` (all leaves as one vector); every
    ``update_freq`` steps take the eigenpairs ``(Lᵢ, qᵢ)`` of ``MᵀM + damping·I``, drop those
    with ``Lᵢ ≤ eig_tol·max L`` and keep the ``truncate`` largest, and set
    ``uᵢ = M qᵢ / √Lᵢ`` (the left singular vectors of ``M``, shrunk by the damping). The
    moments live in that basis; when it changes they are carried over with
    ``C = U_newᵀ U_old``: ``m ← C m``, ``v ← (C∘C) v``, ``s ← (C∘C∘C) s`` (torchzero's
    rule: ``m`` is projected; ``v`` and ``s`` leave out the cross moments, which are not
    kept).

    Each step: ``z = Uᵀ g``; ``m, v, s`` are the EMAs of ``z, z², z³`` (rates
    ``beta1..3``), debiased by ``1 − βᵗ``; the output is ``U d`` with ``d`` cubic Adam's
    step on them (:func:`~infty_func.experimental.cubic_adam.cubic_adam`, ``mode``,
    ``eps``): gradient-like, chain it with a learning rate.

    Args:
        rank: how many recent updates span the basis (GGT's ``history_size``, 100).
        beta1, beta2, beta3, eps, mode: as in ``cubic_adam`` (defaults 0.9, 0.95, 0.95,
            1e-8, ``"signed_cbrt"``, torchzero's ``SubspaceCubicAdam``'s).
        update_freq: recompute the basis every this many steps (GGT's, 1).
        truncate: keep at most this many eigenpairs (``None``: all that pass ``eig_tol``).
        eig_tol, damping: GGT's relative eigenvalue cut-off (1e-7) and damping (1e-4).

    How it is computed: the updates sit in a fixed ring buffer of
    ``rank + update_freq − 1`` slots with their Gram matrix, which each step extends by one
    row (``Mᵀg``, one pass over the buffer). The basis is kept as coefficients ``P``
    (``U = M P``), so ``Uᵀg = Pᵀ(Mᵀg)`` costs nothing more and ``U d = M (P d)`` is a
    second pass; the eigendecomposition and ``C`` are ``slots × slots`` problems. torchzero
    re-stacks the buffer and forms ``MᵀM``, ``M Q`` and ``U_newᵀ U_old`` (three products
    of ``rank² × parameters``) every time. The extra ``update_freq − 1`` slots keep the
    updates an old basis is made of until the next recomputation. The state is never
    written in place, so each step's new buffer is a copy with one row replaced (memory:
    two buffers during a step; torchzero holds its buffer, a stacked copy and ``U``).
    Shapes are fixed (dropped eigenpairs have zero coefficients), so it runs under
    ``torch.func.vmap``.

    Differences from torchzero: eigenvector signs are fixed (each ``uᵢ`` has a
    non-negative inner product with the newest update) where torchzero takes LAPACK's; the
    ``"signed_cbrt"`` and ``"halve"`` steps are the same either way, ``"unsigned_cbrt"``'s
    depend on the signs, so torchzero's result there depends on its LAPACK. ``A = 0`` does
    not give NaN (see ``cubic_adam``). torchzero's ``cautious`` flag is stored but never
    used, and its ``exact_reproject`` computes ``diag(C diag(v) Cᵀ)``, which equals
    ``(C∘C) v``: neither is offered. GGT's ``rdamping`` and ``matrix_power`` only change
    the eigenvalues and the basis' scaling, which this optimizer ignores and fixes at
    ``−½``. torchzero keeps the previous basis when an eigendecomposition fails; here the
    decomposition is of a damped positive semi-definite matrix, and non-finite updates
    give non-finite output (guard with ``ifn.apply_if_finite``).
    """
    check_cubic_adam_arguments("subspace_cubic_adam", {"beta1": beta1, "beta2": beta2, "beta3": beta3}, eps, mode)
    _check_arguments(rank, update_freq, truncate, eig_tol, damping)
    slots = rank + update_freq - 1

    def init_fn(params):
        leaves, spec = tree_flatten(params)
        dtype, device = leaves[0].dtype, leaves[0].device
        history = [torch.zeros(slots, *leaf.shape, dtype=leaf.dtype, device=leaf.device) for leaf in leaves]
        square = torch.zeros(slots, slots, dtype=dtype, device=device)
        vector = torch.zeros(slots, dtype=dtype, device=device)
        return SubspaceCubicAdamState(
            count=torch.zeros((), dtype=torch.int64, device=device),
            history=tree_unflatten(history, spec),
            gram=square,
            basis=square.clone(),
            mu=vector,
            nu=vector.clone(),
            cu=vector.clone(),
        )

    def rebase(gram, cross, state):
        basis = _eigenbasis(gram, state.count, rank, truncate, eig_tol, damping)
        change = basis.T @ cross @ state.basis  # U_newᵀ U_old
        square = change * change
        return basis, change @ state.mu, square @ state.nu, (square * change) @ state.cu

    def keep(gram, cross, state):
        return state.basis, state.mu, state.nu, state.cu

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        grads, spec = tree_flatten(updates)
        history, _ = tree_flatten(state.history)
        flat_grads = [g.reshape(-1) for g in grads]
        flat_history = [h.reshape(slots, -1) for h in history]
        index = torch.remainder(state.count, slots).reshape(1)
        slot = torch.arange(slots, device=state.gram.device) == index
        old_products = sum(h @ g for h, g in zip(flat_history, flat_grads))  # Mᵀg before the write
        products = torch.where(slot, sum(g @ g for g in flat_grads), old_products)  # Mᵀg after it
        # a copy of the buffer with one row replaced (index_copy copies; torch.where
        # branches per entry on CPU, several times slower)
        new_history = [torch.index_copy(h, 0, index, g.unsqueeze(0)) for h, g in zip(flat_history, flat_grads)]
        gram = torch.where(slot[:, None], products, torch.where(slot, products[:, None], state.gram))
        cross = torch.where(slot[:, None], old_products, state.gram)  # M_newᵀ M_old
        if update_freq == 1:
            basis, mu, nu, cu = rebase(gram, cross, state)
        else:
            basis, mu, nu, cu = cond(torch.remainder(state.count, update_freq) == 0, rebase, keep, gram, cross, state)
        z = basis.T @ products  # Uᵀg
        count = state.count + 1
        mu = torch.lerp(mu, z, 1.0 - beta1)
        square = z * z
        nu = torch.lerp(nu, square, 1.0 - beta2)
        cu = torch.lerp(cu, square * z, 1.0 - beta3)
        t = count.to(torch.float64)
        c1, c2, c3 = ((1.0 - torch.as_tensor(b, dtype=torch.float64) ** t).to(mu.dtype) for b in (beta1, beta2, beta3))
        coefficients = basis @ cubic_step(mu / c1, nu / c2, cu / c3, mode, eps)  # U d = M (P d)
        out = [(coefficients @ h).reshape(g.shape) for h, g in zip(new_history, grads)]
        new_state = SubspaceCubicAdamState(
            count=count,
            history=tree_unflatten([h.reshape(slots, *g.shape) for h, g in zip(new_history, grads)], spec),
            gram=gram,
            basis=basis,
            mu=mu,
            nu=nu,
            cu=cu,
        )
        return tree_unflatten(out, spec), new_state

    return GradientTransformation(init_fn, update_fn)
