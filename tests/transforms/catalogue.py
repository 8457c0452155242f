"""Every transform of the core and transforms packages, built on the test MLP's params.

Property tests run over this list, so a new transform joins them by one line here.
"""

from __future__ import annotations

import torch

import infty_func as ifn
from infty_func.transforms import schedules


def _bias_mask(params):
    return {name: name.endswith("bias") for name in params}


def _labels(params):
    return {name: "slow" if name.startswith("0.") else "fast" for name in params}


def catalogue():
    return {
        "identity": ifn.identity(),
        "stateless": ifn.stateless(lambda u, p: ifn.tree_scale(u, -0.1)),
        "scale": ifn.scale(-0.05),
        "scale_by_learning_rate": ifn.scale_by_learning_rate(0.05),
        "scale_by_learning_rate_schedule": ifn.scale_by_learning_rate(schedules.cosine_decay(0.1, 50)),
        "scale_by_schedule": ifn.scale_by_schedule(schedules.piecewise_constant(-0.1, {10: 0.5})),
        "trace": ifn.chain(ifn.trace(0.9), ifn.scale(-0.01)),
        "trace_nesterov": ifn.chain(ifn.trace(0.9, nesterov=True), ifn.scale(-0.01)),
        "scale_by_adam": ifn.chain(ifn.scale_by_adam(), ifn.scale(-0.01)),
        "scale_by_adam_amsgrad": ifn.chain(ifn.scale_by_adam(amsgrad=True), ifn.scale(-0.01)),
        "scale_by_rms": ifn.chain(ifn.scale_by_rms(centered=True), ifn.scale(-0.01)),
        "add_decayed_weights": ifn.chain(ifn.add_decayed_weights(0.1, mask=_bias_mask), ifn.scale(-0.05)),
        "clip": ifn.chain(ifn.clip(0.01), ifn.scale(-1.0)),
        "clip_by_global_norm": ifn.chain(ifn.clip_by_global_norm(0.1), ifn.scale(-0.5)),
        "masked": ifn.masked(ifn.sgd(0.1, momentum=0.5), _bias_mask),
        "partition": ifn.partition({"slow": ifn.sgd(0.01), "fast": ifn.adam(0.01)}, _labels),
        "freeze": ifn.chain(ifn.freeze(_bias_mask), ifn.sgd(0.1)),
        "apply_if_finite": ifn.apply_if_finite(ifn.adam(0.01)),
        "inject_hyperparams": ifn.inject_hyperparams(ifn.sgd)(lr=schedules.linear(0.1, 0.01, 30), momentum=0.9),
        "multi_steps": ifn.multi_steps(ifn.adam(0.01), every_k=3),
        "named_chain": ifn.named_chain(("clip", ifn.clip_by_global_norm(1.0)), ("opt", ifn.adam(0.01))),
        "sgd": ifn.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "adam": ifn.adam(1e-2, weight_decay=1e-3, amsgrad=True),
        "adamw": ifn.adamw(1e-2),
        "rmsprop": ifn.rmsprop(1e-3, momentum=0.9, centered=True),
    }


NAMES = sorted(catalogue())


def build(name):
    return catalogue()[name]


def float_leaves(tree):
    return [leaf for leaf in ifn.tree_leaves(tree) if torch.is_floating_point(leaf)]
