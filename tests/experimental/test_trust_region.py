"""The SciPy-backed second-order modules: higher-order Newton and the L∞ trust region.
Their subproblems, torchzero's numbers, convergence against tuned gradient descent, and
the properties every transform keeps (resume, errors, the vmap refusal)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

import infty_func as ifn
from infty_func.experimental.hessian_model import bfgs_hessian, newton_hessian
from infty_func.experimental.higher_order_newton import higher_order_newton, taylor_coefficients
from infty_func.experimental.infinity_norm_trust_region import infinity_norm_trust_region
from infty_func.optim.checkpoint import restored, saved_leaves
from tests.adapter_runs import adapter_run, assert_resume_is_bit_identical
from tests.conftest import make_batches, params_of
from tests.experimental.problems import (
    best_sgd_steps,
    quadratic,
    quadratic_minimiser,
    quadratic_start,
    rosenbrock,
    rosenbrock_start,
    steps_to_converge,
)

TORCHZERO_MISSING = "reference package torchzero not installed (pip install --no-deps torchzero)"


@pytest.fixture(autouse=True)
def one_thread():
    """These problems have 2 to 180 parameters: a second OpenMP thread only adds
    overhead, and on the loaded 2-core test machine it made 20×20 matmuls ~500× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rosenbrock_of_vector(v):
    return rosenbrock({"x": v})


def run_ours(tx, loss_fn, params, steps):
    state = tx.init(params)
    trajectory = []
    for _ in range(steps):
        params, state, _ = ifn.step(tx, state, params, loss_fn)
        trajectory.append(params)
    return trajectory, state


def run_torchzero_on_rosenbrock(module, steps):
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    x = nn.Parameter(rosenbrock_start()["x"])
    opt = tz.Optimizer([x], module)

    def closure(backward=True):
        loss = rosenbrock({"x": x})
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    trajectory = []
    for _ in range(steps):
        opt.step(closure)
        trajectory.append(x.detach().clone())
    return trajectory


def torchzero_infinity_norm(hess_module, fix_radius=True):
    """torchzero's InfinityNormTrustRegion with its two defects patched the way its
    docstring intends: the lsq_linear tolerance read from the missing setting "bounds"
    (KeyError at every step) and, unless ``fix_radius`` is False, the signed ``amax`` in
    place of ``‖d‖∞``."""
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    module = tz.m.experimental.InfinityNormTrustRegion(hess_module=hess_module)
    module.defaults["bounds"] = module.defaults["tol"]
    if fix_radius:
        module._radius_fn = lambda d: d.abs().amax()
    return module


# ------------------------------------------------------------------ higher_order_newton


