"""Verifier metrics: vectorised AUC and calibration error vs the per-element loops they replaced (named baseline).

Both compute the same numbers (checked here); scikit-learn is not a dependency, and these avoid adding it.
Interleaved repetitions after a warm-up; median ratio baseline/vectorised with its spread.
Final line: {"benchmark": "metrics", "auc_speedup": ..., "ece_speedup": ...}.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _common import emit

from trl_pav.metrics import auc, expected_calibration_error

N, REPS = 200_000, 7


def loop_auc(scores, positive):
    """Baseline: average ranks over ties found by walking the sorted scores."""
    n_pos, n_neg = positive.sum(), (~positive).sum()
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def loop_ece(pred, target, bins=10):
    """Baseline: one masked mean per bin."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(pred[m].mean() - target[m].mean())
    return float(total / max(1, len(pred)))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(N), 3)  # verifier outputs with ties
    positive = rng.random(N) < scores
    target = rng.random(N)
    assert abs(auc(scores, positive) - loop_auc(scores, positive)) < 1e-12
    assert abs(expected_calibration_error(scores, target) - loop_ece(scores, target)) < 1e-12
    ratios = {"auc": [], "ece": []}
    for rep in range(REPS + 1):  # the first repetition warms up
        pairs = (
            ("auc", loop_auc, auc, (scores, positive)),
            ("ece", loop_ece, expected_calibration_error, (scores, target)),
        )
        for name, baseline, vectorised, args in pairs:
            t_base, _ = timed(baseline, *args)
            t_vec, _ = timed(vectorised, *args)
            if rep:
                ratios[name].append(t_base / t_vec)
    result = {"benchmark": "metrics", "n": N, "reps": REPS}
    for name, r in ratios.items():
        result[f"{name}_speedup"] = round(statistics.median(r), 2)
        result[f"{name}_speedup_range"] = [round(min(r), 2), round(max(r), 2)]
    emit(result)


if __name__ == "__main__":
    main()
