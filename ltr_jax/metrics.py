"""Classification metrics: top-1, per-class accuracy, Many / Medium / Few."""

from __future__ import annotations

import numpy as np

from ltr_jax.data.datasets.long_tail import shot_groups
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


def per_class_precision_recall(
    preds: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[list, list]:
    """Per-class precision (of the images predicted as the class) and recall, in percent; None
    for a class never predicted (precision) or absent from ``labels`` (recall)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    hits = np.bincount(labels, weights=(preds == labels), minlength=num_classes)
    predicted = np.bincount(preds, minlength=num_classes)
    actual = np.bincount(labels, minlength=num_classes)
    ratio = lambda a, b: [None if d == 0 else 100.0 * float(n / d) for n, d in zip(a, b)]
    return ratio(hits, predicted), ratio(hits, actual)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(label | x)`` of probabilities ``[N, C]`` (clipped at 1e-12)."""
    p = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(p, 1e-12))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    """Confidence (max probability) in ``num_bins`` equal bins of [0, 1]: per bin the count,
    the mean confidence and the accuracy (NaN for an empty bin), and the bin edges."""
    probs = np.asarray(probs, np.float64)
    conf, hit = probs.max(-1), probs.argmax(-1) == np.asarray(labels)
    # Bin b holds confidences in (edge_b, edge_b+1]; a confidence of 0 falls in the first.
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=num_bins) / count
        accuracy = np.bincount(bins, weights=hit, minlength=num_bins) / count
    return dict(edges=edges, count=count, confidence=mean_conf, accuracy=accuracy)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE (Guo et al. 2017) in percent: ``sum_b n_b / N * |accuracy_b - confidence_b|`` over
    ``num_bins`` equal-width bins of the max probability; None for no examples."""
    if len(labels) == 0:
        return None
    bins = reliability_bins(probs, labels, num_bins)
    full = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return 100.0 * float(np.sum(bins["count"][full] * gaps) / len(labels))


def calibration_report(
    probs: np.ndarray, labels: np.ndarray, num_classes: int, groups: ShotGroups
) -> dict:
    """`classification_report` plus NLL, ECE (all and per Many/Medium/Few group, by the true
    class), and per-class precision / recall (percent)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    preds = probs.argmax(-1)
    report = classification_report(preds, labels, num_classes, groups)
    precision, recall = per_class_precision_recall(preds, labels, num_classes)
    report.update(
        nll=negative_log_likelihood(probs, labels), ece=expected_calibration_error(probs, labels)
    )
    for name in ("many", "medium", "few"):
        rows = np.isin(labels, getattr(groups, name))
        report[f"ece_{name}"] = expected_calibration_error(probs[rows], labels[rows])
    report.update(per_class_precision=precision, per_class_recall=recall)
    return report


def empty_group_notes(class_counts, many_threshold: int, few_threshold: int) -> list[str]:
    """One line for each of Many / Medium / Few that no class falls in with these thresholds
    (e.g. Few at the default 20 on a set whose smallest class has 60 images), saying how to
    choose them; empty when every group has a class."""
    counts = np.asarray(class_counts)
    groups = shot_groups(counts, many_threshold, few_threshold)
    rule = {
        "many": f"more than data.many_threshold={many_threshold}",
        "medium": f"from data.few_threshold={few_threshold} to data.many_threshold="
        f"{many_threshold}",
        "few": f"fewer than data.few_threshold={few_threshold}",
    }
    span = f"training counts {int(counts.min())}..{int(counts.max())}"
    return [
        f"{name.capitalize()} is empty: no class has {rule[name]} training images ({span}); "
        "its accuracy is reported as None. To split this data, set the thresholds inside "
        "that range (README: Many / Few thresholds)."
        for name in ("many", "medium", "few")
        if len(getattr(groups, name)) == 0
    ]
