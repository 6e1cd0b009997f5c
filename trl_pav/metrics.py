"""Verifier and search metrics: Brier score, AUC (pooled and within problem), calibration error, first-error
localisation, and bootstrap intervals over problems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "auc",
    "best_first_error_threshold",
    "bootstrap_interval",
    "brier",
    "curve_is_monotone",
    "expected_calibration_error",
    "first_error_accuracy",
    "paired_bootstrap_difference",
    "predicted_first_error",
    "predicted_first_errors",
    "step_error_metrics",
    "verifier_metrics",
    "within_problem_auc",
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
    # Mann-Whitney U with tied scores sharing their average rank: a group of c equal values starting at rank r
    # (1-based) has average rank r + (c - 1) / 2.
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    ranks = (first_rank + (counts - 1) / 2)[group]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(pred: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Mean |mean prediction - mean target| over equal-width probability bins, weighted by bin size."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    # Per bin: |sum of predictions - sum of targets| is size * |mean prediction - mean target|.
    gap = np.abs(np.bincount(idx, weights=pred, minlength=bins) - np.bincount(idx, weights=target, minlength=bins))
    return float(gap.sum() / max(1, len(pred)))


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


def within_problem_auc(scores: np.ndarray, correct: np.ndarray, problem_ids: np.ndarray) -> float:
    """AUC over pairs of one correct and one wrong candidate of the *same* problem, pairs pooled over problems.

    Pooled AUC mostly measures which problems are easy; this one measures whether the verifier ranks a problem's
    correct candidates above its wrong ones, which is what selection among candidates needs. Ties count half.

    Args:
        scores: `(M,)` verifier scores of M candidates.
        correct: `(M,)` whether each candidate is correct (bool or 0/1).
        problem_ids: `(M,)` the problem each candidate belongs to (any hashable numpy-comparable values).

    Returns:
        `sum_p U_p / sum_p (n_correct_p * n_wrong_p)`, `U_p` the Mann-Whitney count of problem p's correct-over-wrong
        pairs; NaN if no problem has both a correct and a wrong candidate.

    Example (problem 0's pair is ranked right, problem 1's wrong; problem 2 has no wrong candidate):
        >>> scores, correct = np.array([0.9, 0.2, 0.1, 0.8, 0.5]), np.array([1, 0, 1, 0, 1])
        >>> within_problem_auc(scores, correct, problem_ids=np.array([0, 0, 1, 1, 2]))
        0.5
    """
    scores = np.asarray(scores, dtype=float)
    correct = np.asarray(correct)
    problem_ids = np.asarray(problem_ids)
    if not (scores.ndim == correct.ndim == problem_ids.ndim == 1) or not (
        len(scores) == len(correct) == len(problem_ids)
    ):
        raise ValueError(
            f"within_problem_auc: need three 1-D arrays of one length, got shapes {scores.shape}, {correct.shape}, "
            f"{problem_ids.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError(f"within_problem_auc: scores hold NaN at positions {np.flatnonzero(np.isnan(scores))[:10]}")
    if not np.isin(correct, [0, 1]).all():
        bad = np.flatnonzero(~np.isin(correct, [0, 1]))[:10]
        raise ValueError(f"within_problem_auc: correct must be 0/1, got {correct[bad]} at positions {bad}")
    if len(scores) == 0:
        return float("nan")
    group = np.unique(problem_ids, return_inverse=True)[1].ravel()
    order = np.lexsort((scores, group))  # by problem, then by score
    s, g, pos = scores[order], group[order], correct[order].astype(float)
    n = len(s)
    idx = np.arange(n)
    # Runs of equal (problem, score) share the mean of their positions (midranks handle ties).
    new_run = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_mid = (run_start + np.r_[run_start[1:], n] - 1) / 2.0
    group_start = np.maximum.accumulate(np.where(np.r_[True, g[1:] != g[:-1]], idx, 0))
    rank = run_mid[run_id] - group_start + 1.0  # 1-based midrank within the problem
    n_pos = np.bincount(g, weights=pos)
    n_neg = np.bincount(g) - n_pos
    u = np.bincount(g, weights=rank * pos) - n_pos * (n_pos + 1) / 2
    pairs = float((n_pos * n_neg).sum())
    return float(u.sum() / pairs) if pairs > 0 else float("nan")


def _check_per_problem(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name}: need a non-empty 1-D array of per-problem values, got shape {values.shape}")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:10]
        raise ValueError(f"{name}: non-finite values {values[bad]} at problems {bad}")
    return values


def bootstrap_interval(
    per_problem_values: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap over problems for the mean of a per-problem value (accuracy: 0/1 per problem).

    Args:
        per_problem_values: `(P,)` one value per problem.
        n_boot: bootstrap resamples (each draws P problems with replacement).
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        `(estimate, low, high)`: the mean over problems and the `(1 - confidence) / 2` and `(1 + confidence) / 2`
        quantiles of the resampled means.

    Example:
        >>> bootstrap_interval(np.array([1.0, 1.0, 1.0]))
        (1.0, 1.0, 1.0)
    """
    values = _check_per_problem("bootstrap_interval", per_problem_values)
    if n_boot < 1:
        raise ValueError(f"bootstrap_interval: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_interval: confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)  # (n_boot,)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap_difference(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Paired percentile bootstrap for `mean(a) - mean(b)`, `a` and `b` two methods' values on the same problems.

    Problems are resampled jointly, so what the two methods share (a problem's difficulty) cancels.

    Args:
        a: `(P,)` per-problem values of the first method.
        b: `(P,)` per-problem values of the second method, problem for problem.

    Returns:
        `(estimate, low, high)` of the difference of means.

    Example (one method is right on exactly the problems where the other is, plus one more):
        >>> paired_bootstrap_difference(np.array([1, 1, 0, 1]), np.array([1, 1, 0, 0]))[0]
        0.25
    """
    a = _check_per_problem("paired_bootstrap_difference (a)", a)
    b = _check_per_problem("paired_bootstrap_difference (b)", b)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap_difference: a has {len(a)} problems but b has {len(b)}")
    return bootstrap_interval(a - b, n_boot=n_boot, confidence=confidence, seed=seed)


def curve_is_monotone(
    first: np.ndarray, last: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> bool:
    """Whether accuracy at the largest budget is at least that at the smallest one, within the paired interval.

    True unless the whole paired bootstrap interval of `mean(last) - mean(first)` lies below 0 (a curve that
    falls by more than its noise).

    Args:
        first: `(P,)` per-problem correctness at the smallest budget.
        last: `(P,)` per-problem correctness at the largest budget, problem for problem.

    Example:
        >>> curve_is_monotone(np.ones(50), np.zeros(50)), curve_is_monotone(np.zeros(50), np.ones(50))
        (False, True)
    """
    return paired_bootstrap_difference(last, first, n_boot=n_boot, confidence=confidence, seed=seed)[2] >= 0.0


def _padded(step_values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """`(N, H)` values padded with NaN and `(N,)` lengths."""
    lengths = np.array([len(v) for v in step_values], dtype=np.int64)
    out = np.full((len(step_values), max(1, int(lengths.max(initial=0)))), np.nan)
    for i, v in enumerate(step_values):
        out[i, : len(v)] = v
    return out, lengths


def predicted_first_errors(step_values: Sequence[Sequence[float]], threshold: float) -> np.ndarray:
    """First step of each trace whose value is below `threshold`, -1 if none (ProcessBench's prediction rule).

    Args:
        step_values: `N` lists of per-step values (no root), lengths may differ.
        threshold: a step with value `< threshold` is predicted wrong.

    Returns:
        `(N,)` int array.

    Example:
        >>> predicted_first_errors([[0.9, 0.4, 0.8], [0.7], [0.2, 0.1]], 0.5).tolist()
        [1, -1, 0]
    """
    values, _ = _padded(step_values)
    below = values < threshold  # NaN padding compares False
    return np.where(below.any(axis=1), below.argmax(axis=1), -1)


def step_error_metrics(predicted: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """ProcessBench's scores: accuracy on erroneous traces (predicted first error == labeled one), accuracy on correct
    traces (predicted -1), and their harmonic mean `f1`; NaN where a kind of trace is absent.

    Example:
        >>> step_error_metrics([1, -1, 0, -1], [1, 2, -1, -1])
        {'error_acc': 0.5, 'correct_acc': 0.5, 'f1': 0.5, 'n_error': 2, 'n_correct': 2}
    """
    predicted, labels = np.asarray(predicted, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    erroneous = labels >= 0
    n_error, n_correct = int(erroneous.sum()), int((~erroneous).sum())
    hits = predicted == labels
    error_acc = float(hits[erroneous].mean()) if n_error else float("nan")
    correct_acc = float(hits[~erroneous].mean()) if n_correct else float("nan")
    denominator = error_acc + correct_acc
    f1 = 2 * error_acc * correct_acc / denominator if denominator > 0 else 0.0 if denominator == 0 else float("nan")
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": f1, "n_error": n_error, "n_correct": n_correct}


def best_first_error_threshold(
    step_values: Sequence[Sequence[float]], labels: Sequence[int]
) -> tuple[float, dict[str, float]]:
    """The threshold that maximises `step_error_metrics(...)["f1"]` over every threshold, exactly (with only one kind
    of trace, where F1 is undefined: that kind's accuracy).

    With `m_h` the running minimum of a trace's values, the rule "first step below τ" predicts step `L` exactly when
    `m_L < τ <= m_{L-1}` (`m_{-1} = +inf`) and "no error" exactly when `τ <= m_{H-1}`. Every trace is therefore right
    on one interval of τ, and counting intervals that contain each candidate (every value and the next float above
    it) scores all thresholds in `O((N·H) log(N·H))`. Of the best thresholds, the middle of the lowest run is returned.

    Returns:
        `(threshold, metrics at that threshold)`.

    Example:
        >>> t, m = best_first_error_threshold([[0.9, 0.3], [0.8, 0.6], [0.7]], [1, -1, -1])
        >>> round(t, 6), m["f1"]
        (0.45, 1.0)
    """
    values, lengths = _padded(step_values)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(values) or np.any(labels >= lengths) or np.any(lengths == 0):
        raise ValueError("best_first_error_threshold: need one label in [-1, H) per non-empty trace")
    running = np.fmin.accumulate(np.where(np.isnan(values), np.inf, values), axis=1)
    rows = np.arange(len(labels))
    erroneous = labels >= 0
    # Erroneous traces are right on (low, high]; correct traces on (-inf, high].
    low = np.where(erroneous, running[rows, np.maximum(labels, 0)], -np.inf)
    high = np.where(erroneous & (labels > 0), running[rows, np.maximum(labels - 1, 0)], np.inf)
    high = np.where(erroneous, high, running[rows, lengths - 1])
    finite = values[~np.isnan(values)]
    candidates = np.unique(np.concatenate([finite, np.nextafter(finite, np.inf)]))

    def right(kind: np.ndarray) -> np.ndarray:  # per candidate: traces of `kind` whose interval holds it
        lo, hi = np.sort(low[kind]), np.sort(high[kind])
        return np.searchsorted(lo, candidates, side="left") - np.searchsorted(hi, candidates, side="left")

    n_error, n_correct = int(erroneous.sum()), int((~erroneous).sum())
    error_acc = right(erroneous) / n_error if n_error else np.full(len(candidates), np.nan)
    correct_acc = right(~erroneous) / n_correct if n_correct else np.full(len(candidates), np.nan)
    if not n_error or not n_correct:  # F1 is undefined with one kind of trace: maximise the other's accuracy
        objective = correct_acc if not n_error else error_acc
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            total = error_acc + correct_acc
            objective = np.where(total > 0, 2 * error_acc * correct_acc / np.where(total > 0, total, 1), 0.0)
    # The objective is constant between consecutive candidates: take the middle of the first best run of them, the
    # threshold farthest from flipping a prediction within that run.
    best = int(np.argmax(objective))
    end = best
    while end + 1 < len(candidates) and objective[end + 1] == objective[best]:
        end += 1
    threshold = float((candidates[best] + candidates[end]) / 2)
    return threshold, step_error_metrics(predicted_first_errors(step_values, threshold), labels)
