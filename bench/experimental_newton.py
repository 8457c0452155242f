"""Hessian-vector-product modules: one whole training step of ours next to torchzero's on
a small MLP with a closure.

Ours is ``ifn.step`` (loss, gradient, the module's Hessian products, a learning rate, the
parameter update); torchzero's is ``Optimizer.step(closure)`` with the same module and
``LR``. Both build their products from the same batch. The solvers are held to the same
work: ``newton_solver`` runs 10 conjugate-gradient iterations (torchzero's NewtonSolver 10
L-BFGS steps on its least-squares problem, two products each, with ``tol=None``), and
``scipy_newton_cg`` SciPy's ``cg`` for 10 iterations on both sides. ``newton_newton``
forms third derivatives, so it runs on a 67-parameter MLP; the others on a 2.6k-parameter
one. Step sizes are small enough that no run diverges over the repeats (Newton steps on
an MLP's indefinite Hessian can be huge).

Run: python bench/experimental_newton.py [--repeats N] [--threads T]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import functional_stepper, mlp, parse_bench_arguments, print_case_ratios, torchzero_closure  # noqa: E402

import infty_func as ifn  # noqa: E402
from infty_func.experimental.curveball import curveball  # noqa: E402
from infty_func.experimental.grad_min import grad_min  # noqa: E402
from infty_func.experimental.newton_newton import newton_newton  # noqa: E402
from infty_func.experimental.newton_solver import newton_solver  # noqa: E402
from infty_func.experimental.scipy_newton_cg import scipy_newton_cg  # noqa: E402

SIZES = (32, 64, 8)  # 2.6k parameters
SMALL_SIZES = (4, 8, 3)  # 67 parameters, for the dense third derivatives of newton_newton
BATCH = 64
ITERATIONS = 10


def _batch(sizes):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, sizes[0], generator=generator), torch.randint(0, sizes[-1], (BATCH,), generator=generator)


def _ours(transform: ifn.GradientTransformation, lr: float, sizes) -> Callable[[], object]:
    model = mlp(sizes)
    x, y = _batch(sizes)
    loss_fn = lambda params: nn.functional.cross_entropy(functional_call(model, params, (x,)), y)  # noqa: E731
    return functional_stepper(model, ifn.chain(transform, ifn.scale_by_learning_rate(lr)), loss_fn)


def _torchzero(module: Callable, lr: float, sizes) -> Callable[[], object] | None:
    try:
        import torchzero as tz
    except ImportError:
        return None
    model = mlp(sizes)
    x, y = _batch(sizes)
    opt = tz.Optimizer(model.parameters(), module(tz.m.experimental), tz.m.LR(lr))

    closure = torchzero_closure(opt, lambda: nn.functional.cross_entropy(model(x), y))
    return lambda: opt.step(closure)


def _scipy_cg(tz_solver_kwargs: dict) -> Callable:
    import scipy.sparse.linalg

    return lambda m: m.ScipyNewtonCG(scipy.sparse.linalg.cg, kwargs=tz_solver_kwargs)


CASES = {
    "curveball": (lambda: curveball(), lambda m: m.CurveBall(), 1.0, SIZES),
    f"newton_solver ({ITERATIONS} it.)": (
        lambda: newton_solver(maxiter=ITERATIONS, tol=None),
        lambda m: m.NewtonSolver(maxiter=ITERATIONS, tol=None),
        0.1,
        SIZES,
    ),
    f"scipy_newton_cg (cg, {ITERATIONS} it.)": (
        lambda: scipy_newton_cg("cg", options={"maxiter": ITERATIONS}),
        _scipy_cg({"maxiter": ITERATIONS}),
        0.1,
        SIZES,
    ),
    "newton_newton (order 3)": (lambda: newton_newton(), lambda m: m.NewtonNewton(), 1e-3, SMALL_SIZES),
    "grad_min": (lambda: grad_min(), lambda m: m.GradMin(None), 0.1, SIZES),
}


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    """``(name, our step, torchzero's step)`` per module, a learning rate after each."""
    return [(name, _ours(ours(), lr, sizes), _torchzero(theirs, lr, sizes)) for name, (ours, theirs, lr, sizes) in CASES.items()]


def main() -> None:
    args = parse_bench_arguments(__doc__)
    print(f"{'module':<44}{'ours ms':>10}{'torchzero ms':>14}{'ratio':>8}")
    print_case_ratios(cases(), args.repeats)


if __name__ == "__main__":
    main()