def test_taylor_coefficients_are_the_derivative_tensors_of_a_quartic():
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    x = torch.tensor([0.3, 0.2, -0.1], dtype=torch.float64)
    f, g, h, t3, t4 = taylor_coefficients(lambda v: (a @ v) ** 4, x, order=4)
    u = float(a @ x)
    outer = lambda *vs: torch.einsum(",".join("ijkl"[: len(vs)]) + "->" + "ijkl"[: len(vs)], *vs)  # noqa: E731
    torch.testing.assert_close(f, torch.tensor(u**4, dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(g, 4 * u**3 * a, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(h, 12 * u**2 * outer(a, a), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(t3, 24 * u * outer(a, a, a), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(t4, 24 * outer(a, a, a, a), rtol=1e-13, atol=1e-14)


def test_vanishing_higher_derivatives_of_a_quadratic_are_zeros_not_an_error():
    quadratic(quadratic_start())  # build the problem's cached data outside torch.func
    _, _, _, t3, t4 = taylor_coefficients(lambda v: quadratic({"x": v}), quadratic_start()["x"], order=4)
    assert t3.shape == (20,) * 3 and t4.shape == (20,) * 4
    assert not t3.any() and not t4.any()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"order": 3},
        {"order": 2, "trust_method": "proximal"},
        {"order": 3, "trust_method": "proximal"},
        {"order": 2, "trust_method": "none"},
    ],
    ids=["order4-bounds", "order3-bounds", "order2-proximal", "order3-proximal", "order2-none"],
)
def test_higher_order_newton_matches_torchzero_over_ten_steps(settings):
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    reference = run_torchzero_on_rosenbrock(tz.m.experimental.HigherOrderNewton(**settings), 10)
    ours, _ = run_ours(higher_order_newton(**settings), rosenbrock, rosenbrock_start(), 10)
    # Same subproblems, same SciPy solvers; the derivative tensors differ from torchzero's
    # autograd ones in the last bits only (observed max difference 2e-13).
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine["x"], theirs, rtol=0, atol=1e-8)


def test_newton_without_trust_region_jumps_to_the_minimiser_of_a_quadratic():
    quadratic(quadratic_start())
    (params,), _ = run_ours(higher_order_newton(order=2, trust_method="none"), quadratic, quadratic_start(), 1)
    torch.testing.assert_close(params["x"], quadratic_minimiser(), rtol=0, atol=1e-6)


def test_bounded_step_stays_in_the_ball_and_first_order_goes_down_the_gradient():
    start = rosenbrock_start()
    (params,), state = run_ours(higher_order_newton(order=1, init=0.1), rosenbrock, start, 1)
    step = params["x"] - start["x"]
    g = torch.func.grad(rosenbrock)(start)["x"]
    # The linear model's minimiser on the ball ‖s‖ ≤ R is −R g/‖g‖ (SLSQP: to 1e-6).
    torch.testing.assert_close(step, -0.1 * g / g.norm(), rtol=0, atol=1e-6)
    (params,), _ = run_ours(higher_order_newton(order=4, init=0.05), rosenbrock, start, 1)
    assert float((params["x"] - start["x"]).norm()) <= 0.05 * (1 + 1e-6)


def test_a_quadratic_with_order_four_converges_where_torchzero_raises():
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    quadratic(quadratic_start())
    x = nn.Parameter(quadratic_start()["x"])
    opt = tz.Optimizer([x], tz.m.experimental.HigherOrderNewton(order=4))

    def closure(backward=True):
        loss = quadratic({"x": x})
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="does not require grad"):
        opt.step(closure)
    assert steps_to_converge(higher_order_newton(order=4), quadratic, quadratic_start(), 10) is not None


