"""The demo: continual learning on Split-Digits, every seed trained at once with vmap."""

from infty_func.demo.registry import METHODS
from infty_func.demo.run import run_demo

__all__ = ["METHODS", "run_demo"]
