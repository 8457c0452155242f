"""Make the reference packages draw the directions infty_func draws, so that the estimates
can be compared number for number (infty's ZeroFlow seeds the global RNG with a NumPy
draw; torchzero's modules keep their own generators)."""

from __future__ import annotations

import torch

import infty_func as ifn
from infty_func.zeroth_order.directions import Directions, leaf_sparsities, query_key


def spsa_directions(params: dict, seed: int, steps: int, q: int, sparsity=None) -> list[list[torch.Tensor]]:
    """The directions ``zo_gradient(seed=seed, q=q)`` uses, query after query, step after step."""
    fractions = leaf_sparsities(sparsity, params, "test")
    k, out = ifn.random.key(seed), []
    for _ in range(steps):
        for query in range(q):
            out.append(Directions(query_key(k, query), list(params.values()), fractions).all())
        k = ifn.random.next_key(k)
    return out


def forward_tangents(params: dict, seed: int, steps: int) -> list[list[torch.Tensor]]:
    """The tangents ``forward_gradient(seed=seed, n_tangents=1)`` uses, step after step."""
    k, out = ifn.random.key(seed), []
    for _ in range(steps):
        out.append(list(ifn.random.normal_like(ifn.random.fold_in(k, 0), params).values()))
        k = ifn.random.next_key(k)
    return out


class InjectedTorch:
    """Stands in for ``torch`` inside ``infty.optim.zeroth_order_updates.zeroflow``.

    ``manual_seed(s)`` selects direction ``s`` (seeds are numbered by first appearance,
    one per query), and ``normal``/``randn_like`` return its leaves in parameter order;
    everything else is torch's.
    """

    def __init__(self, directions):
        self.directions, self.seen, self.leaf, self.current = directions, {}, 0, None

    def manual_seed(self, seed):
        seed = int(seed)
        self.seen.setdefault(seed, len(self.seen))
        self.current, self.leaf = self.seen[seed], 0

    def _next(self):
        z = self.directions[self.current][self.leaf].clone()
        self.leaf += 1
        return z

    def normal(self, mean=0, std=1, size=None, device=None, dtype=None):
        return self._next()

    def randn_like(self, like):
        return self._next()

    def __getattr__(self, name):
        return getattr(torch, name)
