"""Element-wise experimental modules: one step of ours next to torchzero's module on a
1M-parameter MLP.

Cases: coordinate momentum, cubic Adam, reduce-outward-LR and cubic Adam in GGT's
low-rank eigenbasis (rank 16, so that torchzero's basis, recomputed from scratch on every
step, fills in a few seconds), each followed by a learning rate and applied to the
parameters. The gradient is already in place, so only the optimizer step is timed
(round-robin): ours is ``update`` + ``apply_updates`` carrying its state; torchzero's is
``Optimizer.step()`` with the saved gradients written back into ``.grad`` first. The
subspace cases start after ``rank`` steps, with the buffer full.

``main`` also times torchzero with the gradients assigned instead of copied (it clones
``.grad`` into its update itself and never writes to it) and the copy alone, and prints
ours against both.

Run: python bench/experimental_elementwise.py [--repeats N] [--threads T]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, mlp, parameter_count, parse_bench_arguments  # noqa: E402

import infty_func as ifn  # noqa: E402
from infty_func.experimental.coordinate_momentum import coordinate_momentum  # noqa: E402
from infty_func.experimental.cubic_adam import cubic_adam  # noqa: E402
from infty_func.experimental.reduce_outward_lr import reduce_outward_lr  # noqa: E402
from infty_func.experimental.subspace_cubic_adam import subspace_cubic_adam  # noqa: E402

SIZES = (512, 1024, 512, 10)
LR = 1e-3
RANK = 16


def _problem():
    model = mlp(SIZES)
    x = torch.randn(64, SIZES[0], generator=torch.Generator().manual_seed(0))
    model(x).square().mean().backward()
    return model, [p.grad.detach().clone() for p in model.parameters()]


def _ours(transform: ifn.GradientTransformation, warmup: int = 0) -> Callable[[], object]:
    model, grads = _problem()
    names = [name for name, _ in model.named_parameters()]
    box = {"params": {name: p.detach().clone() for name, p in model.named_parameters()}}
    gradient = dict(zip(names, grads))
    tx = ifn.chain(transform, ifn.scale_by_learning_rate(LR))
    box["state"] = tx.init(box["params"])

    def step():
        updates, box["state"] = tx.update(gradient, box["state"], box["params"])
        box["params"] = ifn.apply_updates(box["params"], updates)

    for _ in range(warmup):
        step()
    return step


def _torchzero(module: Callable, warmup: int = 0, copy: bool = True) -> Callable[[], object] | None:
    try:
        import torchzero as tz
    except ImportError:
        return None
    model, grads = _problem()
    opt = tz.Optimizer(model.parameters(), module(tz.m), tz.m.LR(LR))
    parameters = list(model.parameters())

    def step():
        for p, g in zip(parameters, grads):
            p.grad = g.clone() if copy else g
        opt.step()

    for _ in range(warmup):
        step()
    return step


CASES = {
    "coordinate_momentum": (lambda: coordinate_momentum(), lambda m: m.experimental.CoordinateMomentum(), 0),
    "cubic_adam": (lambda: cubic_adam(), lambda m: m.experimental.CubicAdam(), 0),
    "reduce_outward_lr": (lambda: reduce_outward_lr(), lambda m: m.experimental.ReduceOutwardLR(), 0),
    f"subspace_cubic_adam (rank {RANK})": (
        lambda: subspace_cubic_adam(RANK),
        lambda m: m.GGT(history_size=RANK, basis_optimizer=m.experimental.SubspaceCubicAdam()),
        RANK,
    ),
}


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    """``(name, our step, torchzero's step)`` per module, a learning rate after each."""
    return [(name, _ours(ours(), warmup), _torchzero(theirs, warmup)) for name, (ours, theirs, warmup) in CASES.items()]


def main() -> None:
    args = parse_bench_arguments(__doc__)
    print(f"{parameter_count(mlp(SIZES)) / 1e6:.2f}M parameters")
    _, grads = _problem()
    copy_only = lambda: [g.clone() for g in grads]  # noqa: E731
    for name, ours, theirs in cases():
        if theirs is None:
            print(f"  {name:<34}{interleaved_medians({'ours': ours}, args.repeats)['ours'] * 1e3:>9.2f} ms")
            continue
        assigned = _torchzero(CASES[name][1], CASES[name][2], copy=False)
        steps = {"ours": ours, "torchzero": theirs, "assigned": assigned, "copy": copy_only}
        seconds = {key: value * 1e3 for key, value in interleaved_medians(steps, args.repeats).items()}
        print(
            f"  {name:<34}ours {seconds['ours']:8.2f} ms | torchzero {seconds['torchzero']:8.2f} ms "
            f"{seconds['ours'] / seconds['torchzero']:.2f}x | grads assigned {seconds['assigned']:8.2f} ms "
            f"{seconds['ours'] / seconds['assigned']:.2f}x | copy alone {seconds['copy']:.2f} ms"
        )


if __name__ == "__main__":
    main()
