"""Verifier metrics against their definitions on small enumerable cases."""

import itertools
import random

import numpy as np
import pytest

from trl_pav.metrics import auc, brier, expected_calibration_error


def pairwise_auc(scores, positive):
    """P(score of a positive > score of a negative), ties counting half: the definition, pair by pair."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def binned_ece(pred, target, bins=10):
    """Expected calibration error bin by bin, as defined."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(p, t) for p, t in zip(pred, target) if (lo <= p < hi) or (b == bins - 1 and p == 1.0)]
        if members:
            total += len(members) * abs(np.mean([p for p, _ in members]) - np.mean([t for _, t in members]))
    return total / len(pred)


def test_auc_brier_ece_match_definitions():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 12)
        scores = [rng.choice([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)]  # many ties
        positive = [rng.random() < 0.5 for _ in range(n)]
        if 0 < sum(positive) < n:
            assert auc(np.array(scores), np.array(positive)) == pytest.approx(pairwise_auc(scores, positive))
        else:
            assert np.isnan(auc(np.array(scores), np.array(positive)))
        target = [rng.random() for _ in range(n)]
        assert expected_calibration_error(np.array(scores), np.array(target)) == pytest.approx(
            binned_ece(scores, target)
        )
        assert brier(np.array(scores), np.array(target)) == pytest.approx(np.mean((np.array(scores) - target) ** 2))
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
