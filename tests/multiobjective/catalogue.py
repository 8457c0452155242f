"""Every aggregator, so property tests cover a new one by one line here."""

from __future__ import annotations

import infty_func as ifn

AGGREGATORS = {
    "mean": lambda: ifn.mean(),
    "mgda": lambda: ifn.mgda(),
    "pcgrad": lambda: ifn.pcgrad(seed=3),
    "pcgrad_fixed": lambda: ifn.pcgrad(seed=None, eps=1e-8),
    "cagrad": lambda: ifn.cagrad(0.5, rescale=1),
    "gradvac": lambda: ifn.gradvac(0.5, 0.3, m=3),
    "gradvac_layer": lambda: ifn.gradvac(0.5, 0.3, "layer", m=3),
    "imtlg": lambda: ifn.imtlg(),
    "upgrad": lambda: ifn.upgrad(),
    "dualproj": lambda: ifn.dualproj(),
    "aligned_mtl": lambda: ifn.aligned_mtl(),
    "config": lambda: ifn.config(),
    "config_tracking": lambda: ifn.config(length_model="minimum"),
}

NAMES = sorted(AGGREGATORS)
