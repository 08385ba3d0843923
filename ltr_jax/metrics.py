"""Classification metrics: top-1, per-class accuracy, Many / Medium / Few."""

from __future__ import annotations

import numpy as np

from ltr_jax.data.datasets.records import ShotGroups


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 [C] accuracy of each class (NaN for a class absent from ``labels``)."""
    correct = np.bincount(labels, weights=(preds == labels), minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / total


def _group_mean(acc: np.ndarray, ids: np.ndarray) -> float | None:
    vals = acc[ids]
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if len(vals) else None


def classification_report(
    preds: np.ndarray, labels: np.ndarray, num_classes: int, groups: ShotGroups
) -> dict:
    """Top-1 (over examples) and group accuracies (mean of per-class accuracies), in percent.

    A group with no classes (e.g. no Few class at a small imbalance factor) reports None.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    acc = per_class_accuracy(preds, labels, num_classes)
    pct = lambda v: None if v is None else 100.0 * v
    return {
        "top1": 100.0 * float(np.mean(preds == labels)),
        "many": pct(_group_mean(acc, groups.many)),
        "medium": pct(_group_mean(acc, groups.medium)),
        "few": pct(_group_mean(acc, groups.few)),
        "per_class_acc": [None if np.isnan(a) else 100.0 * float(a) for a in acc],
    }
