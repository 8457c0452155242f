"""The SciPy-backed second-order modules next to torchzero's: one step each, from the same
mid-run point, on small float64 problems (these methods are for a few dozen parameters).

* ``higher_order_newton`` (orders 4 and 3, ball trust region) on the 2-D Rosenbrock
  function, from the point reached after one step;
* ``infinity_norm_trust_region`` with the exact Hessian and with BFGS on an
  L2-regularised softmax regression (28 parameters), from the point reached after three
  steps. torchzero's ``InfinityNormTrustRegion`` raises ``KeyError`` at every step (it
  reads its tolerance from a missing setting), so it runs with that setting supplied, and
  with ``‖d‖∞`` in place of its signed ``amax(d)`` so that both take the same attempts.

Each timed call restarts from the saved point: ours from its (params, state) pair,
torchzero's after restoring its parameters and module states (a deep copy of a few small
tensors, included in its time). Every step includes the trial evaluations of the trust
region and the SciPy solve.

Run: python bench/experimental_trust_region.py [--repeats N] [--threads T]
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse_bench_arguments, print_case_ratios, torchzero_closure  # noqa: E402

import infty_func as ifn  # noqa: E402
from infty_func.experimental.higher_order_newton import higher_order_newton  # noqa: E402
from infty_func.experimental.infinity_norm_trust_region import infinity_norm_trust_region  # noqa: E402


def rosenbrock(params: dict) -> torch.Tensor:
    x, y = params["x"][0], params["x"][1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def softmax_regression():
    """A linear 6 → 4 classifier with one batch of 64, cross-entropy + 0.05‖p‖²."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(6, 4).to(torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 6, generator=generator, dtype=torch.float64))
        model.bias.zero_()
    x = torch.randn(64, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=generator)

    def loss_of(logits, parameters):
        return nn.functional.cross_entropy(logits, y) + 0.05 * sum((p**2).sum() for p in parameters)

    return model, x, loss_of


def our_step(tx, params: dict, loss_fn: Callable, warm_steps: int) -> Callable[[], object]:
    state = tx.init(params)
    for _ in range(warm_steps):
        params, state, _ = ifn.step(tx, state, params, loss_fn)
    return lambda: ifn.step(tx, state, params, loss_fn)


def _modules(module):
    yield module
    for child in module.children.values():
        yield from _modules(child)


def torchzero_step(module, parameters: list, closure_of: Callable, warm_steps: int) -> Callable[[], object]:
    """A torchzero step that restarts, at each call, from the point reached after
    ``warm_steps`` steps."""
    import torchzero as tz

    opt = tz.Optimizer(parameters, module)
    closure = closure_of(opt)
    for _ in range(warm_steps):
        opt.step(closure)
    saved_params = [p.detach().clone() for p in parameters]
    saved = [(m, copy.deepcopy(m.global_state), {p: copy.deepcopy(s) for p, s in m.state.items()}) for m in _modules(module)]

    def step():
        with torch.no_grad():
            for p, value in zip(parameters, saved_params):
                p.copy_(value)
        for m, global_state, state in saved:
            m.global_state.clear()
            m.global_state.update(copy.deepcopy(global_state))
            m.state.clear()
            m.state.update({p: copy.deepcopy(s) for p, s in state.items()})
        return opt.step(closure)

    return step


def _backward_closure(loss_fn: Callable[[], torch.Tensor]):
    return lambda opt: torchzero_closure(opt, loss_fn)


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    try:
        import torchzero as tz
    except ImportError:
        tz = None
    start = {"x": torch.tensor([-1.2, 1.0], dtype=torch.float64)}
    out = []
    for order in (4, 3):
        ours = our_step(higher_order_newton(order=order), start, rosenbrock, warm_steps=1)
        reference = None
        if tz is not None:
            x = nn.Parameter(start["x"].clone())
            closure_of = _backward_closure(lambda x=x: rosenbrock({"x": x}))
            reference = torchzero_step(tz.m.experimental.HigherOrderNewton(order=order), [x], closure_of, warm_steps=1)
        out.append((f"higher_order_newton(order={order}) rosenbrock", ours, reference))

    model, x, loss_of = softmax_regression()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_fn(p):
        return loss_of(functional_call(model, p, (x,)), p.values())

    for hess_model in ("newton", "bfgs"):
        ours = our_step(infinity_norm_trust_region(hess_model), params, loss_fn, warm_steps=3)
        reference = None
        if tz is not None:
            reference_model = copy.deepcopy(model)
            hess_module = tz.m.Newton() if hess_model == "newton" else tz.m.BFGS(inverse=False)
            module = tz.m.experimental.InfinityNormTrustRegion(hess_module=hess_module)
            module.defaults["bounds"] = module.defaults["tol"]  # the setting it reads but never defines
            module._radius_fn = lambda d: d.abs().amax()  # ‖d‖∞, as ours: the same attempts, the same work
            closure_of = _backward_closure(lambda m=reference_model: loss_of(m(x), m.parameters()))
            reference = torchzero_step(module, list(reference_model.parameters()), closure_of, warm_steps=3)
        out.append((f"infinity_norm_trust_region({hess_model}) softmax-28", ours, reference))
    return out


def main() -> None:
    # At 2 to 28 parameters a second OpenMP thread only adds synchronisation; on the loaded
    # 2-core machine it made small matmuls and backward passes 10-500x slower, for both.
    args = parse_bench_arguments(__doc__, threads=1)
    print(f"{'module':<52}{'ours ms':>10}{'torchzero ms':>14}{'ratio':>8}")
    print_case_ratios(cases(), args.repeats, width=52)


if __name__ == "__main__":
    main()
