"""How much an infty_func optimizer step costs next to torch.optim and torchopt.

Part 1: one adam update on a ~10M-parameter MLP whose gradients are present, through
(a) the pure functional update + apply_updates, (b) TransformOptimizer, (c)
torch.optim.Adam(foreach=True) [the baseline], (c') Adam(fused=True), (d) torchopt's
functional adam in place and out of place (skipped with a note when torchopt is absent).
Part 2: a whole training step (loss, gradient, adam update) through ifn.step, pure and with
donate=True (the step writes into the params and state it is given), vs nn.Module +
torch.optim.Adam on a 100k- and a 10M-parameter MLP.

Run: python bench/optimizer_overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import functional_stepper, median_seconds, mlp, parameter_count, ratio_line  # noqa: E402

import infty_func as ifn  # noqa: E402

LARGE = (1024, 2048, 2048, 2048, 512)  # 11.5M parameters
SMALL = (256, 256, 128, 10)  # 100k parameters


def with_gradients(sizes):
    model = mlp(sizes)
    x = torch.randn(32, sizes[0])
    model(x).square().mean().backward()
    return model


def update_only(repeats: int) -> None:
    model = with_gradients(LARGE)
    print(f"adam update only, {parameter_count(model) / 1e6:.1f}M parameters (x = / torch Adam foreach)")
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    reference = with_gradients(LARGE)
    torch_adam = torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=True)
    baseline = median_seconds(torch_adam.step, repeats)
    results = {"torch.optim.Adam(foreach=True)": baseline}

    fused_model = with_gradients(LARGE)
    fused = torch.optim.Adam(fused_model.parameters(), lr=1e-3, fused=True)
    results["torch.optim.Adam(fused=True)"] = median_seconds(fused.step, repeats)

    tx = ifn.adam(1e-3)
    box = {"params": params, "state": tx.init(params)}

    def functional_step():
        updates, box["state"] = tx.update(grads, box["state"], box["params"])
        box["params"] = ifn.apply_updates(box["params"], updates)

    results["ifn.adam functional + apply_updates"] = median_seconds(functional_step, repeats)

    adapter_model = with_gradients(LARGE)
    adapter = ifn.optim.TransformOptimizer(adapter_model.named_parameters(), ifn.adam(1e-3))
    results["ifn.optim.TransformOptimizer(adam)"] = median_seconds(adapter.step, repeats)

    try:
        import torchopt
    except ImportError:
        print("  torchopt not installed: its rows are skipped (pip install torchopt)")
    else:
        for inplace in (True, False):
            topt = torchopt.adam(1e-3)
            tparams = tuple(p.detach().clone() for p in model.parameters())
            tgrads = tuple(p.grad.detach().clone() for p in model.parameters())
            tbox = {"params": tparams, "state": topt.init(tparams)}

            def torchopt_step(inplace=inplace, topt=topt, tbox=tbox, tgrads=tgrads):
                updates, tbox["state"] = topt.update(tgrads, tbox["state"], inplace=inplace)
                tbox["params"] = torchopt.apply_updates(tbox["params"], updates, inplace=inplace)

            label = "in place" if inplace else "out of place"
            results[f"torchopt.adam functional ({label})"] = median_seconds(torchopt_step, repeats)

    for name, seconds in results.items():
        print(ratio_line(name, seconds, baseline))


def training_step(sizes, repeats: int) -> None:
    model = mlp(sizes)
    x = torch.randn(64, sizes[0])
    y = torch.randint(0, sizes[-1], (64,))
    print(f"whole training step, {parameter_count(model) / 1e6:.2f}M parameters, batch 64 (x = / nn.Module + Adam)")

    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def module_step():
        torch_opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        torch_opt.step()

    baseline = median_seconds(module_step, repeats)
    functional_model = mlp(sizes)

    def loss_fn(p):
        return nn.functional.cross_entropy(functional_call(functional_model, p, (x,)), y)

    functional_step = functional_stepper(functional_model, ifn.adam(1e-3), loss_fn)
    donated_step = functional_stepper(functional_model, ifn.adam(1e-3), loss_fn, donate=True)
    reusing_step = functional_stepper(functional_model, ifn.adam(1e-3), loss_fn, donate=True, reuse_gradients=True)

    def forward_backward():
        functional_model.zero_grad()
        nn.functional.cross_entropy(functional_model(x), y).backward()

    ours = median_seconds(functional_step, repeats)
    donated = median_seconds(donated_step, repeats)
    reusing = median_seconds(reusing_step, repeats)
    print(ratio_line("nn.Module + torch.optim.Adam(foreach=True)", baseline, baseline))
    print(ratio_line("ifn.step(adam) over functional_call", ours, baseline))
    print(ratio_line("ifn.step(adam, donate=True)", donated, baseline))
    print(ratio_line("  ... and reuse_gradients=True", reusing, baseline))
    print(ratio_line("(plain forward + backward alone)", median_seconds(forward_backward, repeats), baseline))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    update_only(args.repeats)
    training_step(SMALL, args.repeats * 5)
    training_step(LARGE, args.repeats)


if __name__ == "__main__":
    main()
