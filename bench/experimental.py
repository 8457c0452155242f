"""The experimental modules next to torchzero's, each pair timed round-robin in one process.

Collects the cases of the four group scripts (element-wise, projections, Newton family,
trust regions): each case is a step of ours and the same step of the torchzero module on
the same problem. Prints the time of each and ours / torchzero.

Run: python bench/experimental.py [--repeats N] [--threads T] [--only GROUP ...]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse_bench_arguments, print_case_ratios  # noqa: E402

GROUPS = ("elementwise", "projections", "newton", "trust_region")


def main() -> None:
    args = parse_bench_arguments(__doc__, extra=lambda p: p.add_argument("--only", nargs="*", choices=GROUPS, default=list(GROUPS)))
    print(f"{torch.get_num_threads()} torch threads")
    print(f"{'module':<44}{'ours ms':>10}{'torchzero ms':>14}{'ratio':>8}")
    for group in args.only:
        print(f"-- {group}")
        print_case_ratios(importlib.import_module(f"experimental_{group}").cases(), args.repeats)


if __name__ == "__main__":
    main()
