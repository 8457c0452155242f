"""Building blocks and base optimizers."""

from infty_func.transforms import schedules
from infty_func.transforms.accumulation import MultiStepsState, multi_steps
from infty_func.transforms.adam import ScaleByAdamState, scale_by_adam
from infty_func.transforms.aliases import adam, adamw, rmsprop, sgd
from infty_func.transforms.clipping import clip, clip_by_global_norm
from infty_func.transforms.finite import ApplyIfFiniteState, apply_if_finite
from infty_func.transforms.hyperparams import InjectHyperparamsState, inject_hyperparams
from infty_func.transforms.masking import (
    MaskedState,
    PartitionState,
    freeze,
    masked,
    partition,
    set_to_zero,
)
from infty_func.transforms.momentum import TraceState, trace
from infty_func.transforms.rms import ScaleByRmsState, scale_by_rms
from infty_func.transforms.scale import (
    ScaleByLearningRateState,
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from infty_func.transforms.weight_decay import add_decayed_weights

__all__ = [
    "schedules",
    "multi_steps",
    "MultiStepsState",
    "scale_by_adam",
    "ScaleByAdamState",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "clip",
    "clip_by_global_norm",
    "apply_if_finite",
    "ApplyIfFiniteState",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "masked",
    "partition",
    "freeze",
    "set_to_zero",
    "MaskedState",
    "PartitionState",
    "trace",
    "TraceState",
    "scale_by_rms",
    "ScaleByRmsState",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "ScaleByLearningRateState",
    "ScaleByScheduleState",
    "add_decayed_weights",
]
