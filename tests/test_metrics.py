"""metrics.classification_report against accuracies worked out by hand."""

import numpy as np
import pytest

from ltr_jax import metrics
from ltr_jax.data.datasets.records import ShotGroups

# 4 classes; class 3 has no test example (but is predicted twice, which counts as wrong).
LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
PREDS = np.array([0, 0, 0, 1, 1, 0, 2, 3, 3])
# Per class, by hand: 0 -> 3/4, 1 -> 1/2, 2 -> 1/3, 3 -> absent. Top-1: 5 of 9 right.


def _groups(many, medium, few):
    return ShotGroups(*(np.array(g, dtype=np.int64) for g in (many, medium, few)))


def test_hand_computed_with_an_empty_group_and_an_absent_class():
    got = metrics.classification_report(PREDS, LABELS, 4, _groups([0, 1], [2, 3], []))
    assert got["top1"] == pytest.approx(100 * 5 / 9)
    assert got["many"] == pytest.approx(100 * (3 / 4 + 1 / 2) / 2)
    assert got["medium"] == pytest.approx(100 / 3)  # the absent class 3 is left out of the mean
    assert got["few"] is None  # a group with no classes
    assert got["per_class_acc"][:3] == pytest.approx([75.0, 50.0, 100 / 3])
    assert got["per_class_acc"][3] is None


def test_a_group_of_only_absent_classes_is_none():
    got = metrics.classification_report(PREDS, LABELS, 5, _groups([0], [1, 2], [3, 4]))
    assert got["few"] is None
    assert got["many"] == pytest.approx(75.0)
    assert got["medium"] == pytest.approx(100 * (1 / 2 + 1 / 3) / 2)
    assert got["per_class_acc"][3:] == [None, None]


def test_per_class_accuracy_is_nan_for_an_absent_class():
    acc = metrics.per_class_accuracy(PREDS, LABELS, 4)
    np.testing.assert_allclose(acc[:3], [0.75, 0.5, 1 / 3])
    assert np.isnan(acc[3])
