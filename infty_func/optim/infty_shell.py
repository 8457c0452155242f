"""What every INFTY-compatible class shares: the ``args`` check, a closure's ``loss_list``
as one tensor, the base optimizer's ``zero_grad``/``delay_step`` and INFTY's no-op
``post_process``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["InftyShell", "check_args", "stacked_losses", "closure_total_loss"]


def check_args(owner: str, args: dict | None, known: Iterable[str]) -> None:
    """Refuse ``args`` keys the class does not know (INFTY ignores them silently)."""
    known = set(known)
    unknown = sorted(set(args or {}) - known)
    if unknown:
        raise ValueError(f"{owner} does not take args {unknown}; it takes {sorted(known)}")


def stacked_losses(loss_list) -> torch.Tensor:
    """An INFTY closure's ``loss_list`` (a list or tuple of scalars, or a tensor) as one
    1-D tensor, graph kept."""
    if isinstance(loss_list, (list, tuple)):
        return torch.stack([torch.as_tensor(v) for v in loss_list])
    return loss_list.reshape(-1)


def closure_total_loss(output: Any) -> torch.Tensor:
    """The summed loss of an INFTY closure's ``(logits, loss_list)``."""
    if not (isinstance(output, tuple) and len(output) == 2):
        raise TypeError(
            "an INFTY closure returns (logits, loss_list); got "
            f"{type(output).__name__}{'' if not isinstance(output, tuple) else f' of length {len(output)}'}"
        )
    return stacked_losses(output[1]).sum()


class InftyShell:
    """Methods of ``torch.optim.Optimizer`` subclasses that wrap a ``base_optimizer``."""

    base_optimizer: Any

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients. ``infty`` zeroes them in place (``set_to_none=False``), and
        its closures then accumulate into zeros; dropping them instead (torch's default)
        gives the same numbers and saves two passes over the parameters per evaluation."""
        self.base_optimizer.zero_grad(set_to_none)

    def delay_step(self) -> None:
        """Apply the update prepared by ``step(delay=True)``."""
        self.base_optimizer.step()

    def post_process(self, train_loader=None) -> None:
        """INFTY's end-of-task hook (a no-op except for OGD)."""
        del train_loader

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer.__class__.__name__})"

    def _closure(self, given, stored):
        """The closure passed to ``step``, else the one from ``set_closure``."""
        if given is not None:
            return given
        if stored is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure: call set_closure(fn) first or pass step(closure)")
        return stored

    def _parameters(self) -> list[torch.Tensor]:
        """Every parameter of every group, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    def _names(self) -> list[str]:
        """The functional state's keys: each parameter's position."""
        return [str(index) for index in range(len(self._parameters()))]

    def _params_tree(self) -> dict:
        """The parameters, detached, as the functional transform's pytree."""
        return {name: p.detach() for name, p in zip(self._names(), self._parameters())}
