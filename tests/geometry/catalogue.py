"""Every geometry transform with its extra gradient evaluations per step, so property and
counting tests cover a new method by one line here."""

from __future__ import annotations

import infty_func as ifn

# name -> (transform factory, extra loss_fn gradient evaluations on steps 1..6)
GEOMETRY = {
    "sam": (lambda: ifn.sam(0.05), [1] * 6),
    "asam": (lambda: ifn.sam(0.5, adaptive=True), [1] * 6),
    "gsam": (lambda: ifn.gsam(0.05, alpha=0.3), [1] * 6),
    "gam": (lambda: ifn.gam(0.05, norm_rho=0.03), [3] * 6),
    "looksam": (lambda: ifn.looksam(0.05, k=3, alpha=0.7), [0, 0, 1, 0, 0, 1]),
    "c_flat": (lambda: ifn.c_flat(0.05, lamb=0.2), [3] * 6),
    # t0 = 3, A = 0.5: the gate opens after a few steps on the test problem
    "c_flat_plus": (lambda: ifn.c_flat(0.05, lamb=0.2, strategy="plus", A=0.5, t0=3, k=1.0), None),
}

NAMES = sorted(GEOMETRY)


def build(name):
    return GEOMETRY[name][0]()
