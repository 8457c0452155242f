"""The Hessian-vector-product modules: what each one computes (closed forms on small
quadratics), and the properties every transform keeps (vmap, resume, errors, degenerate
inputs)."""

from __future__ import annotations

import io

import pytest
import torch
from torch.func import grad, stack_module_state, vmap

import infty_func as ifn
from infty_func.experimental.curveball import curveball
from infty_func.experimental.grad_min import grad_min, grad_min_objective
from infty_func.experimental.newton_newton import newton_newton
from infty_func.experimental.newton_solver import conjugate_gradient, newton_solver
from infty_func.experimental.scipy_newton_cg import scipy_newton_cg
from infty_func.optim.checkpoint import restored, saved_leaves
from tests.adapter_runs import adapter_run
from tests.conftest import make_batches, make_mlp, params_of
from tests.experimental.test_newton import SIZES, damped_loss_fn_for, regression_batches
from tests.vmap_loop import assert_vmap_equals_loop

# --- what each one computes ------------------------------------------------------------


def quadratic_problem(dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(torch.linspace(1.0, 10.0, dim, dtype=torch.float64)) @ basis.T
    vector = torch.randn(dim, generator=generator, dtype=torch.float64)
    return matrix, vector, lambda p: 0.5 * p["x"] @ matrix @ p["x"] - vector @ p["x"]


def test_curveball_takes_one_heavy_ball_step_on_the_damped_quadratic_model():
    matrix, vector, loss_fn = quadratic_problem()
    params = {"x": torch.randn(6, dtype=torch.float64)}
    z = torch.randn(6, dtype=torch.float64)
    gradient = matrix @ params["x"] - vector
    tx = curveball(precond_lr=0.05, momentum=0.8, reg=0.5)
    out, state = tx.update({"x": gradient}, tx.init(params)._replace(z={"x": z}), params, loss_fn=loss_fn)
    expected_z = 0.8 * z - 0.05 * (matrix @ z + 0.5 * z + gradient)
    torch.testing.assert_close(state.z["x"], expected_z, rtol=0, atol=1e-14)
    torch.testing.assert_close(out["x"], -expected_z, rtol=0, atol=1e-14)


def test_conjugate_gradient_solves_a_positive_definite_system_and_stops_at_its_tolerance():
    matrix, vector, _ = quadratic_problem(8)
    operator = lambda v: {"x": matrix @ v["x"]}
    exact = torch.linalg.solve(matrix, vector)
    torch.testing.assert_close(conjugate_gradient(operator, {"x": vector}, tol=None)["x"], exact, rtol=0, atol=1e-12)
    rough = conjugate_gradient(operator, {"x": vector}, tol=1e-2)["x"]
    residual = (matrix @ rough - vector).square().sum()
    assert residual <= 1e-2 * vector.square().sum() and not torch.allclose(rough, exact, atol=1e-8)


def test_conjugate_gradient_goes_on_through_negative_curvature_to_the_indefinite_solution():
    matrix = torch.diag(torch.tensor([3.0, -1.0, 2.0, -4.0], dtype=torch.float64))
    rhs = torch.tensor([1.0, 1.0, 1.0, 0.5], dtype=torch.float64)  # bᵀAb > 0 at the start
    solution = conjugate_gradient(lambda v: matrix @ v, rhs, tol=None)
    torch.testing.assert_close(solution, torch.linalg.solve(matrix, rhs), rtol=0, atol=1e-12)


def test_conjugate_gradient_falls_back_to_the_scaled_rhs_on_nonpositive_first_curvature():
    rhs = torch.tensor([1.0, 2.0], dtype=torch.float64)
    negative = conjugate_gradient(lambda v: -2.0 * v, rhs)
    torch.testing.assert_close(negative, rhs / 2.0, rtol=0, atol=1e-15)  # b·bᵀb/|bᵀAb|
    assert torch.equal(conjugate_gradient(lambda v: 0.0 * v, rhs), rhs)  # a linear objective


def test_newton_solver_takes_any_solver_and_warm_starts_it_from_the_last_solution():
    matrix, vector, loss_fn = quadratic_problem()
    seen = []

    def direct(operator, rhs):
        seen.append(rhs["x"].clone())
        columns = torch.stack([operator({"x": e})["x"] for e in torch.eye(6, dtype=torch.float64)], dim=1)
        return {"x": torch.linalg.solve(columns, rhs["x"])}

    params = {"x": torch.zeros(6, dtype=torch.float64)}
    tx = newton_solver(direct, reg=0.5)
    state = tx.init(params)
    gradient = {"x": matrix @ params["x"] - vector}
    out, state = tx.update(gradient, state, params, loss_fn=loss_fn)
    damped = matrix + 0.5 * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(out["x"], torch.linalg.solve(damped, gradient["x"]), rtol=0, atol=1e-12)
    out, state = tx.update(gradient, state, params, loss_fn=loss_fn)
    assert seen[1].abs().max() < 1e-12  # warm-started at the answer: nothing left to solve
    torch.testing.assert_close(out["x"], torch.linalg.solve(damped, gradient["x"]), rtol=0, atol=1e-12)


def test_newton_solver_limits_the_first_solve_with_maxiter1():
    matrix, vector, loss_fn = quadratic_problem(8)
    params = {"x": torch.zeros(8, dtype=torch.float64)}
    gradient = {"x": -vector}
    one_iteration = newton_solver(maxiter=8, maxiter1=1, tol=None, warm_start=False)
    out, state = one_iteration.update(gradient, one_iteration.init(params), params, loss_fn=loss_fn)
    # one conjugate-gradient iteration from zero: the exact line minimiser along −b
    torch.testing.assert_close(out["x"], -vector * (vector @ vector) / (vector @ matrix @ vector), rtol=0, atol=1e-14)
    out, _ = one_iteration.update(gradient, state, params, loss_fn=loss_fn)
    torch.testing.assert_close(out["x"], -torch.linalg.solve(matrix, vector), rtol=0, atol=1e-10)


def test_grad_min_descends_the_gradient_magnitude_in_closed_form():
    matrix, vector, loss_fn = quadratic_problem()
    params = {"x": torch.randn(6, dtype=torch.float64)}
    residual = matrix @ params["x"] - vector  # ∇f
    squared = grad_min(square=True, mean=False)
    out, _ = squared.update(None, squared.init(params), params, loss_fn=loss_fn)
    torch.testing.assert_close(out["x"], 2 * matrix @ residual, rtol=0, atol=1e-12)
    absolute = grad_min()
    out, _ = absolute.update(None, absolute.init(params), params, loss_fn=loss_fn)
    torch.testing.assert_close(out["x"], matrix @ torch.sign(residual) / 6, rtol=0, atol=1e-14)


def test_grad_min_is_drawn_to_a_maximum_as_much_as_to_a_minimum():
    # The impracticality torchzero warns of: f = −‖x‖² has its maximum at 0, where ∇f = 0.
    loss_fn = lambda p: -(p["x"] ** 2).sum()
    params = {"x": torch.tensor([0.5, -0.25], dtype=torch.float64)}
    tx = ifn.chain(grad_min(square=True), ifn.scale_by_learning_rate(0.1))
    state = tx.init(params)
    for _ in range(30):
        params, state, _ = ifn.step(tx, state, params, loss_fn)
    assert params["x"].abs().max() < 1e-3


def test_grad_min_objective_is_the_value_that_grad_min_descends():
    _, _, loss_fn = quadratic_problem()
    params = {"x": torch.randn(6, dtype=torch.float64)}
    objective = grad_min_objective(loss_fn, loss_term=0.5, square=True)
    tx = grad_min(loss_term=0.5, square=True)
    out, _ = tx.update(None, tx.init(params), params, loss_fn=loss_fn)
    torch.testing.assert_close(out["x"], grad(objective)(params)["x"], rtol=0, atol=1e-14)
    expected = (grad(loss_fn)(params)["x"] ** 2).mean() + 0.5 * loss_fn(params)
    torch.testing.assert_close(objective(params), expected, rtol=0, atol=1e-14)


# --- vmap, resume, errors, degenerate inputs --------------------------------------------


def test_curveball_and_grad_min_under_vmap_equal_the_loop():
    assert_vmap_equals_loop(ifn.chain(curveball(), ifn.scale_by_learning_rate(0.1)), steps=3, check_state=True)
    assert_vmap_equals_loop(ifn.chain(grad_min(loss_term=0.2), ifn.scale_by_learning_rate(0.1)), steps=3)


@pytest.mark.parametrize("kwargs", [{"maxiter": 20}, {"maxiter": 5, "maxiter1": 12}, {"maxiter": 10, "tol": None}])
def test_newton_solver_under_vmap_equals_the_loop(kwargs):
    # A positive definite Hessian (decay 1): solves of indefinite systems amplify the
    # rounding differences between batched and single products beyond any fixed atol.
    loss_for = lambda model, x, y: damped_loss_fn_for(model, x, y, decay=1.0)
    assert_vmap_equals_loop(ifn.chain(newton_solver(**kwargs), ifn.scale_by_learning_rate(1.0)), 3, loss_for, atol=1e-9)


@pytest.mark.parametrize("kwargs", [{"order": 2}, {"order": 3, "update_freq": 2}])
def test_newton_newton_under_vmap_equals_the_loop(kwargs):
    # The 180-parameter test MLP would need 180² third-derivative products per step: stack
    # four softmax regressions instead, each on its own batches.
    models = [make_mlp(seed, sizes=SIZES) for seed in range(4)]
    stacked, _ = stack_module_state(models)
    stacked = {k: v.detach() for k, v in stacked.items()}
    batches = [make_batches(3, seed=20 + m, features=SIZES[0], classes=SIZES[1]) for m in range(4)]
    tx = ifn.chain(newton_newton(**kwargs), ifn.scale_by_learning_rate(0.5))

    def train_step(p, s, x, y):
        return ifn.step(tx, s, p, damped_loss_fn_for(models[0], x, y))[:2]

    states = vmap(tx.init)(stacked)
    for t in range(3):
        xs = torch.stack([batches[m][t][0] for m in range(4)])
        ys = torch.stack([batches[m][t][1] for m in range(4)])
        stacked, states = vmap(train_step)(stacked, states, xs, ys)
    for m in range(4):
        params, state = params_of(models[m]), tx.init(params_of(models[m]))
        for x, y in batches[m]:
            params, state = train_step(params, state, x, y)
        for key, value in params.items():
            torch.testing.assert_close(stacked[key][m], value, rtol=0, atol=1e-10)


def test_scipy_newton_cg_refuses_vmap_with_a_clear_error():
    tx = ifn.chain(scipy_newton_cg(), ifn.scale_by_learning_rate(1.0))
    models = [make_mlp(seed, sizes=SIZES) for seed in range(2)]
    stacked, _ = stack_module_state(models)
    stacked = {k: v.detach() for k, v in stacked.items()}
    x, y = regression_batches(1)[0]
    with pytest.raises(ValueError, match="scipy_newton_cg .*newton_solver.* cannot run under torch.func.vmap"):
        vmap(lambda p, s: ifn.step(tx, s, p, damped_loss_fn_for(models[0], x, y))[:2])(stacked, vmap(tx.init)(stacked))


FACTORIES = {
    "curveball": lambda: ifn.chain(curveball(precond_lr=1e-2), ifn.scale_by_learning_rate(0.5)),
    "newton_solver": lambda: ifn.chain(newton_solver(maxiter=6, maxiter1=3), ifn.scale_by_learning_rate(0.5)),
    "scipy_newton_cg": lambda: ifn.chain(scipy_newton_cg("cg", warm_start=True), ifn.scale_by_learning_rate(0.5)),
    "newton_newton": lambda: ifn.chain(newton_newton(update_freq=2), ifn.scale_by_learning_rate(0.5)),
    "grad_min": lambda: ifn.chain(grad_min(loss_term=0.1), ifn.scale_by_learning_rate(0.5)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_resuming_from_a_saved_state_is_bit_identical(name):
    # TransformOptimizer closures cannot give Hessian products, so the checkpoint is the
    # functional one: torch.save of the params and the state's tensors midway.
    model = make_mlp(sizes=SIZES)
    loss_fns = [damped_loss_fn_for(model, x, y) for x, y in regression_batches(6)]
    tx = FACTORIES[name]()
    params = params_of(model)
    state = tx.init(params)
    for loss_fn in loss_fns:
        params, state, _ = ifn.step(tx, state, params, loss_fn)
    resumed, resumed_state = params_of(model), tx.init(params_of(model))
    for loss_fn in loss_fns[:3]:
        resumed, resumed_state, _ = ifn.step(tx, resumed_state, resumed, loss_fn)
    buffer = io.BytesIO()
    torch.save({"params": resumed, "state": saved_leaves(resumed_state)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    tx = FACTORIES[name]()
    resumed = saved["params"]
    resumed_state = restored(tx.init(resumed), saved["state"], name)
    for loss_fn in loss_fns[3:]:
        resumed, resumed_state, _ = ifn.step(tx, resumed_state, resumed, loss_fn)
    for key, value in params.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_missing_loss_fn_or_a_transform_optimizer_closure_is_refused(name):
    tx = FACTORIES[name]()
    params = params_of(make_mlp(sizes=SIZES))
    with pytest.raises(ValueError, match=f"{name} re-evaluates the objective and needs loss_fn"):
        tx.update(ifn.tree_zeros_like(params), tx.init(params), params)
    with pytest.raises(ValueError, match=f"{name} needs .* of loss_fn by torch.func, which a TransformOptimizer closure"):
        adapter_run(FACTORIES[name], make_batches(1))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_zero_gradients_and_a_flat_objective_give_finite_updates(name):
    tx = FACTORIES[name]()
    model = make_mlp(sizes=SIZES)
    params = params_of(model)
    x, y = regression_batches(1)[0]
    flat = lambda p: 0.0 * sum(leaf.sum() for leaf in p.values())  # zero gradient, zero Hessian
    linear = lambda p: sum(leaf.sum() for leaf in p.values())  # zero Hessian
    for loss_fn in (flat, linear, damped_loss_fn_for(model, x, y)):
        out, state = tx.update(ifn.tree_zeros_like(params), tx.init(params), params, loss_fn=loss_fn)
        out, _ = tx.update(grad(loss_fn)(params), state, params, loss_fn=loss_fn)
        assert bool(ifn.tree_all_finite(out)), loss_fn


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="curveball: momentum must be a number"):
        curveball(momentum="0.9")
    with pytest.raises(ValueError, match="newton_solver: maxiter must be None or a non-negative int"):
        newton_solver(maxiter=-1)
    with pytest.raises(ValueError, match="newton_solver: solver must be a callable"):
        newton_solver(solver="cg")
    with pytest.raises(ValueError, match="scipy_newton_cg: method must be one of"):
        scipy_newton_cg("lsqr")
    with pytest.raises(ValueError, match="scipy_newton_cg: options must not set x0"):
        scipy_newton_cg(options={"x0": None})
    with pytest.raises(ValueError, match="newton_newton: order must be an int >= 2"):
        newton_newton(order=1)
    with pytest.raises(ValueError, match="newton_newton: update_freq must be a positive int"):
        newton_newton(update_freq=0)
    with pytest.raises(ValueError, match="grad_min: relative must be one of"):
        grad_min(relative="loss")
    with pytest.warns(UserWarning, match="grad_min: relative and graft are both set"):
        grad_min(relative="loss_to_grad", graft="grad_to_loss")