@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")  # SciPy's polish of differential evolution
def test_differential_evolution_is_keyed_by_the_seed_and_the_key_advances():
    def run(seed):
        return run_ours(higher_order_newton(order=3, de_iters=3, seed=seed), rosenbrock, rosenbrock_start(), 2)

    (_, first), state = run(7)
    (_, again), state_again = run(7)
    assert torch.equal(first["x"], again["x"])
    assert torch.equal(state.key, state_again.key)
    assert not torch.equal(state.key, higher_order_newton(seed=7).init(rosenbrock_start()).key)
    # the seed reaches differential evolution (its polished answer is the same here, so
    # look at the generator it is handed)
    draws = []
    search = scipy.optimize.differential_evolution

    def recording(*args, rng=None, **kwargs):
        draws.append(float(np.random.default_rng(rng).random()) if rng is not None else None)
        return search(*args, rng=rng, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scipy.optimize, "differential_evolution", recording)
        run(7), run(8)
    assert None not in draws and draws[0] != draws[len(draws) // 2]
    assert torch.isfinite(first["x"]).all()


@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")
def test_higher_order_newton_resumes_bit_identically_from_a_saved_state():
    tx = higher_order_newton(order=3, de_iters=2)
    uninterrupted, _ = run_ours(tx, rosenbrock, rosenbrock_start(), 4)
    midway, state = run_ours(tx, rosenbrock, rosenbrock_start(), 2)
    params = midway[-1]
    buffer = io.BytesIO()
    torch.save({"params": params, "state": saved_leaves(state)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    params, state = saved["params"], restored(tx.init(saved["params"]), saved["state"], "higher_order_newton")
    for _ in range(2):
        params, state, _ = ifn.step(tx, state, params, rosenbrock)
    assert torch.equal(params["x"], uninterrupted[-1]["x"])


def test_higher_order_newton_at_a_minimum_takes_a_finite_step():
    tx = higher_order_newton(order=2)
    minimum = {"x": torch.ones(2, dtype=torch.float64)}
    updates, state = tx.update(None, tx.init(minimum), minimum, loss_fn=rosenbrock)
    assert bool(ifn.tree_all_finite(updates)) and torch.isfinite(state.trust_radius)
    assert float(updates["x"].abs().max()) < 1e-8


# ---------------------------------------------------------------- infinity_norm_trust_region


@pytest.mark.parametrize("model", ["newton", "bfgs"])
def test_infinity_norm_trust_region_matches_torchzero_on_rosenbrock_over_ten_steps(model):
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    hess_module = tz.m.Newton() if model == "newton" else tz.m.BFGS(inverse=False)
    reference = run_torchzero_on_rosenbrock(torchzero_infinity_norm(hess_module), 10)
    ours, _ = run_ours(infinity_norm_trust_region(model), rosenbrock, rosenbrock_start(), 10)
    # Observed: bit-identical with the Newton model; ≤ 1e-13 with BFGS (its rank-two term
    # is formed as (Bs)(Bs)ᵀ here, as Bs sᵀBᵀ there).
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine["x"], theirs, rtol=0, atol=1e-8)


def softmax_regression() -> nn.Linear:
    """A linear 6 → 4 classifier, trained below on cross-entropy plus ``0.05‖p‖²``: its
    Hessian is positive definite, so the box least-squares subproblem has one solution.
    (The test MLP's Hessian has 17 near-zero eigenvalues: there the subproblem has a
    continuum of minimisers, a 1e-16 change to ``B`` moved ``lsq_linear``'s answer by 0.8,
    and no two implementations can agree on it step for step.)"""
    model = nn.Linear(6, 4).to(torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 6))
        model.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64))
    return model


def regularised_cross_entropy(logits, y, parameters):
    return nn.functional.cross_entropy(logits, y) + 0.05 * sum((p**2).sum() for p in parameters)


@pytest.mark.parametrize("model", ["newton", "bfgs"])
def test_infinity_norm_trust_region_matches_torchzero_on_a_softmax_regression_over_ten_steps(model):
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    batches = make_batches(10, seed=2)
    reference = softmax_regression()
    hess_module = tz.m.Newton() if model == "newton" else tz.m.BFGS(inverse=False)
    opt = tz.Optimizer(reference.parameters(), torchzero_infinity_norm(hess_module))
    for x, y in batches:

        def closure(backward=True, x=x, y=y):
            loss = regularised_cross_entropy(reference(x), y, reference.parameters())
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss

        opt.step(closure)
    ours = softmax_regression()
    params = params_of(ours)
    tx = infinity_norm_trust_region(model)
    state = tx.init(params)
    for x, y in batches:

        def loss_fn(p, x=x, y=y):
            return regularised_cross_entropy(torch.func.functional_call(ours, p, (x,)), y, p.values())

        params, state, _ = ifn.step(tx, state, params, loss_fn)
    # Observed: bit-identical (Newton), 3e-15 (BFGS).
    for name, value in params_of(reference).items():
        torch.testing.assert_close(params[name], value, rtol=0, atol=1e-8)


