"""Training N seeds at once: one vmapped step vs a Python loop of steps.

For N = 1, 8, 32 seeds of an MLP 784→128→10 (batch 64 per seed), time one adam training
step (a) vmapped over the seeds with ifn.step, (b) a Python loop of functional ifn.step
calls, (c) a Python loop of nn.Module + torch.optim.Adam(foreach=True) steps, and print
the speedups of (a) over (b) and over (c).

Run: python bench/vmap_seeds.py [--repeats N]
"""

from __future__ import annotations

import argparse
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


def measure(seeds: int, repeats: int) -> tuple[float, float, float]:
    models = [mlp(SIZES, seed) for seed in range(seeds)]
    xs = torch.randn(seeds, BATCH, SIZES[0])
    ys = torch.randint(0, SIZES[-1], (seeds, BATCH))
    base = models[0]
    tx = ifn.adam(1e-3)

    def train_step(params, state, x, y):
        loss_fn = lambda p: nn.functional.cross_entropy(functional_call(base, p, (x,)), y)  # noqa: E731
        return ifn.step(tx, state, params, loss_fn)[:2]

    stacked, _ = stack_module_state(models)
    stacked = {k: v.detach() for k, v in stacked.items()}
    batched = {"params": stacked, "state": vmap(tx.init)(stacked)}
    batched_step = vmap(train_step)

    def vmapped():
        batched["params"], batched["state"] = batched_step(batched["params"], batched["state"], xs, ys)

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

    seconds = interleaved_medians({"vmapped": vmapped, "functional": functional_loop, "module": module_loop}, repeats)
    return seconds["vmapped"], seconds["functional"], seconds["module"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP {SIZES}, batch {BATCH}, adam")
    print(f"{'seeds':>6}{'vmapped':>12}{'func loop':>12}{'module loop':>13}{'vs func loop':>14}{'vs module loop':>16}")
    for seeds in (1, 8, 32):
        vmapped, functional, module = measure(seeds, args.repeats)
        print(
            f"{seeds:>6}{vmapped * 1e3:>10.2f}ms{functional * 1e3:>10.2f}ms{module * 1e3:>11.2f}ms"
            f"{functional / vmapped:>13.2f}x{module / vmapped:>15.2f}x"
        )


if __name__ == "__main__":
    main()
