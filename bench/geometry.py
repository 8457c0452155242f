"""What the geometry methods cost, as multiples of one plain SGD step, next to ``infty``.

For SAM, ASAM, GSAM, GAM, LookSAM (k=5) and C-Flat, on a 100k- and a 5M-parameter MLP
(batch 128), it times one training step through
  * ``infty.optim.<Class>`` (skipped with a note when infty is absent),
  * ``ifn.optim.<Class>``, the INFTY-compatible shell,
  * the functional path ``ifn.step(ifn.chain(method, ifn.sgd(...)), ...)``,
and prints each as a multiple of a plain ``nn.Module`` + ``torch.optim.SGD`` step, the
ratios ours / infty, and the bound ``(1 + extra gradient evaluations) × 1.1`` plain steps.
A minimal hand-written SAM step is timed as a floor. Every variant of a method is timed
round-robin with the plain step, so machine drift hits them alike.

Run: python bench/geometry.py [--repeats N] [--small-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import classification_problem, functional_stepper, interleaved_medians, mlp, parameter_count  # noqa: E402

import infty_func as ifn  # noqa: E402

try:
    import infty.optim as infty_optim
except ImportError:  # reference absent: print ours only
    infty_optim = None

SIZES = {"100k": (256, 256, 128, 10), "5M": (1024, 2048, 1536, 10)}
BATCH = 128
LR, MOMENTUM = 0.05, 0.9

# name -> (infty class name, args, adaptive, functional transform, extra gradient evaluations per step)
METHODS = {
    "SAM": ("SAM", {"rho": 0.05}, False, lambda: ifn.sam(0.05), 1),
    "ASAM": ("SAM", {"rho": 0.5}, True, lambda: ifn.sam(0.5, adaptive=True), 1),
    "GSAM": ("GSAM", {"rho": 0.05, "alpha": 0.2}, False, lambda: ifn.gsam(0.05, 0.2), 1),
    "GAM": ("GAM", {"rho": 0.05, "norm_rho": 0.02}, False, lambda: ifn.gam(0.05, 0.02), 3),
    "LookSAM": ("LookSAM", {"rho": 0.05, "k": 5, "alpha": 0.7}, False, lambda: ifn.looksam(0.05, 5, 0.7), 1 / 5),
    "C-Flat": ("C_Flat", {"rho": 0.05, "lamb": 0.2}, False, lambda: ifn.c_flat(0.05, 0.2), 3),
}


def plain_sgd_step(sizes):
    model, x, y = classification_problem(sizes, BATCH)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def hand_written_sam_step(sizes, rho=0.05):
    model, x, y = classification_problem(sizes, BATCH)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    params = list(model.parameters())

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            grads = [p.grad for p in params]
            scale = rho / (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) + 1e-12)
            perturbation = torch._foreach_mul(grads, scale)
            torch._foreach_add_(params, perturbation)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            torch._foreach_sub_(params, perturbation)
        opt.step()

    return step


def class_step(module, cls_name, args, adaptive, sizes):
    model, x, y = classification_problem(sizes, BATCH)
    base = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    args = dict(args)
    if module is infty_optim and cls_name == "LookSAM":
        args["alpha"] = torch.tensor(args["alpha"])  # infty calls alpha.to(p)
    opt = getattr(module, cls_name)(model.parameters(), base, model, args=args, adaptive=adaptive)

    def closure():
        logits = model(x)
        return logits, [nn.functional.cross_entropy(logits, y)]

    opt.set_closure(closure)
    return opt.step


def functional_step(transform_factory, sizes):
    model, x, y = classification_problem(sizes, BATCH)
    tx = ifn.chain(transform_factory(), ifn.sgd(LR, momentum=MOMENTUM))

    def loss_fn(params):
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return functional_stepper(model, tx, loss_fn)


def run(size_name: str, repeats: int) -> None:
    sizes = SIZES[size_name]
    count = parameter_count(mlp(sizes))
    print(f"\n{size_name} MLP ({count / 1e6:.2f}M parameters), batch {BATCH}")
    columns = ("infty", 9), ("ifn.optim", 11), ("functional", 12), ("bound", 8), ("class/infty", 13), ("func/infty", 12)
    print(f"  {'method':<9}" + "".join(f"{name:>{width}}" for name, width in columns) + "  within bound")
    for name, (cls_name, args, adaptive, factory, extra) in METHODS.items():
        steps = {"sgd": plain_sgd_step(sizes), "hand": hand_written_sam_step(sizes)}
        steps["class"] = class_step(ifn.optim, cls_name, args, adaptive, sizes)
        steps["functional"] = functional_step(factory, sizes)
        if infty_optim is not None:
            steps["infty"] = class_step(infty_optim, cls_name, args, adaptive, sizes)
        seconds = interleaved_medians(steps, repeats)
        ratio = {key: value / seconds["sgd"] for key, value in seconds.items()}
        bound = (1 + extra) * 1.1
        if infty_optim is not None:
            ref_text = f"{ratio['infty']:>8.2f}x"
            ratios = f"{ratio['class'] / ratio['infty']:>12.2f}x{ratio['functional'] / ratio['infty']:>11.2f}x"
        else:
            ref_text, ratios = f"{'-':>9}", f"{'-':>13}{'-':>12}"
        ok = "yes" if max(ratio["class"], ratio["functional"]) <= bound else "NO"
        print(
            f"  {name:<9}{ref_text}{ratio['class']:>10.2f}x{ratio['functional']:>11.2f}x{bound:>7.2f}x{ratios}  {ok}"
            f"   (plain SGD {seconds['sgd'] * 1e3:.2f} ms, hand-written SAM {ratio['hand']:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--small-only", action="store_true")
    parser.add_argument("--large-only", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if infty_optim is None:
        print("infty not installed (pip install --no-deps infty tqdm): printing ours only")
    for size_name in ["100k"] if args.small_only else (["5M"] if args.large_only else ["100k", "5M"]):
        run(size_name, args.repeats)


if __name__ == "__main__":
    main()