def test_a_failed_step_shrinks_the_box_by_its_infinity_norm_even_when_all_entries_are_negative():
    # f = −x₁ − x₂ + 2‖x‖², g(0) = (−1, −1); with B = I and r = 1 the first step d = (−1, −1)
    # overshoots (f(1, 1) = 2 > 0), so r ← ¼‖d‖∞ = ¼ and d = (−¼, −¼) is taken (ρ ≈ 0.57).
    loss_fn = lambda p: -p["x"].sum() + 2 * (p["x"] ** 2).sum()  # noqa: E731
    params = {"x": torch.zeros(2, dtype=torch.float64)}
    tx = infinity_norm_trust_region("bfgs")
    value, grads = ifn.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, tx.init(params), params, loss_fn=loss_fn, value=value)
    torch.testing.assert_close(updates["x"], torch.full((2,), 0.25, dtype=torch.float64), rtol=0, atol=1e-9)
    assert float(state.trust_radius) == pytest.approx(0.25, rel=1e-9)
    # torchzero's signed amax(d) = −1 makes the shrunk radius negative, its overflow check
    # resets it to 1, and the same step fails ten times: a zero update.
    tz = pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)
    x = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = tz.Optimizer([x], torchzero_infinity_norm(tz.m.BFGS(inverse=False), fix_radius=False))

    def closure(backward=True):
        loss = loss_fn({"x": x})
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert not x.detach().any()


def test_the_step_solves_the_box_bounded_least_squares_problem():
    quadratic(quadratic_start())
    params = quadratic_start()
    matrix = torch.func.hessian(lambda v: quadratic({"x": v}))(params["x"])
    value, grads = ifn.value_and_grad(quadratic)(params)
    tx = infinity_norm_trust_region("newton", init=0.05)
    updates, state = tx.update(grads, tx.init(params), params, loss_fn=quadratic, value=value)
    step = -updates["x"]
    assert float(step.abs().max()) <= 0.05 * (1 + 1e-12)
    # KKT of min ‖Bd − g‖² on the box: where dᵢ is inside, the residual's gradient vanishes.
    # KKT conditions of min ‖Bd − g‖² on the box: the residual's gradient vanishes where dᵢ
    # is inside, and points outwards where dᵢ sits on a face (lsq_linear's reflective
    # iterates stop within ~1e-6 of a face).
    residual_gradient = matrix.T @ (matrix @ step - grads["x"])
    tolerance = 1e-6 * float((matrix.T @ grads["x"]).abs().max())
    upper, lower = step >= 0.05 * (1 - 1e-5), step <= -0.05 * (1 - 1e-5)
    inside = ~(upper | lower)
    assert bool((residual_gradient[upper] <= tolerance).all()) and bool((residual_gradient[lower] >= -tolerance).all())
    assert bool((residual_gradient[inside].abs() <= tolerance).all())
    # With a box that does not bind, the step is Newton's and lands on the minimiser.
    wide = infinity_norm_trust_region("newton", init=100.0)
    updates, _ = wide.update(grads, wide.init(params), params, loss_fn=quadratic, value=value)
    torch.testing.assert_close(params["x"] + updates["x"], quadratic_minimiser(), rtol=0, atol=1e-8)


def test_fixed_radius_always_steps_with_the_initial_box():
    tx = infinity_norm_trust_region("newton", radius_strategy="fixed", init=0.3)
    trajectory, state = run_ours(tx, rosenbrock, rosenbrock_start(), 3)
    assert float(state.trust_radius) == 0.3
    moves = [rosenbrock_start()["x"], *[p["x"] for p in trajectory]]
    assert all(float((b - a).abs().max()) <= 0.3 * (1 + 1e-12) and bool((b != a).any()) for a, b in zip(moves, moves[1:]))


def test_the_hessian_model_is_refreshed_every_update_freq_updates():
    tx = infinity_norm_trust_region(newton_hessian(damping=1e-3), update_freq=2)
    params = rosenbrock_start()
    state = tx.init(params)
    matrices = []
    for _ in range(3):
        params, state, _ = ifn.step(tx, state, params, rosenbrock)
        matrices.append(state.hessian.matrix)
    assert torch.equal(matrices[0], matrices[1]) and not torch.equal(matrices[1], matrices[2])
    exact = torch.func.hessian(rosenbrock_of_vector)(rosenbrock_start()["x"]) + 1e-3 * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(matrices[0], exact, rtol=1e-14, atol=0)


