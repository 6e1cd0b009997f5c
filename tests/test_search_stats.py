"""Statistics for the search report: within-problem AUC and bootstrap intervals over problems, on exact cases."""

import itertools
from math import comb

import numpy as np
import pytest

from trl_pav.metrics import (
    auc,
    bootstrap_interval,
    curve_is_monotone,
    paired_bootstrap_difference,
    within_problem_auc,
)


def brute_force_within_auc(scores, correct, problems):
    """Enumerate every (correct, wrong) pair of the same problem: 1 if ranked right, 1/2 if tied."""
    wins, pairs = 0.0, 0
    for i, j in itertools.product(range(len(scores)), repeat=2):
        if problems[i] == problems[j] and correct[i] and not correct[j]:
            pairs += 1
            wins += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
    return wins / pairs if pairs else float("nan")


def test_within_problem_auc_matches_pair_enumeration():
    rng = np.random.default_rng(0)
    for trial in range(40):
        m = int(rng.integers(1, 30))
        scores = rng.integers(0, 5, m) / 4.0  # few distinct values: many ties, within and across problems
        correct = rng.integers(0, 2, m)
        problems = rng.choice(np.array(["a", "b", "c", "d"]), m)  # ids need not be integers or sorted
        got, want = within_problem_auc(scores, correct, problems), brute_force_within_auc(scores, correct, problems)
        if np.isnan(want):
            assert np.isnan(got), trial
        else:
            assert got == pytest.approx(want, abs=1e-12), trial


def test_within_problem_auc_ignores_which_problems_are_easy():
    # The verifier scores by difficulty only: easy problem's candidates 0.9, hard one's 0.1, whatever their outcome.
    # Pooled AUC rewards that (the easy problem has most correct candidates); within a problem it is chance.
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    problems = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # 16 pairs: 9 cross-problem pairs ranked right, 6 same-problem pairs tied (half each), 1 cross pair ranked wrong.
    assert auc(scores, correct) == pytest.approx((9 + 6 / 2) / 16)
    assert within_problem_auc(scores, correct, problems) == 0.5
    # A verifier that ranks within each problem perfectly but puts the hard problem above the easy one.
    scores = np.array([0.5, 0.5, 0.5, 0.4, 0.9, 0.8, 0.8, 0.8])
    assert within_problem_auc(scores, correct, problems) == 1.0
    assert auc(scores, correct) < 0.8


def test_within_problem_auc_nan_and_errors():
    assert np.isnan(within_problem_auc(np.array([0.1, 0.9]), np.array([1, 0]), np.array([0, 1])))
    assert np.isnan(within_problem_auc(np.array([]), np.array([]), np.array([])))
    with pytest.raises(ValueError, match="one length"):
        within_problem_auc(np.array([0.1, 0.2]), np.array([1]), np.array([0, 0]))
    with pytest.raises(ValueError, match="NaN at positions \\[1\\]"):
        within_problem_auc(np.array([0.1, np.nan]), np.array([1, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="correct must be 0/1"):
        within_problem_auc(np.array([0.1, 0.2]), np.array([1, 2]), np.array([0, 0]))


def exact_bootstrap_quantile(values, q):
    """Exact q-quantile of the bootstrap distribution of the mean of 0/1 values (the count of ones is binomial)."""
    p, n = float(np.mean(values)), len(values)
    cdf = 0.0
    for k in range(n + 1):
        cdf += comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf >= q:
            return k / n
    return 1.0


def test_bootstrap_interval_matches_exact_binomial_quantiles():
    values = np.array([0.0, 0.0, 1.0])  # resampled mean = Binomial(3, 1/3) / 3: cdf 8/27, 20/27, 26/27, 1
    for confidence in (0.95, 0.5, 0.3):
        est, low, high = bootstrap_interval(values, n_boot=20_000, confidence=confidence, seed=1)
        assert est == pytest.approx(1 / 3)
        assert low == pytest.approx(exact_bootstrap_quantile(values, (1 - confidence) / 2))
        assert high == pytest.approx(exact_bootstrap_quantile(values, (1 + confidence) / 2))
    assert bootstrap_interval(np.full(7, 0.25)) == (0.25, 0.25, 0.25)
    # Deterministic in the seed.
    v = np.random.default_rng(3).random(40)
    assert bootstrap_interval(v, seed=5) == bootstrap_interval(v, seed=5)


def test_paired_bootstrap_cancels_what_methods_share():
    rng = np.random.default_rng(2)
    b = rng.integers(0, 2, 200).astype(float)
    # Identical methods: zero difference with zero width, although each method alone has a wide interval.
    assert paired_bootstrap_difference(b, b) == (0.0, 0.0, 0.0)
    assert np.diff(bootstrap_interval(b)[1:])[0] > 0.1
    # a is b plus exactly one more right answer on every fifth problem where b was wrong.
    a = b.copy()
    flip = np.flatnonzero(b == 0)[::5]
    a[flip] = 1.0
    est, low, high = paired_bootstrap_difference(a, b, n_boot=2000)
    assert est == pytest.approx(len(flip) / 200) and 0.0 < low < est < high
    with pytest.raises(ValueError, match="a has 3 problems but b has 2"):
        paired_bootstrap_difference(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite values \\[nan\\] at problems \\[1\\]"):
        bootstrap_interval(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(np.ones(3), confidence=1.0)


def test_curve_is_monotone():
    first = np.r_[np.ones(30), np.zeros(30)]
    assert curve_is_monotone(first, first)  # flat
    assert curve_is_monotone(first, np.ones(60))  # rising
    drop_one = first.copy()
    drop_one[0] = 0.0  # one problem lost out of 60: within noise
    assert curve_is_monotone(first, drop_one)
    assert not curve_is_monotone(first, np.zeros(60))  # lost every right answer: clearly falling
