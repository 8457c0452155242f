"""Geometry reshaping: SAM, ASAM, GSAM, GAM, LookSAM and C-Flat as gradient transforms.

Each takes the gradient ``∇f(w)`` as its incoming update, re-evaluates ``loss_fn`` at
perturbed parameters, and outputs a gradient; chain a base optimizer after it.
"""

from infty_func.geometry.c_flat import CFlatState, c_flat
from infty_func.geometry.gam import GAMState, gam
from infty_func.geometry.gsam import GSAMState, gsam
from infty_func.geometry.looksam import LookSAMState, looksam
from infty_func.geometry.sam import SAMState, sam

__all__ = ["sam", "gsam", "gam", "looksam", "c_flat", "SAMState", "GSAMState", "GAMState", "LookSAMState", "CFlatState"]
