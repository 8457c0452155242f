"""The Hessian-vector-product modules (curveball, newton_solver, scipy_newton_cg,
newton_newton, grad_min) against torchzero over ten steps, and against dense Newton.

What each one computes and the properties every transform keeps are in
test_newton_properties.py; convergence on the test problems in test_newton_convergence.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev

import infty_func as ifn
from infty_func.experimental.curveball import curveball
from infty_func.experimental.grad_min import grad_min
from infty_func.experimental.newton_newton import newton_newton, newton_newton_preconditioner
from infty_func.experimental.newton_solver import newton_solver
from infty_func.experimental.scipy_newton_cg import scipy_newton_cg
from tests.conftest import make_batches, make_mlp, params_of
from tests.torchzero_runs import torchzero_trained

# Newton steps need a problem where they make sense: L2-damped softmax regression, 3
# features and 2 classes (8 parameters, Hessian positive definite, eigenvalues ≥ 0.1).
SIZES = (3, 2)
DECAY = 0.1


def damped_loss_fn_for(model, x, y, decay=DECAY):
    def loss_fn(params):
        penalty = sum((p**2).sum() for p in params.values())
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y) + 0.5 * decay * penalty

    return loss_fn


def regression_batches(count=10):
    return make_batches(count, seed=2, features=SIZES[0], classes=SIZES[1])


def torchzero_run(tz, modules, model, batches, decay):
    """Train ``model`` with ``tz.Optimizer(..., *modules)`` on the L2-damped cross-entropy."""

    def damped(logits, y):
        return nn.functional.cross_entropy(logits, y) + 0.5 * decay * sum((p**2).sum() for p in model.parameters())

    return torchzero_trained(model, modules, batches, loss=damped)


def functional_run(tx, sizes, batches, decay):
    model = make_mlp(sizes=sizes)
    params = params_of(model)
    state = tx.init(params)
    for x, y in batches:
        params, state, _ = ifn.step(tx, state, params, damped_loss_fn_for(model, x, y, decay))
    return params


def assert_matches_torchzero(modules, tx, atol, sizes=SIZES, batches=None, decay=DECAY):
    tz = pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")
    batches = batches or regression_batches()
    model = make_mlp(sizes=sizes)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torchzero's L-BFGS makes tensors in the default dtype
    try:
        expected = torchzero_run(tz, modules(tz), model, batches, decay)
    finally:
        torch.set_default_dtype(previous)
    actual = functional_run(tx, sizes, batches, decay)
    start = params_of(make_mlp(sizes=sizes))
    assert max((actual[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it moved
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=atol)


def exact_newton_run(batches, lr=1.0):
    """Newton's method with a dense Hessian solve, as an independent reference."""
    model = make_mlp(sizes=SIZES)
    params = params_of(model)
    shapes = {k: v.shape for k, v in params.items()}
    for x, y in batches:
        loss_fn = damped_loss_fn_for(model, x, y)
        flat = torch.cat([v.reshape(-1) for v in params.values()])

        def flat_loss(q, loss_fn=loss_fn):
            parts = torch.split(q, [s.numel() for s in shapes.values()])
            return loss_fn({k: part.reshape(s) for (k, s), part in zip(shapes.items(), parts)})

        flat = flat - lr * torch.linalg.solve(hessian(flat_loss)(flat), grad(flat_loss)(flat))
        parts = torch.split(flat, [s.numel() for s in shapes.values()])
        params = {k: part.reshape(s) for (k, s), part in zip(shapes.items(), parts)}
    return params


# --- torchzero's numbers over ten steps ------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"precond_lr": 1e-2, "momentum": 0.5, "reg": 0.3}])
def test_curveball_matches_torchzero_over_ten_steps(kwargs):
    assert_matches_torchzero(
        lambda tz: [tz.m.experimental.CurveBall(**kwargs), tz.m.LR(1.0)],
        ifn.chain(curveball(**kwargs), ifn.scale_by_learning_rate(1.0)),
        atol=1e-8,
        sizes=(6, 16, 4),
        batches=make_batches(10, seed=2),
        decay=0.0,
    )


def test_newton_solver_matches_torchzero_when_both_solves_converge():
    # torchzero minimises ‖Hx − g‖² with L-BFGS, this runs conjugate gradient on Hx = g:
    # only their converged solutions agree. Observed difference: 3e-7.
    assert_matches_torchzero(
        lambda tz: [tz.m.experimental.NewtonSolver(tol=1e-24, maxiter=40), tz.m.LR(1.0)],
        ifn.chain(newton_solver(tol=1e-24), ifn.scale_by_learning_rate(1.0)),
        atol=1e-5,
    )


