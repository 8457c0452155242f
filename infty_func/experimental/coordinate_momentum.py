"""Coordinate momentum: a buffer whose entries are refreshed at random, one coin per entry."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like

__all__ = ["coordinate_momentum", "CoordinateMomentumState"]

_WORDS = 1 << 32  # random.bits draws int32 words, uniform over 2**32 values


class CoordinateMomentumState(NamedTuple):
    key: Tensor  # int64 [2], advanced on every update
    velocity: PyTree  # the last update value each coordinate took


def _refresh_masks(key: Tensor, p_words: int, leaves: list[Tensor]) -> list[Tensor]:
    """One boolean mask per leaf, each entry True with probability ``p_words / 2**32``:
    a leaf's uniform int32 words (its own stream, ``fold_in(key, index)``) compared with a
    threshold, without converting them to floats."""
    threshold = p_words - (1 << 31)  # words are uniform over [-2**31, 2**31)
    return [
        (random.bits(random.fold_in(key, index), leaf.numel(), leaf.device) < threshold).reshape(leaf.shape)
        for index, leaf in enumerate(leaves)
    ]


def coordinate_momentum(p: float = 0.1, seed: int = 0) -> GradientTransformation:
    """Coordinate momentum (torchzero's experimental ``CoordinateMomentum``): a velocity
    buffer ``v`` of which every entry, independently with probability ``p`` on each step,
    is overwritten by the incoming update; the output is the buffer.

    ``maskᵢ ~ Bernoulli(p)``, ``vᵢ ← gᵢ`` where ``maskᵢ``, else ``vᵢ`` unchanged; output
    ``v``. The buffer starts at zero, so an entry outputs 0 until its first refresh. An
    entry holds the update of ``k`` steps ago with probability ``p (1 − p)ᵏ``: in
    expectation this is an exponential moving average with ``β = 1 − p``,
    ``E[vₜ] = p gₜ + (1 − p) E[vₜ₋₁]``, with the average replaced by a random pick.

    Args:
        p: probability that an entry takes the new value on a step, in ``[0, 1]``
            (torchzero's default 0.1). ``p = 1`` is the identity, ``p = 0`` outputs zeros.
        seed: the seed of the key carried in the state; the key advances on every update
            and each leaf draws its own stream from it.

    Differences from torchzero: the coins come from the state's key (``torch.bernoulli``
    on the global generator there), so a run is reproducible from the seed, each vmapped
    member can carry its own key (``ifn.random.reseed``), and ``p`` is rounded to a
    multiple of ``2⁻³²`` (the coins compare 32-bit random words with a threshold).
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"coordinate_momentum: p must be a probability in [0, 1], got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"coordinate_momentum: seed must be an int, got {seed!r}")
    p_words = round(p * _WORDS)

    def init_fn(params):
        return CoordinateMomentumState(key=random.key(seed), velocity=tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        grads, spec = tree_flatten(updates)
        velocity, _ = tree_flatten(state.velocity)
        if p_words == 0:  # never refreshed (the threshold would not fit an int32 word)
            new_velocity = velocity
        elif p_words == _WORDS:  # always refreshed
            new_velocity = list(grads)
        else:
            masks = _refresh_masks(state.key, p_words, grads)
            new_velocity = [torch.where(mask, g, v) for mask, g, v in zip(masks, grads, velocity)]
        new_state = CoordinateMomentumState(key=random.next_key(state.key), velocity=tree_unflatten(new_velocity, spec))
        return tree_unflatten(new_velocity, spec), new_state

    return GradientTransformation(init_fn, update_fn)
