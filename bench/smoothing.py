"""Laplacian smoothing: one step of ours next to torchzero's module on a 1M-parameter MLP.

Both smooth every leaf (layerwise) and scale by a learning rate; the gradient is already
in place, so only the transform is timed (round-robin).

Run: python bench/smoothing.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, mlp, parameter_count  # noqa: E402

import infty_func as ifn  # noqa: E402

SIZES = (512, 1024, 512, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = mlp(SIZES)
    x = torch.randn(64, SIZES[0])
    model(x).square().mean().backward()
    params = {n: p.detach() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    tx = ifn.chain(ifn.laplacian_smoothing(1.0), ifn.scale_by_learning_rate(1e-3))
    state = tx.init(params)
    steps = {"ifn.laplacian_smoothing": lambda: tx.update(grads, state, params)}
    try:
        import torchzero as tz

        reference_model = mlp(SIZES)
        reference_model(x).square().mean().backward()
        opt = tz.Optimizer(reference_model.parameters(), tz.m.LaplacianSmoothing(1.0), tz.m.LR(1e-3))
        saved = [p.grad.clone() for p in reference_model.parameters()]

        def reference_step():
            for p, g in zip(reference_model.parameters(), saved):
                p.grad = g.clone()
            opt.step()

        steps["torchzero LaplacianSmoothing (incl. grad copy)"] = reference_step
    except ImportError:
        print("torchzero not installed: ours only")
    seconds = interleaved_medians(steps, args.repeats)
    print(f"{parameter_count(model) / 1e6:.2f}M parameters")
    base = seconds.get("torchzero LaplacianSmoothing (incl. grad copy)")
    for name, value in seconds.items():
        ratio = f"{value / base:.2f}x" if base else ""
        print(f"  {name:<48}{value * 1e3:>9.2f} ms  {ratio}")


if __name__ == "__main__":
    main()