def test_newton_solver_run_to_convergence_is_newtons_method():
    batches = regression_batches()
    actual = functional_run(ifn.chain(newton_solver(tol=1e-24), ifn.scale_by_learning_rate(1.0)), SIZES, batches, DECAY)
    expected = exact_newton_run(batches)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("method", "warm_start", "options"),
    [("gcrotmk", False, None), ("cg", True, {"rtol": 1e-3}), ("minres", False, None)],
)
def test_scipy_newton_cg_matches_torchzero_over_ten_steps(method, warm_start, options):
    import scipy.sparse.linalg

    assert_matches_torchzero(
        lambda tz: [
            tz.m.experimental.ScipyNewtonCG(getattr(scipy.sparse.linalg, method), warm_start=warm_start, kwargs=options),
            tz.m.LR(1.0),
        ],
        ifn.chain(scipy_newton_cg(method, warm_start=warm_start, options=options), ifn.scale_by_learning_rate(1.0)),
        atol=1e-8,
    )


@pytest.mark.parametrize("kwargs", [{"order": 2}, {}, {"order": 3, "update_freq": 3}, {"order": 3, "reg": 0.5}])
def test_newton_newton_matches_torchzero_over_ten_steps(kwargs):
    assert_matches_torchzero(
        lambda tz: [tz.m.experimental.NewtonNewton(**kwargs), tz.m.LR(0.5)],
        ifn.chain(newton_newton(**kwargs), ifn.scale_by_learning_rate(0.5)),
        atol=1e-8,
    )


def test_newton_newton_of_order_two_without_damping_is_newtons_method():
    batches = regression_batches()
    actual = functional_run(ifn.chain(newton_newton(2, reg=0.0), ifn.scale_by_learning_rate(1.0)), SIZES, batches, DECAY)
    for name, value in exact_newton_run(batches).items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=1e-12)


def test_newton_newton_of_order_four_solves_with_the_whole_jacobian_where_torchzero_reads_one_triangle():
    tz = pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")
    model = make_mlp(sizes=SIZES)
    x, y = regression_batches(1)[0]
    loss_fn = damped_loss_fn_for(model, x, y)
    shapes = {k: v.shape for k, v in params_of(model).items()}

    def flat_loss(q):
        parts = torch.split(q, [s.numel() for s in shapes.values()])
        return loss_fn({k: part.reshape(s) for (k, s), part in zip(shapes.items(), parts)})

    start = torch.cat([v.reshape(-1) for v in params_of(model).values()])
    reg, eye = 1e-6, torch.eye(start.numel(), dtype=start.dtype)

    def newton_step(q):  # x₁ = H₁⁻¹ ∇f
        return torch.linalg.solve(jacrev(grad(flat_loss))(q) + reg * eye, grad(flat_loss)(q))

    def second_step(q):  # x₂ = H₂⁻¹ x₁ with H₂ = ∂x₁/∂θ + reg·I, nonsymmetric
        return torch.linalg.solve(jacrev(newton_step)(q) + reg * eye, newton_step(q))

    jacobians = [jacrev(grad(flat_loss))(start), jacrev(newton_step)(start), jacrev(second_step)(start)]
    expected = (jacobians[0] + reg * eye) @ (jacobians[1] + reg * eye) @ (jacobians[2] + reg * eye)
    ours = newton_newton_preconditioner(flat_loss, start, 4, reg)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-10)

    module = tz.m.experimental.NewtonNewton(order=4)
    opt = tz.Optimizer(model.parameters(), module)

    def closure(backward=True):
        loss = flat_loss(torch.cat([p.reshape(-1) for p in model.parameters()]))
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert (module.global_state["P"] - expected).abs().max() > 1e-3  # Cholesky of a nonsymmetric H₂


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"square": True, "mean": False},
        {"loss_term": 0.5, "relative": "loss_to_grad"},
        {"loss_term": 1.0, "graft": "loss_to_grad"},
        {"loss_term": 0.3, "graft": "grad_to_loss"},
        {"relative": "grad_to_loss", "maximize_grad": True},
    ],
)
def test_grad_min_matches_torchzero_over_ten_steps(kwargs):
    assert_matches_torchzero(
        lambda tz: [tz.m.experimental.GradMin(tz.m.LR(0.1), **kwargs)],
        ifn.chain(grad_min(**kwargs), ifn.scale_by_learning_rate(0.1)),
        atol=1e-8,
        sizes=(6, 16, 4),
        batches=make_batches(10, seed=2),
        decay=0.0,
    )
