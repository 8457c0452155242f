"""``torch.optim`` adapters."""

from infty_func.optim.closure_objective import ClosureObjective
from infty_func.optim.transform_optimizer import TransformOptimizer

__all__ = ["TransformOptimizer", "ClosureObjective"]
