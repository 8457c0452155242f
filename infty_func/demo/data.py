"""Split-Digits: scikit-learn's handwritten digits as five two-class tasks."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

TASK_CLASSES = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


class Task(NamedTuple):
    classes: tuple[int, int]
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def split_digits(test_fraction: float = 0.25, seed: int = 0, dtype=torch.float32) -> list[Task]:
    """Five tasks of two digit classes each (8×8 images as 64 features scaled to [0, 1]).

    The data ship with scikit-learn (``sklearn.datasets.load_digits``, 1,797 images), so
    nothing is downloaded. Each task keeps ``test_fraction`` of its images for testing,
    split by a fixed permutation.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the demo needs scikit-learn for its data: pip install 'infty-func[examples]'"
        ) from error
    digits = load_digits()
    features = torch.tensor(digits.data / 16.0, dtype=dtype)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    generator = np.random.default_rng(seed)
    tasks = []
    for classes in TASK_CLASSES:
        index = np.flatnonzero(np.isin(digits.target, classes))
        index = index[generator.permutation(len(index))]
        cut = int(round(len(index) * (1 - test_fraction)))
        train, test = torch.as_tensor(index[:cut]), torch.as_tensor(index[cut:])
        tasks.append(Task(classes, features[train], labels[train], features[test], labels[test]))
    return tasks
