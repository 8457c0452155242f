"""Data-parallel zeroth-order training by sharing scalars.

Workers that hold the same parameters and the same key draw the same directions, so to
agree on a step they only need the projected differences, ``q`` scalars, averaged over
workers: ``zo_gradient(..., reduce=all_reduce_mean)``. No parameter-sized tensor crosses
the network (a backprop data-parallel step all-reduces every gradient).
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_mean"]


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over the workers of the default process group (a copy; the
    input is left alone). Outside an initialised process group it returns ``values``."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()
