"""The experimental modules next to torchzero's, each pair timed round-robin in one process.

Collects the cases of the four group scripts (element-wise, projections, Newton family,
trust regions): each case is a step of ours and the same step of the torchzero module on
the same problem. Prints the time of each and ours / torchzero.

Run: python bench/experimental.py [--repeats N] [--threads T] [--only GROUP ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians  # noqa: E402

GROUPS = ("elementwise", "projections", "newton", "trust_region")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", nargs="*", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 gives steadier numbers on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} torch threads")
    print(f"{'module':<44}{'ours ms':>10}{'torchzero ms':>14}{'ratio':>8}")
    for group in args.only:
        module = importlib.import_module(f"experimental_{group}")
        print(f"-- {group}")
        for name, ours, reference in module.cases():
            steps = {"ours": ours} if reference is None else {"ours": ours, "torchzero": reference}
            seconds = interleaved_medians(steps, args.repeats)
            if reference is None:
                print(f"{name:<44}{seconds['ours'] * 1e3:>10.2f}{'-':>14}{'-':>8}")
            else:
                ratio = seconds["ours"] / seconds["torchzero"]
                print(f"{name:<44}{seconds['ours'] * 1e3:>10.2f}{seconds['torchzero'] * 1e3:>14.2f}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
