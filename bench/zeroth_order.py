"""What a zeroth-order step costs in time and memory, next to ``infty.optim.ZeroFlow``.

Time (100k-parameter MLP, batch 128, every variant timed round-robin): a plain backprop
SGD step, two forward passes, drawing the noise once (ours and ``torch.randn``), infty's
ZeroFlow ``zo_sgd`` (q=1, two-sided) with and without ``memory_efficient``, our
``ifn.optim.ZeroFlow`` and our functional ``ifn.zo_sgd`` the same ways. Printed as
milliseconds, as multiples of infty's step and of (two forwards + noise once).

Memory (~50M-parameter MLP, batch 32, each in its own process): the peak resident memory
above the idle process (model and batch loaded) of an inference pass, a backprop step, our
ZeroFlow step with ``memory_efficient=True``, our functional step, and infty's ZeroFlow
with ``memory_efficient=True``; with the size of the largest parameter for scale.

Run: python bench/zeroth_order.py [--repeats N] [--skip-memory] [--skip-time]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import classification_problem, functional_stepper, interleaved_medians, mlp, parameter_count  # noqa: E402

import infty_func as ifn  # noqa: E402
from infty_func.zeroth_order.directions import Directions  # noqa: E402

try:
    from infty.optim import ZeroFlow as InftyZeroFlow
except ImportError:  # reference absent: print ours only
    InftyZeroFlow = None

SMALL, SMALL_BATCH = (256, 256, 128, 10), 128
MEDIUM = (1024, 2048, 1536, 10)  # 5M parameters, timed with the small batch
LARGE, LARGE_BATCH = (4096, 4096, 4096, 4096, 10), 32
LR, EPS = 1e-3, 1e-3


def backprop_step(sizes, batch):
    model, x, y = classification_problem(sizes, batch)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def two_forwards(sizes, batch):
    model, x, y = classification_problem(sizes, batch)

    @torch.no_grad()
    def step():
        nn.functional.cross_entropy(model(x), y)
        nn.functional.cross_entropy(model(x), y)

    return step


def noise_once(sizes, ours=True):
    model = mlp(sizes)
    params = {n: p.detach() for n, p in model.named_parameters()}
    key = ifn.random.key(0)
    leaves = list(params.values())
    if ours:  # the directions of one query, as the estimator draws them (all leaves in one call)
        return lambda: Directions(key, leaves, [None] * len(leaves)).all()
    return lambda: [torch.randn_like(p) for p in leaves]


def zeroflow_step(cls, sizes, batch, memory_efficient):
    model, x, y = classification_problem(sizes, batch)
    base = torch.optim.SGD(model.parameters(), lr=LR)
    opt = cls(model.parameters(), base, model, args={"inftyopt": "zo_sgd", "zo_eps": EPS, "memory_efficient": memory_efficient})

    def closure():
        logits = model(x)
        return logits, [nn.functional.cross_entropy(logits, y)]

    opt.set_closure(closure)
    return opt.step


def functional_step(sizes, batch, memory_efficient):
    model, x, y = classification_problem(sizes, batch)
    tx = ifn.zo_sgd(LR, zo_eps=EPS, memory_efficient=memory_efficient)

    def loss_fn(params):
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return functional_stepper(model, tx, loss_fn)


def time_section(sizes, repeats: int) -> None:
    count = parameter_count(mlp(sizes))
    print(f"time: {count / 1e3:.0f}k-parameter MLP, batch {SMALL_BATCH}, zo_sgd q=1 two-sided")
    steps = {
        "backprop SGD step": backprop_step(sizes, SMALL_BATCH),
        "two forward passes": two_forwards(sizes, SMALL_BATCH),
        "noise once (ours)": noise_once(sizes, ours=True),
        "noise once (torch.randn)": noise_once(sizes, ours=False),
        "ifn.optim.ZeroFlow": zeroflow_step(ifn.optim.ZeroFlow, sizes, SMALL_BATCH, False),
        "ifn.optim.ZeroFlow memory_efficient": zeroflow_step(ifn.optim.ZeroFlow, sizes, SMALL_BATCH, True),
        "functional ifn.zo_sgd": functional_step(sizes, SMALL_BATCH, False),
        "functional ifn.zo_sgd memory_efficient": functional_step(sizes, SMALL_BATCH, True),
    }
    if InftyZeroFlow is not None:
        steps["infty ZeroFlow"] = zeroflow_step(InftyZeroFlow, sizes, SMALL_BATCH, False)
        steps["infty ZeroFlow memory_efficient"] = zeroflow_step(InftyZeroFlow, sizes, SMALL_BATCH, True)
    seconds = interleaved_medians(steps, repeats)
    floor = seconds["two forward passes"] + seconds["noise once (ours)"]
    reference = seconds.get("infty ZeroFlow")
    print(f"  {'':<40}{'ms':>8}{'x backprop':>12}{'x floor':>9}{'x infty':>9}")
    for name, value in seconds.items():
        vs_infty = f"{value / reference:>8.2f}x" if reference else f"{'-':>9}"
        print(f"  {name:<40}{value * 1e3:>8.3f}{value / seconds['backprop SGD step']:>11.2f}x{value / floor:>8.2f}x{vs_infty}")
    print("  floor = two forward passes + noise once (ours)")


MEMORY_CASES = ("inference", "backprop", "ifn ZeroFlow memory_efficient", "ifn functional memory_efficient",
                "infty ZeroFlow memory_efficient")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_worker(case: str) -> None:
    """Run one case in this process and print its peak above idle as JSON."""
    torch.manual_seed(0)
    if case == "inference":
        step = two_forwards(LARGE, LARGE_BATCH)
    elif case == "backprop":
        step = backprop_step(LARGE, LARGE_BATCH)
    elif case == "ifn ZeroFlow memory_efficient":
        step = zeroflow_step(ifn.optim.ZeroFlow, LARGE, LARGE_BATCH, True)
    elif case == "ifn functional memory_efficient":
        step = functional_step(LARGE, LARGE_BATCH, True)
    elif case == "infty ZeroFlow memory_efficient":
        if InftyZeroFlow is None:
            print(json.dumps({"skipped": "infty not installed"}))
            return
        step = zeroflow_step(InftyZeroFlow, LARGE, LARGE_BATCH, True)
    else:
        raise ValueError(case)
    idle = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:  # restart the high-water mark from here
        f.write("5")
    for _ in range(2):
        step()
    print(json.dumps({"above_idle_mb": _peak_mb() - idle, "idle_mb": idle}))


def memory_section() -> None:
    model = mlp(LARGE)
    params = list(model.parameters())
    param_mb = sum(p.numel() for p in params) * 4 / 2**20
    largest_mb = max(p.numel() for p in params) * 4 / 2**20
    del model, params
    print(f"\nmemory: {param_mb * 2**20 / 4 / 1e6:.1f}M-parameter MLP ({param_mb:.0f} MB), batch {LARGE_BATCH}; "
          f"largest parameter {largest_mb:.0f} MB; peak resident memory above the idle process")
    results = {}
    for case in MEMORY_CASES:
        out = subprocess.run([sys.executable, __file__, "--memory-worker", case], capture_output=True, text=True, check=True)
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    inference = results["inference"]["above_idle_mb"]
    for case, result in results.items():
        if "skipped" in result:
            print(f"  {case:<36} skipped ({result['skipped']})")
            continue
        above = result["above_idle_mb"]
        print(f"  {case:<36}{above:>9.1f} MB  {above / param_mb:>5.2f}x params  "
              f"(inference + largest parameter = {inference + largest_mb:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args.memory_worker)
        return
    if not args.skip_time:
        time_section(SMALL, args.repeats)
        print()
        time_section(MEDIUM, max(5, args.repeats // 3))
    if not args.skip_memory:
        memory_section()


if __name__ == "__main__":
    main()