def test_the_exact_hessian_is_the_same_inside_and_outside_torch_func_transforms():
    model = newton_hessian()
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    state = model.init(x)
    outside = model.update(state, x, x, rosenbrock_of_vector).matrix
    inside = torch.func.vmap(lambda v: model.update(state, v, v, rosenbrock_of_vector).matrix)(x[None])[0]
    torch.testing.assert_close(inside, outside, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        outside, torch.tensor([[2 - 400 * -0.7 + 1200 * 0.09, -120.0], [-120.0, 200.0]], dtype=torch.float64)
    )


def test_the_matrix_free_solver_agrees_with_the_dense_one():
    quadratic(quadratic_start())
    params = quadratic_start()
    value, grads = ifn.value_and_grad(quadratic)(params)
    steps = []
    for dense in (True, False):
        tx = infinity_norm_trust_region("newton", prefer_dense=dense, init=0.05)
        updates, _ = tx.update(grads, tx.init(params), params, loss_fn=quadratic, value=value)
        steps.append(updates["x"])
    # LSMR (matrix-free) stops at a residual tolerance, not at the exact box solution
    torch.testing.assert_close(steps[1], steps[0], rtol=0, atol=1e-6)


def test_after_a_failed_solve_the_reset_newton_model_is_recomputed_at_the_next_step(monkeypatch):
    solve = scipy.optimize.lsq_linear
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("SVD did not converge")
        return solve(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "lsq_linear", failing_once)
    tx = infinity_norm_trust_region(newton_hessian(), update_freq=2, radius_strategy="fixed", init=0.1)
    params = rosenbrock_start()
    state = tx.init(params)
    for _ in range(2):
        before = params["x"]
        params, state, _ = ifn.step(tx, state, params, rosenbrock)
    assert bool(state.hessian.started) and bool(state.hessian.matrix.abs().sum() > 0)
    assert not torch.equal(params["x"], before)  # the second step moved (with a real Hessian)


