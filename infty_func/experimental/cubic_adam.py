"""Cubic Adam: Adam with a third moment, stepping to the minimiser of a cubic model."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like

__all__ = ["cubic_adam", "CubicAdamState", "cubic_step"]

CubicAdamMode = Literal["signed_cbrt", "unsigned_cbrt", "halve"]
CUBIC_ADAM_MODES = ("signed_cbrt", "unsigned_cbrt", "halve")


class CubicAdamState(NamedTuple):
    count: Tensor  # int64: updates taken
    mu: PyTree  # EMA of g
    nu: PyTree  # EMA of g²
    cu: PyTree  # EMA of g³


def check_cubic_adam_arguments(method: str, betas: dict, eps: float, mode: str) -> None:
    """``ValueError`` naming ``method`` for a beta outside ``[0, 1)``, a non-positive
    ``eps`` or an unknown ``mode``."""
    for name, beta in betas.items():
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(f"{method}: {name} must be in [0, 1), got {beta!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0.0:
        raise ValueError(f"{method}: eps must be > 0 (it bounds the cubic's leading coefficient away from 0), got {eps!r}")
    if mode not in CUBIC_ADAM_MODES:
        raise ValueError(f"{method}: mode must be one of {CUBIC_ADAM_MODES}, got {mode!r}")


def _leading_coefficient(m3: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """The cubic's ``A`` from the third moment, and ``|A|`` (fresh tensors, possibly one)."""
    if mode == "halve":
        a = m3 * 0.5
        return a, a.abs()
    root = m3.abs().pow_(1.0 / 3.0)
    return (root.copysign(m3), root) if mode == "signed_cbrt" else (root, root)


def _cubic_value_at_minus(y: Tensor, a_third: Tensor, b_half: Tensor, c: Tensor) -> Tensor:
    """``q(−y) = y·(y·(B/2 − (A/3)·y) − C)`` for ``q(x) = (A/3)x³ + (B/2)x² + Cx`` (Horner
    form; only used to compare two points)."""
    return torch.addcmul(b_half, a_third, y, value=-1.0).mul_(y).sub_(c).mul_(y)


def cubic_step(m1: Tensor, m2: Tensor, m3: Tensor, mode: str, eps: float) -> Tensor:
    """Minus the step that minimises ``(A/3) x³ + (B/2) x² + C x`` per entry, from the
    (debiased) moments: ``C = m1``, ``B = √m2`` and ``A`` from ``m3`` by ``mode``; see
    :func:`cubic_adam`. Gradient-like: subtract it (after a learning rate). Inputs are not
    modified; temporaries are reused in place (a 1M-entry step makes few passes)."""
    a, a_magnitude = _leading_coefficient(m3, mode)
    b = m2.sqrt()
    discriminant = torch.mul(b, b).sub_(torch.mul(a, 4.0).mul_(m1))  # B² − 4AC, in torchzero's order
    # D = sign(A)·max(|2A|, eps). A = ±0 gives ±eps: torchzero's sign(0) = 0 makes D = 0
    # and the step NaN. copysign, not where: torch.where branches per entry on CPU.
    denominator = torch.mul(a_magnitude, 2.0).clamp_min_(eps).copysign_(a)
    # √|B² − 4AC| where torchzero takes √max(B² − 4AC, 0): the same wherever it is used (a
    # negative discriminant selects Adam's step), and CPU square roots of 0 are slow.
    root = discriminant.abs().sqrt_()
    # The output is −x: y± = −x± = (B ∓ √(B² − 4AC)) / D.
    y_plus = torch.sub(b, root).div_(denominator)
    y_minus = root.add_(b).div_(denominator)
    # A cubic without a local minimum (negative discriminant) falls back to Adam's step.
    adam = torch.div(m1, torch.add(b, eps))
    a_third, b_half = a.div_(3.0), b.mul_(0.5)
    better = _cubic_value_at_minus(y_plus, a_third, b_half, m1) < _cubic_value_at_minus(y_minus, a_third, b_half, m1)
    return torch.where(discriminant < 0, adam, torch.where(better, y_plus, y_minus))


