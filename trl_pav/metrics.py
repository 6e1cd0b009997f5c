"""Verifier metrics: Brier score, AUC, calibration error, first-error localisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "auc",
    "brier",
    "expected_calibration_error",
    "first_error_accuracy",
    "predicted_first_error",
    "verifier_metrics",
]


def brier(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error between predicted probabilities and (soft) targets."""
    return float(np.mean((np.asarray(pred, float) - np.asarray(target, float)) ** 2))


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN if one class is absent.

    Example:
        >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties (Mann-Whitney U).
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(pred: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Mean |mean prediction - mean target| over equal-width probability bins, weighted by bin size."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(pred[m].mean() - target[m].mean())
    return float(total / max(1, len(pred)))


def verifier_metrics(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Brier score, AUC (targets >= threshold are positives) and calibration error of step predictions."""
    return {
        "brier": brier(pred, target),
        "auc": auc(pred, np.asarray(target) >= threshold),
        "ece": expected_calibration_error(pred, target),
    }


def predicted_first_error(step_values: Sequence[float], threshold: float = 0.5) -> int | None:
    """Index of the first step whose predicted value falls below `threshold`, or None."""
    return next((h for h, v in enumerate(step_values) if v < threshold), None)


def first_error_accuracy(
    step_values: Sequence[Sequence[float]], true_first_errors: Sequence[int | None], threshold: float = 0.5
) -> float:
    """Fraction of traces with a true first error whose predicted first error (first value < threshold) is it."""
    pairs = [(v, t) for v, t in zip(step_values, true_first_errors) if t is not None and t >= 0]
    if not pairs:
        return float("nan")
    return sum(predicted_first_error(v, threshold) == t for v, t in pairs) / len(pairs)
