"""Projections with an Adam inner: one step of ours next to torchzero's module on a
1M-parameter MLP.

Each case runs Adam in the projected space (the per-leaf and the 1-D real FFT, the
tensorized vector, the block partition in both layouts) and then a learning rate, and
applies the update. The gradient is already in place, so only the optimizer step is timed
(round-robin): ours is ``update`` + ``apply_updates`` carrying its state; torchzero's is
``Optimizer.step()`` on ``.grad`` fields set by assignment (its projections read the
gradient without writing to it).

Run: python bench/experimental_projections.py [--repeats N]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mlp, parameter_count, parse_bench_arguments, print_case_ratios  # noqa: E402

import infty_func as ifn  # noqa: E402
from infty_func.experimental.block_partition import block_partition  # noqa: E402
from infty_func.experimental.fft_projection import fft_projection  # noqa: E402
from infty_func.experimental.tensorize_projection import tensorize_projection  # noqa: E402

SIZES = (512, 1024, 512, 10)
LR = 1e-3
MAX_SIDE = 1024
BLOCK_SIZE = 4096
# torchzero's batched layout fails unless the block size divides every leaf it splits:
# 1024 divides 512·1024, 1024·512 and 512·10, and the biases stay whole.
BATCHED_BLOCK_SIZE = 1024


def _problem():
    model = mlp(SIZES)
    x = torch.randn(64, SIZES[0])
    model(x).square().mean().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    return model, grads


def _ours(projection: Callable[[ifn.GradientTransformation], ifn.GradientTransformation]) -> Callable[[], object]:
    model, grads = _problem()
    names = [name for name, _ in model.named_parameters()]
    box = {"params": {name: p.detach().clone() for name, p in model.named_parameters()}}
    gradient = dict(zip(names, grads))
    tx = ifn.chain(projection(ifn.scale_by_adam()), ifn.scale_by_learning_rate(LR))
    box["state"] = tx.init(box["params"])

    def step():
        updates, box["state"] = tx.update(gradient, box["state"], box["params"])
        box["params"] = ifn.apply_updates(box["params"], updates)

    return step


def _torchzero(projection: Callable) -> Callable[[], object] | None:
    try:
        import torchzero as tz
    except ImportError:
        return None
    model, grads = _problem()
    opt = tz.Optimizer(model.parameters(), projection(tz.m.experimental, tz.m.Adam()), tz.m.LR(LR))
    parameters = list(model.parameters())

    def step():
        for p, g in zip(parameters, grads):
            p.grad = g
        opt.step()

    return step


CASES = {
    "fft_projection (per leaf)": (lambda inner: fft_projection(inner), lambda x, inner: x.FFTProjection(inner)),
    "fft_projection (one_d)": (
        lambda inner: fft_projection(inner, one_d=True),
        lambda x, inner: x.FFTProjection(inner, one_d=True),
    ),
    f"tensorize_projection (max_side={MAX_SIDE})": (
        lambda inner: tensorize_projection(inner, MAX_SIDE),
        lambda x, inner: x.TensorizeProjection(inner, max_side=MAX_SIDE),
    ),
    f"block_partition ({BLOCK_SIZE})": (
        lambda inner: block_partition(inner, BLOCK_SIZE),
        lambda x, inner: x.BlockPartition(inner, max_size=BLOCK_SIZE),
    ),
    f"block_partition ({BATCHED_BLOCK_SIZE}, batched)": (
        lambda inner: block_partition(inner, BATCHED_BLOCK_SIZE, batched=True),
        lambda x, inner: x.BlockPartition(inner, max_size=BATCHED_BLOCK_SIZE, batched=True),
    ),
}


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    """``(name, our step, torchzero's step)`` per projection, Adam inside."""
    return [(name, _ours(ours), _torchzero(theirs)) for name, (ours, theirs) in CASES.items()]


def main() -> None:
    args = parse_bench_arguments(__doc__)
    torch.manual_seed(0)
    print(f"{parameter_count(mlp(SIZES)) / 1e6:.2f}M parameters, Adam inside each projection, {torch.get_num_threads()} threads")
    print(f"{'module':<44}{'ours ms':>10}{'torchzero ms':>14}{'ratio':>8}")
    print_case_ratios(cases(), args.repeats)


if __name__ == "__main__":
    main()
