"""What multi-objective steps cost, next to infty, conflictfree and torchjd.

1. Jacobians on a 100k-parameter MLP (batch 128, m losses from one forward), in units of
   one backward of the summed loss: m backward passes with retain_graph, vmap over vjp,
   autograd.grad(is_grads_batched=True), and ``ifn.jacobian``.
2. Full steps (SGD momentum base, m losses) of PCGrad, CAGrad, GradVac and UniGrad-FS:
   ``infty.optim`` classes vs ``ifn.optim`` classes vs the functional path.
3. Aggregation alone on a stacked m × n gradient tensor: ConFIG vs
   ``conflictfree.ConFIG_update``, UPGrad vs ``torchjd.aggregation.UPGrad``.

Every group is timed round-robin (machine drift hits all alike). References that are not
installed are skipped with a note.

Run: python bench/multiobjective.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import classification_problem, functional_stepper, interleaved_medians, mlp, parameter_count  # noqa: E402

import infty_func as ifn  # noqa: E402

SIZES, BATCH = (256, 256, 128, 10), 128


def losses_of(logits, y, m):
    """m losses from one forward: cross-entropy on m slices of the batch."""
    return torch.stack([nn.functional.cross_entropy(chunk, target) for chunk, target in zip(logits.chunk(m), y.chunk(m))])


def jacobian_section(repeats: int) -> None:
    model, x, y = classification_problem(SIZES, BATCH)
    params = {n: p.detach() for n, p in model.named_parameters()}
    print(f"1. Jacobians, {parameter_count(model) / 1e3:.0f}k-parameter MLP, batch {BATCH} "
          "(units: one forward + backward of the summed loss)")
    print(f"  {'m':>3}{'m passes':>11}{'vmap(vjp)':>11}{'batched':>11}{'ifn.jacobian':>14}   ifn / m passes")
    for m in (2, 4, 8):
        # Every variant runs the same forward, functional_call on leaves that require grad.
        def forward(m=m):
            leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
            return losses_of(functional_call(model, leaves, (x,)), y, m), list(leaves.values())

        def summed():
            losses, wrt = forward()
            torch.autograd.grad(losses.sum(), wrt)

        def m_passes(m=m):
            losses, wrt = forward()
            for i in range(m):
                torch.autograd.grad(losses[i], wrt, retain_graph=i < m - 1)

        def vmapped():
            values, pullback = vjp(lambda p: losses_of(functional_call(model, p, (x,)), y, m), params)
            vmap(pullback)(torch.eye(m))

        def batched(m=m):
            losses, wrt = forward()
            torch.autograd.grad(losses, wrt, torch.eye(m), is_grads_batched=True)

        def ours():
            ifn.jacobian(lambda p: losses_of(functional_call(model, p, (x,)), y, m))(params)

        seconds = interleaved_medians(
            {"summed": summed, "m": m_passes, "vmap": vmapped, "batched": batched, "ours": ours}, repeats
        )
        unit = seconds["summed"]
        print(f"  {m:>3}{seconds['m'] / unit:>10.2f}x{seconds['vmap'] / unit:>10.2f}x{seconds['batched'] / unit:>10.2f}x"
              f"{seconds['ours'] / unit:>13.2f}x{seconds['ours'] / seconds['m']:>12.2f}x")


def infty_classes():
    try:
        import infty.optim as reference
    except ImportError:
        return None
    return reference


def step_section(repeats: int) -> None:
    reference = infty_classes()
    print("\n2. Full steps (SGD momentum base), ms; ratios against infty's class")
    if reference is None:
        print("  infty not installed (pip install --no-deps infty tqdm): ours only")
    cases = {
        "PCGrad": ({}, lambda: ifn.pcgrad(seed=0, eps=1e-8)),
        "CAGrad": ({"calpha": 0.5, "rescale": 1}, lambda: ifn.cagrad(0.5, 1)),
        "GradVac": ({"task_id": 1}, lambda: ifn.gradvac(0.9, 0.1, pairs="first")),
        "UniGrad_FS": ({"task_id": 1}, lambda: ifn.unigrad_fs(0.05)),
    }
    print(f"  {'method':<11}{'m':>3}{'infty':>10}{'ifn.optim':>11}{'functional':>12}{'class/infty':>13}{'func/infty':>12}")
    for name, (args, factory) in cases.items():
        for m in ((2,) if name in ("GradVac", "UniGrad_FS") else (2, 4, 8)):
            steps = {}
            for label, module in (("infty", reference), ("ours", ifn.optim)):
                if module is None:
                    continue
                model, x, y = classification_problem(SIZES, BATCH)
                opt = getattr(module, name)(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), model,
                                            args=dict(args))
                if label == "infty":
                    opt.task_id = args.get("task_id", 0)

                def closure(model=model):
                    logits = model(x)
                    return logits, list(losses_of(logits, y, m))

                opt.set_closure(closure)
                steps[label] = opt.step
            model, x, y = classification_problem(SIZES, BATCH)
            tx = ifn.chain(factory(), ifn.sgd(0.01, momentum=0.9))

            def loss_fn(p, model=model, x=x, y=y, m=m):
                return losses_of(functional_call(model, p, (x,)), y, m)

            steps["functional"] = functional_stepper(model, tx, loss_fn)
            seconds = interleaved_medians(steps, repeats)
            base = seconds.get("infty")
            cells = f"{base * 1e3:>9.2f}" if base else f"{'-':>10}"
            ratio = (f"{seconds['ours'] / base:>12.2f}x{seconds['functional'] / base:>11.2f}x" if base else "")
            print(f"  {name:<11}{m:>3}{cells}{seconds['ours'] * 1e3:>11.2f}{seconds['functional'] * 1e3:>12.2f}{ratio}")


def aggregation_section(repeats: int) -> None:
    print("\n3. Aggregation alone on an m × n stacked gradient tensor (n = 100k), ms")
    try:
        from conflictfree.grad_operator import ConFIG_update
    except ImportError:
        ConFIG_update = None  # noqa: N806
    try:
        from torchjd.aggregation import UPGrad
        upgrad_reference = UPGrad()
    except ImportError:
        upgrad_reference = None
    n = parameter_count(mlp(SIZES))
    print(f"  {'m':>3}{'conflictfree':>14}{'ifn config':>12}{'ratio':>8}{'torchjd UPGrad':>16}{'ifn upgrad':>12}{'ratio':>8}")
    for m in (2, 4, 8):
        matrix = torch.randn(m, n)
        jac = {"w": matrix}
        upgrad = ifn.upgrad()
        state = upgrad.init({"w": matrix[0]})
        steps = {"ours config": lambda matrix=matrix: ifn.multiobjective.config_update(matrix),
                 "ours upgrad": lambda jac=jac, state=state: upgrad.update(jac, state)}
        if ConFIG_update is not None:
            steps["conflictfree"] = lambda matrix=matrix: ConFIG_update(matrix)
        if upgrad_reference is not None:
            steps["torchjd"] = lambda matrix=matrix: upgrad_reference(matrix)
        seconds = interleaved_medians(steps, repeats)
        cf = seconds.get("conflictfree")
        tj = seconds.get("torchjd")
        print(f"  {m:>3}{(cf or 0) * 1e3:>13.3f}{seconds['ours config'] * 1e3:>12.3f}"
              f"{(seconds['ours config'] / cf if cf else float('nan')):>7.2f}x"
              f"{(tj or 0) * 1e3:>15.3f}{seconds['ours upgrad'] * 1e3:>12.3f}"
              f"{(seconds['ours upgrad'] / tj if tj else float('nan')):>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    jacobian_section(args.repeats)
    step_section(args.repeats)
    aggregation_section(args.repeats)


if __name__ == "__main__":
    main()
