"""Smoothing: ours next to torchzero's modules, timed round-robin in one process.

- Laplacian smoothing: one step on a 1M-parameter MLP with the gradient already in place
  (only the transform is timed).
- Gradient sampling: one whole step (gradients at n points, aggregated, applied) on a
  small MLP; ours evaluates the n − 1 perturbed gradients as one vmapped batch, torchzero
  in a loop of closures.

Run: python bench/smoothing.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import classification_problem, functional_stepper, interleaved_medians, mlp, parameter_count, torchzero_closure  # noqa: E402

import infty_func as ifn  # noqa: E402

LAPLACIAN_SIZES = (512, 1024, 512, 10)
SAMPLING_SIZES = (64, 128, 10)


def report(title: str, seconds: dict, baseline: str | None) -> None:
    print(title)
    base = seconds.get(baseline) if baseline else None
    for name, value in seconds.items():
        ratio = f"{value / base:.2f}x" if base else ""
        print(f"  {name:<52}{value * 1e3:>9.2f} ms  {ratio}")


def laplacian(repeats: int, tz) -> None:
    model = mlp(LAPLACIAN_SIZES)
    x = torch.randn(64, LAPLACIAN_SIZES[0])
    model(x).square().mean().backward()
    params = {n: p.detach() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    tx = ifn.chain(ifn.laplacian_smoothing(1.0), ifn.scale_by_learning_rate(1e-3))
    state = tx.init(params)
    steps = {"ifn.laplacian_smoothing": lambda: tx.update(grads, state, params)}
    baseline = None
    if tz is not None:
        reference_model = mlp(LAPLACIAN_SIZES)
        reference_model(x).square().mean().backward()
        opt = tz.Optimizer(reference_model.parameters(), tz.m.LaplacianSmoothing(1.0), tz.m.LR(1e-3))
        saved = [p.grad.clone() for p in reference_model.parameters()]

        def reference_step():
            for p, g in zip(reference_model.parameters(), saved):
                p.grad = g.clone()
            opt.step()

        baseline = "torchzero LaplacianSmoothing (incl. grad copy)"
        steps[baseline] = reference_step
    report(f"Laplacian smoothing, {parameter_count(model) / 1e6:.2f}M parameters", interleaved_medians(steps, repeats), baseline)


def gradient_sampling(repeats: int, tz, n: int) -> None:
    model, x, y = classification_problem(SAMPLING_SIZES, batch=64)
    loss_fn = lambda p: nn.functional.cross_entropy(torch.func.functional_call(model, p, (x,)), y)  # noqa: E731
    tx = ifn.chain(ifn.gradient_sampling(0.01, n, fixed=False), ifn.sgd(1e-3))
    steps = {f"ifn.gradient_sampling (n={n}, vmapped)": functional_stepper(model, tx, loss_fn)}
    baseline = None
    if tz is not None:
        reference_model = mlp(SAMPLING_SIZES)
        opt = tz.Optimizer(reference_model.parameters(), tz.m.GradientSampling([tz.m.LR(1e-3)], sigma=0.01, n=n, fixed=False))
        closure = torchzero_closure(opt, lambda: nn.functional.cross_entropy(reference_model(x), y))
        baseline = f"torchzero GradientSampling (n={n})"
        steps[baseline] = lambda: opt.step(closure)
    title = f"Gradient sampling, whole step, {parameter_count(model) / 1e3:.0f}k parameters, batch 64"
    report(title, interleaved_medians(steps, repeats), baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    try:
        import torchzero as tz
    except ImportError:
        print("torchzero not installed: ours only")
        tz = None
    laplacian(args.repeats, tz)
    for n in (8, 32):
        gradient_sampling(args.repeats, tz, n)


if __name__ == "__main__":
    main()