def cubic_adam(
    beta1: float = 0.9,
    beta2: float = 0.99,
    beta3: float = 0.99,
    eps: float = 1e-8,
    mode: CubicAdamMode = "signed_cbrt",
    debiased: bool = True,
) -> GradientTransformation:
    """Cubic Adam (torchzero's experimental ``CubicAdam``): Adam's two moments plus a third,
    and per entry a step to the local minimum of a cubic model instead of Adam's quadratic.

    ``m ← lerp(m, g, 1−β₁)``, ``v ← lerp(v, g², 1−β₂)``, ``s ← lerp(s, g³, 1−β₃)``; with
    ``debiased`` each is divided by ``1 − βᵢᵗ``. Then ``C = m``, ``B = √v`` and
    ``A = sign(s)|s|^⅓`` (``mode="signed_cbrt"``), ``|s|^⅓`` (``"unsigned_cbrt"``) or
    ``s/2`` (``"halve"``), and the step ``x*`` aims at the local minimum of
    ``q(x) = (A/3)x³ + (B/2)x² + Cx``: the candidates are ``x± = (−B ± √(B² − 4AC)) / D``
    with ``D = sign(A)·max(|2A|, eps)`` (the roots of ``q′ = Ax² + Bx + C`` when
    ``|2A| ≥ eps``, ``x+`` the minimum), ``x*`` is the one with the smaller ``q``; when
    ``B² − 4AC < 0`` (no local minimum) ``x* = −C / (B + eps)``, Adam's step. The output is
    ``−x*``, gradient-like as Adam's ``m / √v``: chain it with a learning rate
    (``ifn.chain(cubic_adam(), ifn.scale_by_learning_rate(lr))``). For ``A → 0`` the local
    minimum tends to Adam's ``−C/B``, but once ``|2A| < eps`` the clip on ``D`` pulls
    ``x+`` towards 0 instead, as in torchzero.

    Args:
        beta1, beta2, beta3: decay rates of the first, second and third moments, in
            ``[0, 1)`` (torchzero's defaults 0.9, 0.99, 0.99).
        eps: lower bound on ``|2A|`` and Adam's denominator offset, ``> 0`` (1e-8).
        mode: how ``A`` comes from the third moment (see above).
        debiased: divide the moments by ``1 − βᵢᵗ`` as Adam does.

    No paper: an experiment in torchzero 0.4.4. Differences from torchzero: where ``A`` is
    exactly 0 (an entry whose gradients were all 0, e.g. a dead unit) torchzero's
    ``D = sign(0)·eps`` is 0 and its step NaN; here ``D`` takes the sign bit of ``A``
    (``+eps``: the moments give ``+0``), the limit of torchzero's own step as ``A → 0⁺``
    (0 when ``B² > C·eps``), finite. Elsewhere the numbers are torchzero's (bit for bit in
    the tests). torchzero's ``alpha`` (a factor on the output) is ``ifn.scale(alpha)`` in
    a chain.
    """
    check_cubic_adam_arguments("cubic_adam", {"beta1": beta1, "beta2": beta2, "beta3": beta3}, eps, mode)

    def init_fn(params):
        zeros = lambda: tree_zeros_like(params)  # noqa: E731
        return CubicAdamState(count=torch.zeros((), dtype=torch.int64), mu=zeros(), nu=zeros(), cu=zeros())

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        count = state.count + 1
        grads, spec = tree_flatten(updates)
        mu, nu, cu = (tree_flatten(tree)[0] for tree in (state.mu, state.nu, state.cu))
        t = count.to(torch.float64)
        corrections = [1.0 - torch.as_tensor(beta, dtype=torch.float64) ** t for beta in (beta1, beta2, beta3)]
        out, new_mu, new_nu, new_cu = [], [], [], []
        for g, m, v, s in zip(grads, mu, nu, cu):
            m = torch.lerp(m, g, 1.0 - beta1)
            square = torch.mul(g, g)
            v = torch.lerp(v, square, 1.0 - beta2)
            s = torch.lerp(s, square.mul_(g), 1.0 - beta3)
            if debiased:
                # per-member corrections in the leaf's dtype (a batched float64 scalar
                # would widen the whole computation under vmap)
                c1, c2, c3 = (c.to(g.dtype) for c in corrections)
                out.append(cubic_step(m / c1, v / c2, s / c3, mode, eps))
            else:
                out.append(cubic_step(m, v, s, mode, eps))
            new_mu.append(m)
            new_nu.append(v)
            new_cu.append(s)
        unflat = lambda leaves: tree_unflatten(leaves, spec)  # noqa: E731
        return unflat(out), CubicAdamState(count=count, mu=unflat(new_mu), nu=unflat(new_nu), cu=unflat(new_cu))

    return GradientTransformation(init_fn, update_fn)
