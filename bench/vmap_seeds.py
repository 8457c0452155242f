"""Training N seeds at once: one vmapped step vs a Python loop of steps.

For N = 1, 8, 32 seeds of an MLP 784→128→10 (batch 64 per seed), time one adam training
step (a) vmapped over the seeds with ifn.step, pure, (a') with donate=True (the step
writes into the stacked params and state) and (a'') with reuse_gradients=True as well (the
update runs in the gradients' memory), (b) a Python loop of functional ifn.step calls,
(c) a Python loop of nn.Module + torch.optim.Adam(foreach=True) steps, and print the
speedups of (a), (a') and (a'') over (b) and over (c).

On Linux, glibc hands large freed blocks back to the kernel, so every new stacked buffer
(32 seeds × 100k parameters = 12.8 MB) is page-faulted in again on each step. Set
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=10000000000 (or preload jemalloc or
tcmalloc, as PyTorch's CPU tuning guide advises) to keep them; the script says which
allocator settings it ran under.

Run: python bench/vmap_seeds.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, mlp  # noqa: E402

import infty_func as ifn  # noqa: E402

SIZES = (784, 128, 10)
BATCH = 64


def measure(seeds: int, repeats: int) -> dict[str, float]:
    models = [mlp(SIZES, seed) for seed in range(seeds)]
    xs = torch.randn(seeds, BATCH, SIZES[0])
    ys = torch.randint(0, SIZES[-1], (seeds, BATCH))
    base = models[0]
    tx = ifn.adam(1e-3)

    def train_step(params, state, x, y, donate=False, reuse=False):
        loss_fn = lambda p: nn.functional.cross_entropy(functional_call(base, p, (x,)), y)  # noqa: E731
        return ifn.step(tx, state, params, loss_fn, donate=donate, reuse_gradients=reuse)[:2]

    def vmapped_stepper(donate, reuse=False):
        stacked, _ = stack_module_state(models)
        stacked = {k: v.detach().clone() for k, v in stacked.items()}
        batched = {"params": stacked, "state": vmap(tx.init)(stacked)}
        batched_step = vmap(lambda p, s, x, y: train_step(p, s, x, y, donate, reuse))

        def vmapped():
            batched["params"], batched["state"] = batched_step(batched["params"], batched["state"], xs, ys)

        return vmapped

    members = []
    for model in models:
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        members.append({"params": params, "state": tx.init(params)})

    def functional_loop():
        for i, member in enumerate(members):
            member["params"], member["state"] = train_step(member["params"], member["state"], xs[i], ys[i])

    optimizers = [torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True) for model in models]

    def module_loop():
        for i, (model, opt) in enumerate(zip(models, optimizers)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[i]), ys[i]).backward()
            opt.step()

    steppers = {
        "vmapped": vmapped_stepper(False),
        "donated": vmapped_stepper(True),
        "reused": vmapped_stepper(True, reuse=True),
        "functional": functional_loop,
        "module": module_loop,
    }
    return interleaved_medians(steppers, repeats)


def allocator_settings() -> str:
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
    chosen = [f"{name}={os.environ[name]}" for name in names if os.environ.get(name)]
    return ", ".join(chosen) if chosen else "glibc malloc defaults"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP {SIZES}, batch {BATCH}, adam")
    print(f"allocator: {allocator_settings()}")
    columns = ("vmapped", "donated", "reused", "func loop", "module loop")
    speedups = [f"{ours}/{loop}" for ours in ("pure", "donated", "reused") for loop in ("func", "module")]
    print(f"{'seeds':>6}" + "".join(f"{c:>12}" for c in columns) + "".join(f"{c:>15}" for c in speedups))
    for seeds in (1, 8, 32):
        t = measure(seeds, args.repeats)
        times = "".join(f"{t[k] * 1e3:>10.2f}ms" for k in ("vmapped", "donated", "reused", "functional", "module"))
        ratios = "".join(
            f"{t[loop] / t[ours]:>14.2f}x"
            for ours in ("vmapped", "donated", "reused")
            for loop in ("functional", "module")
        )
        print(f"{seeds:>6}{times}{ratios}")


if __name__ == "__main__":
    main()
