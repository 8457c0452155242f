"""infty_func: optimizer methods as pure ``(init, update)`` gradient transformations on
``torch.func``, with an adapter that makes any of them a ``torch.optim.Optimizer``."""

from infty_func import core, curvature, experimental, geometry, multiobjective, optim, smoothing, transforms, zeroth_order
from infty_func.core import *  # noqa: F403
from infty_func.core import __all__ as _core_all
from infty_func.core import random
from infty_func.geometry import *  # noqa: F403
from infty_func.geometry import __all__ as _geometry_all
from infty_func.multiobjective import *  # noqa: F403
from infty_func.multiobjective import __all__ as _multiobjective_all
from infty_func.smoothing import *  # noqa: F403
from infty_func.smoothing import __all__ as _smoothing_all
from infty_func.transforms import *  # noqa: F403
from infty_func.transforms import __all__ as _transforms_all
from infty_func.zeroth_order import *  # noqa: F403
from infty_func.zeroth_order import __all__ as _zeroth_order_all

__version__ = "0.1.0"

__all__ = [
    "core", "curvature", "experimental", "geometry", "multiobjective", "optim", "smoothing", "transforms", "zeroth_order", "random",
    *_core_all, *_transforms_all, *_geometry_all, *_zeroth_order_all, *_multiobjective_all, *_smoothing_all,
]
