"""Schedules: pure functions ``count -> value`` of the step count.

``count`` is an int64 tensor (it lives in a transform's state), so every schedule is
written in tensor ops with no Python branch on its value: schedules run under vmap, and a
batch of counts gives a batch of values. Python ints are accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Schedule = Callable[[Tensor], Tensor]

__all__ = [
    "Schedule",
    "constant",
    "linear",
    "cosine_decay",
    "warmup_cosine_decay",
    "exponential_decay",
    "piecewise_constant",
    "join",
]


def _as_float(count: Tensor | int) -> Tensor:
    return torch.as_tensor(count).to(torch.float64)


def constant(value: float) -> Schedule:
    """``value`` at every step."""

    def schedule(count):
        return torch.full_like(_as_float(count), value)

    return schedule


def linear(init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0) -> Schedule:
    """``init_value`` until ``transition_begin``, then linearly to ``end_value`` over
    ``transition_steps`` steps, then ``end_value``."""
    if transition_steps <= 0:
        raise ValueError(f"linear schedule needs transition_steps > 0, got {transition_steps}")

    def schedule(count):
        progress = ((_as_float(count) - transition_begin) / transition_steps).clamp(0.0, 1.0)
        return init_value + (end_value - init_value) * progress

    return schedule


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``
    (Loshchilov & Hutter, SGDR, 2017)."""
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay needs decay_steps > 0, got {decay_steps}")

    def schedule(count):
        progress = (_as_float(count) / decay_steps).clamp(0.0, 1.0)
        cosine = (0.5 * (1.0 + torch.cos(math.pi * progress))) ** exponent
        return init_value * ((1.0 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
    cosine decay to ``end_value`` at ``decay_steps`` (counted from step 0)."""
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"warmup_cosine_decay needs decay_steps > warmup_steps, got {decay_steps} <= {warmup_steps}"
        )
    alpha = end_value / peak_value if peak_value != 0 else 0.0
    schedules = [
        linear(init_value, peak_value, max(warmup_steps, 1)),
        cosine_decay(peak_value, decay_steps - warmup_steps, alpha),
    ]
    return join(schedules, [warmup_steps])


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``init_value * decay_rate ** ((count - transition_begin) / transition_steps)``,
    floored when ``staircase``, clipped at ``end_value`` when given."""
    if transition_steps <= 0:
        raise ValueError(f"exponential_decay needs transition_steps > 0, got {transition_steps}")

    def schedule(count):
        exponent = ((_as_float(count) - transition_begin) / transition_steps).clamp_min(0.0)
        if staircase:
            exponent = torch.floor(exponent)
        value = init_value * torch.pow(torch.as_tensor(decay_rate, dtype=torch.float64), exponent)
        if end_value is not None:
            value = value.clamp_min(end_value) if decay_rate < 1 else value.clamp_max(end_value)
        return value

    return schedule


def piecewise_constant(init_value: float, boundaries_and_scales: dict[int, float]) -> Schedule:
    """``init_value`` times the product of every scale whose boundary the count has reached."""
    items = sorted(boundaries_and_scales.items())

    def schedule(count):
        count = torch.as_tensor(count)
        value = torch.full_like(_as_float(count), init_value)
        for boundary, scale in items:
            value = torch.where(count >= boundary, value * scale, value)
        return value

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Schedule ``i`` runs from ``boundaries[i-1]`` on, seeing the count since then."""
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(
            f"join needs one more schedule than boundaries, got {len(schedules)} and {len(boundaries)}"
        )

    def schedule(count):
        count = torch.as_tensor(count)
        value = schedules[0](count)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = torch.where(count >= boundary, later(count - boundary), value)
        return value

    return schedule
