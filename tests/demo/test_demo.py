"""The demo runs end to end and reports the standard continual-learning metrics."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sklearn", reason="the demo's data ship with scikit-learn (the 'examples' extra)")

from infty_func.__main__ import main  # noqa: E402
from infty_func.demo import METHODS  # noqa: E402
from infty_func.demo.continual import average_accuracy, average_forgetting, train_continual  # noqa: E402
from infty_func.demo.data import split_digits  # noqa: E402


def test_demo_cli_end_to_end_writes_json_and_plot(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--seeds", "2", "--epochs", "1", "--quiet"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    for name in METHODS:  # an ESD and a landscape figure per method, seed 0 after the last task
        assert (tmp_path / "figures" / "esd" / name / "fig_task4.png").stat().st_size > 1000
        assert (tmp_path / "figures" / "landscape" / name / "loss_surface_task4.png").stat().st_size > 1000
    assert summary["benchmark"] == "split-digits"
    assert summary["config"]["seeds"] == 2 and summary["config"]["epochs"] == 1
    assert set(summary["methods"]) == set(METHODS)
    for entry in summary["methods"].values():
        assert set(entry) >= {"avg_accuracy", "forgetting", "avg_accuracy_per_task", "accuracy_matrix_mean", "seconds"}
        assert 0.5 < entry["avg_accuracy"]["mean"] <= 1.0
        assert len(entry["avg_accuracy_per_task"]["mean"]) == 5


def test_split_digits_has_five_disjoint_two_class_tasks():
    tasks = split_digits()
    assert [task.classes for task in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for task in tasks:
        assert set(task.train_y.unique().tolist()) == set(task.classes)
        assert task.train_x.shape[1] == 64 and task.test_x.shape[0] > 50


def test_metrics_on_a_known_accuracy_matrix():
    accuracy = torch.tensor([[[1.0, 0.0, 0.0], [0.8, 0.9, 0.0], [0.6, 0.7, 1.0]]])
    torch.testing.assert_close(average_accuracy(accuracy), torch.tensor([[1.0, 0.85, 2.3 / 3]]))
    # task 0: best 1.0, final 0.6; task 1: best 0.9, final 0.7
    torch.testing.assert_close(average_forgetting(accuracy), torch.tensor([0.3]))


def test_vmapped_seeds_equal_seeds_trained_alone():
    tasks = split_digits()[:2]
    together = train_continual(METHODS["sgd_momentum"], tasks, [0, 1], epochs=1)
    alone = train_continual(METHODS["sgd_momentum"], tasks, [1], epochs=1)
    torch.testing.assert_close(together.accuracy[1], alone.accuracy[0])