def test_a_failed_least_squares_solve_falls_back_to_the_clipped_gradient(monkeypatch):
    def failing(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(scipy.optimize, "lsq_linear", failing)
    params = rosenbrock_start()
    value, grads = ifn.value_and_grad(rosenbrock)(params)
    tx = infinity_norm_trust_region(bfgs_hessian(), init=1e-3)
    updates, state = tx.update(grads, tx.init(params), params, loss_fn=rosenbrock, value=value)
    g = grads["x"]
    torch.testing.assert_close(updates["x"], -g * (1e-3 / g.abs().max()), rtol=1e-15, atol=0)
    assert not bool(state.hessian.started)  # the model restarts, as torchzero resets it


def test_at_a_minimum_the_update_is_zero_and_finite():
    minimum = {"x": torch.ones(2, dtype=torch.float64)}
    value, grads = ifn.value_and_grad(rosenbrock)(minimum)
    tx = infinity_norm_trust_region("newton")
    updates, state = tx.update(grads, tx.init(minimum), minimum, loss_fn=rosenbrock, value=value)
    assert not updates["x"].any() and torch.isfinite(state.trust_radius)


def test_infinity_norm_trust_region_with_bfgs_resumes_bit_identically_through_the_adapter():
    assert_resume_is_bit_identical(lambda: infinity_norm_trust_region("bfgs"), make_batches(6, seed=3), split=3)


def test_the_exact_hessian_model_refuses_a_closure_objective():
    with pytest.raises(ValueError, match="hess_model='newton'.*closure"):
        adapter_run(lambda: infinity_norm_trust_region("newton"), make_batches(1))
    with pytest.raises(ValueError, match="higher_order_newton.*closure"):
        adapter_run(lambda: higher_order_newton(order=2), make_batches(1))


# ---------------------------------------------------------------- both


METHODS = {
    "higher_order_newton": lambda: higher_order_newton(),
    "infinity_norm_trust_region-newton": lambda: infinity_norm_trust_region("newton"),
    "infinity_norm_trust_region-bfgs": lambda: infinity_norm_trust_region("bfgs"),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("problem", ["rosenbrock", "quadratic"])
def test_converges_in_fewer_steps_than_tuned_gradient_descent(method, problem):
    loss_fn, start = {"rosenbrock": (rosenbrock, rosenbrock_start), "quadratic": (quadratic, quadratic_start)}[problem]
    loss_fn(start())  # build the quadratic's cached data outside torch.func
    budget = best_sgd_steps(problem)
    steps = steps_to_converge(METHODS[method](), loss_fn, start(), max_steps=min(budget - 1, 200))
    assert steps is not None and steps < budget, f"{method} on {problem}: {steps} steps, gradient descent {budget}"


@pytest.mark.parametrize("method", ["higher_order_newton", "infinity_norm_trust_region"])
def test_missing_loss_fn_is_refused(method):
    tx = METHODS[method if method == "higher_order_newton" else "infinity_norm_trust_region-bfgs"]()
    params = rosenbrock_start()
    with pytest.raises(ValueError, match=f"{method} re-evaluates the objective and needs loss_fn"):
        tx.update(ifn.tree_zeros_like(params), tx.init(params), params)


@pytest.mark.parametrize("method", list(METHODS))
def test_running_under_vmap_is_refused_with_a_clear_error(method):
    tx = METHODS[method]()
    stacked = {"x": torch.stack([rosenbrock_start()["x"], torch.zeros(2, dtype=torch.float64)])}
    state = tx.init(rosenbrock_start())
    with pytest.raises(ValueError, match="cannot run under torch.func.vmap"):
        torch.func.vmap(lambda p: ifn.step(tx, state, p, rosenbrock)[0])(stacked)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: higher_order_newton(trust_method="ball"), "trust_method must be one of"),
        (lambda: higher_order_newton(order=0), "order must be an int ≥ 1"),
        (lambda: higher_order_newton(order=1, trust_method="proximal"), "order=1 gives a linear model"),
        (lambda: higher_order_newton(max_attempts=0), "max_attempts must be an int ≥ 1"),
        (lambda: higher_order_newton(nminus=1.5), "0 < nminus < 1"),
        (lambda: higher_order_newton(de_iters=-3), "de_iters must be"),
        (lambda: higher_order_newton(init=-1.0), "init must be positive"),
        (lambda: infinity_norm_trust_region("sr1"), "hess_model must be 'newton', 'bfgs'"),
        (lambda: infinity_norm_trust_region("newton", radius_strategy="adaptive"), "radius_strategy must be"),
        (lambda: infinity_norm_trust_region("newton", max_attempts=0), "max_attempts must be an int ≥ 1"),
        (lambda: infinity_norm_trust_region("newton", update_freq=0), "update_freq must be an int ≥ 1"),
        (lambda: infinity_norm_trust_region("newton", init=0.0), "init .* must be positive"),
        (lambda: infinity_norm_trust_region("newton", nplus=0.5), "nplus ≥ 1"),
        (lambda: infinity_norm_trust_region("newton", tol=0.0), "tol must be positive"),
        (lambda: newton_hessian(damping=-1.0), "damping must be ≥ 0"),
        (lambda: bfgs_hessian(init_scale="big"), "init_scale must be 'auto' or a positive number"),
    ],
)
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_eta_above_rho_bad_warns_once_when_built():
    with pytest.warns(UserWarning, match="eta=0.5 > rho_bad"):
        infinity_norm_trust_region("bfgs", eta=0.5)
