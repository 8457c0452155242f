"""The contract and the helpers every transform uses."""

from infty_func.core import random
from infty_func.core.base import (
    EmptyState,
    GradientTransformation,
    Params,
    State,
    Updates,
    apply_updates,
    chain,
    identity,
    named_chain,
    stateless,
    update_in_place,
)
from infty_func.core.batch_norm import freeze_batch_norm_when_perturbed, frozen_batch_norm
from infty_func.core.control import cond, is_batched
from infty_func.core.objective import (
    evaluate,
    hvp,
    hvp_operator,
    jacobian,
    perturbed,
    require_functional_loss_fn,
    require_loss_fn,
    require_params,
    total_loss,
    value_and_derivative,
    value_and_grad,
)
from infty_func.core.step import step
from infty_func.core.tree import *  # noqa: F403
from infty_func.core.tree import __all__ as _tree_all

__all__ = [
    "random",
    "EmptyState",
    "GradientTransformation",
    "Params",
    "State",
    "Updates",
    "apply_updates",
    "chain",
    "identity",
    "named_chain",
    "stateless",
    "update_in_place",
    "cond",
    "is_batched",
    "evaluate",
    "freeze_batch_norm_when_perturbed",
    "frozen_batch_norm",
    "perturbed",
    "require_loss_fn",
    "require_functional_loss_fn",
    "require_params",
    "total_loss",
    "hvp",
    "hvp_operator",
    "jacobian",
    "value_and_derivative",
    "value_and_grad",
    "step",
    *_tree_all,
]
