"""The methods the demo compares: one line each, name -> factory of a transform.

A factory takes no argument and returns a fresh ``GradientTransformation`` that outputs
updates (learning rate included). Methods that re-evaluate the loss get ``loss_fn`` from
``ifn.step``; nothing else is needed to add them here.
"""

from __future__ import annotations

from collections.abc import Callable

import infty_func as ifn

METHODS: dict[str, Callable[[], ifn.GradientTransformation]] = {
    "sgd": lambda: ifn.sgd(0.1),
    "sgd_momentum": lambda: ifn.sgd(0.05, momentum=0.9),
    "adam": lambda: ifn.adam(1e-3),
    "sam": lambda: ifn.chain(ifn.sam(0.05), ifn.sgd(0.05, momentum=0.9)),
    "gsam": lambda: ifn.chain(ifn.gsam(0.05, alpha=0.2), ifn.sgd(0.05, momentum=0.9)),
    "looksam": lambda: ifn.chain(ifn.looksam(0.05, k=5, alpha=0.1), ifn.sgd(0.05, momentum=0.9)),
    "c_flat": lambda: ifn.chain(ifn.c_flat(0.05, lamb=0.2), ifn.sgd(0.05, momentum=0.9)),
    # small model: holding each direction for its query beats regenerating it three times
    "zo_sgd": lambda: ifn.zo_sgd(0.002, momentum=0.9, q=4, memory_efficient=False, seed=0),
    "zo_adam": lambda: ifn.zo_adam(3e-3, q=4, memory_efficient=False, seed=0),
    "forward_grad": lambda: ifn.forward_grad(0.01, n_tangents=8, seed=0),
    "laplacian_smoothing": lambda: ifn.chain(ifn.laplacian_smoothing(1.0), ifn.sgd(0.05, momentum=0.9)),
    "gradient_sampling": lambda: ifn.chain(ifn.gradient_sampling(0.01, n=4, fixed=False, seed=0), ifn.sgd(0.05, momentum=0.9)),
    # two objectives from a replay buffer: old-task loss, new-task loss (see continual.py)
    "pcgrad": lambda: ifn.chain(ifn.pcgrad(seed=0), ifn.sgd(0.05, momentum=0.9)),
    "cagrad": lambda: ifn.chain(ifn.cagrad(0.5), ifn.sgd(0.05, momentum=0.9)),
    "gradvac": lambda: ifn.chain(ifn.gradvac(0.9, 0.1, pairs="first"), ifn.sgd(0.05, momentum=0.9)),
    "config": lambda: ifn.chain(ifn.config(), ifn.sgd(0.05, momentum=0.9)),
    "unigrad_fs": lambda: ifn.chain(ifn.unigrad_fs(0.05), ifn.sgd(0.05, momentum=0.9)),
}

# Methods trained on the two objectives of a replay buffer (old task, new task).
MULTI_OBJECTIVE = {"pcgrad", "cagrad", "gradvac", "config", "unigrad_fs"}
