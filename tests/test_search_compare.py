"""`compare_curves` and `bootstrap_comparison` on tiny curves whose answers are worked out by hand: running best on
both sides (no side favoured), total tokens (generated + verifier), the grid edge."""

import numpy as np
import pytest

from trl_pav.demo.search import best_prover, bootstrap_comparison
from trl_pav.search import compare_curves
from trl_pav.search.runner import compute_of


def curve(xs, accs, key="generated_tokens"):
    return [{key: x, "accuracy": a} for x, a in zip(xs, accs)]


def test_identical_curves_give_no_gain_and_ratio_one():
    # A baseline that falls after its first point: the old comparison set the method's raw 0.5 against the
    # baseline's running best 0.6 and printed -10 points for a curve against itself.
    for accs in ([0.6, 0.5, 0.55], [0.2, 0.4, 0.7], [0.5, 0.5, 0.5]):
        c = curve([100, 400, 1600], accs)
        out = compare_curves(c, c)
        assert out["accuracy_gain"] == 0.0 and out["compute_ratio"] == 1.0
        assert not out["ratio_is_grid_edge"] and not out["ratio_is_lower_bound"]


def test_a_dominating_method_gains_and_swapping_flips_the_sign():
    method = curve([100, 200], [0.5, 0.7])
    baseline = curve([100, 200, 400, 800], [0.3, 0.4, 0.5, 0.7])
    out = compare_curves(method, baseline)
    # Common compute: the method's largest, 200. Running bests there: 0.7 against 0.4.
    assert out["accuracy_gain"] == pytest.approx(0.3) and out["gain_compute"] == 200
    assert (out["method_accuracy"], out["baseline_accuracy"]) == (0.7, 0.4)
    # The method's best 0.7 at 200; the baseline reaches it exactly at 800.
    assert out["compute_ratio"] == 4.0 and not out["ratio_is_grid_edge"]
    back = compare_curves(baseline, method)
    assert back["accuracy_gain"] == -out["accuracy_gain"]
    # The baseline's best (0.7 at 800) is reached by the method already at 200.
    assert back["compute_ratio"] == pytest.approx(200 / 800)


def test_the_method_is_taken_at_its_running_best_too():
    # The method peaks at its cheapest point and falls; its user keeps the cheap setting: 0.6 at every compute.
    method = curve([100, 400], [0.6, 0.3])
    baseline = curve([100, 400], [0.4, 0.5])
    out = compare_curves(method, baseline)
    assert out["method_accuracy"] == 0.6 and out["accuracy_gain"] == pytest.approx(0.1)
    assert compare_curves(baseline, method)["accuracy_gain"] == pytest.approx(-0.1)


def test_gain_is_antisymmetric_on_random_curves():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = curve(np.sort(rng.integers(10, 2000, 4)) + np.arange(4), rng.random(4))
        b = curve(np.sort(rng.integers(10, 2000, 3)) + np.arange(3), rng.random(3))
        assert compare_curves(a, b)["accuracy_gain"] == -compare_curves(b, a)["accuracy_gain"]


def test_grid_edge_when_the_baseline_never_reaches_the_methods_best():
    method = curve([100, 200], [0.5, 0.9])
    baseline = curve([100, 400, 1600], [0.3, 0.6, 0.8])
    out = compare_curves(method, baseline)
    # Never reached: the ratio is the baseline's largest compute over the method's, a lower bound.
    assert out["ratio_is_grid_edge"] and out["ratio_is_lower_bound"] and out["compute_ratio"] == 1600 / 200


def test_curves_that_do_not_overlap_are_compared_at_the_dearer_ones_cheapest_point():
    cheap, dear = curve([100, 200], [0.4, 0.45]), curve([1000], [0.5])
    out = compare_curves(dear, cheap)
    assert out["accuracy_gain"] == pytest.approx(0.05) and out["gain_compute"] == 1000
    assert compare_curves(cheap, dear)["accuracy_gain"] == pytest.approx(-0.05)


def test_total_tokens_counts_the_verifiers_reading():
    # Beam search reads three verifier tokens per generated one here, best-of-N half a token.
    beam = [
        {"generated_tokens": 100, "verifier_tokens": 300, "accuracy": 0.5},
        {"generated_tokens": 200, "verifier_tokens": 600, "accuracy": 0.7},
    ]
    bon = [
        {"generated_tokens": g, "verifier_tokens": g // 2, "accuracy": a}
        for g, a in zip([100, 200, 400, 800], [0.3, 0.4, 0.5, 0.7])
    ]
    gen = compare_curves(beam, bon, "generated_tokens")
    assert gen["compute_ratio"] == 4.0 and gen["accuracy_gain"] == pytest.approx(0.7 - 0.4)
    total = compare_curves(beam, bon, "total_tokens")
    # Totals: beam 400, 800; best-of-N 150, 300, 600, 1200. Best-of-N reaches 0.7 at 1200 against the beam's 800;
    # at 800 total tokens best-of-N's running best is 0.5 (its 600-token point).
    assert total["compute_ratio"] == 1200 / 800 and total["accuracy_gain"] == pytest.approx(0.7 - 0.5)
    assert total["compute"] == "total_tokens" and total["gain_compute"] == 800
    # A stored total_tokens field is used as it is; records without one (old caches) get the sum.
    stored = [{**r, "total_tokens": r["generated_tokens"] + r["verifier_tokens"]} for r in beam]
    assert compare_curves(stored, bon, "total_tokens") == total
    assert compute_of(beam[0], "total_tokens") == 400.0
    with pytest.raises(ValueError, match=r"positive 'total_tokens'.*verifier_tokens"):
        compare_curves(curve([100], [0.5]), bon, "total_tokens")


def test_near_equal_compute_still_counts_as_equal():
    method = curve([22022, 44023], [0.633, 0.680])
    baseline = curve([22019, 44025], [0.617, 0.680])
    assert compare_curves(method, baseline)["accuracy_gain"] == 0.0
    assert compare_curves(method, baseline, tolerance=0.0)["accuracy_gain"] == pytest.approx(0.680 - 0.617)


def per_problem_curve(ns, correct, gen, ver):
    """Records with per-problem correctness: `correct[i]` is the 0/1 list at budget `ns[i]`."""
    return [
        {
            "n": n,
            "per_problem_correct": [float(x) for x in c],
            "accuracy": float(np.mean(c)),
            "generated_tokens": g,
            "verifier_tokens": v,
        }
        for n, c, g, v in zip(ns, correct, gen, ver)
    ]


def test_bootstrap_of_identical_curves_is_exactly_zero():
    rng = np.random.default_rng(1)
    c = per_problem_curve([3, 6], rng.integers(0, 2, (2, 30)), [100, 200], [40, 80])
    out = bootstrap_comparison(c, c, n_boot=200, seed=0)
    assert out["identical"] and out["differing_picks"] == 0 and out["compared_picks"] == 60
    assert (out["accuracy_gain"], out["accuracy_gain_low"], out["accuracy_gain_high"]) == (0.0, 0.0, 0.0)
    assert (out["compute_ratio"], out["compute_ratio_low"], out["compute_ratio_high"]) == (1.0, 1.0, 1.0)
    assert out["compute"] == "total_tokens" and out["generated_tokens"]["compute"] == "generated_tokens"
    assert out["generated_tokens"]["accuracy_gain"] == 0.0 and out["generated_tokens"]["compute_ratio"] == 1.0


def test_bootstrap_dominating_and_swapped():
    n = 40
    # The baseline is right on problems 0..9 at N=3 and 0..14 at N=6; the method on 0..24 and 0..29.
    base = per_problem_curve([3, 6], [np.arange(n) < 10, np.arange(n) < 15], [100, 200], [10, 20])
    meth = per_problem_curve([3, 6], [np.arange(n) < 25, np.arange(n) < 30], [100, 200], [300, 600])
    out = bootstrap_comparison(meth, base, n_boot=300, seed=0)
    assert not out["identical"] and out["differing_picks"] == 15 + 15
    # Generated tokens: both at 200; 0.75 against 0.375. Total tokens: the method spends 400 and 800, the baseline
    # 110 and 220, so the curves do not overlap and meet at the method's cheapest point: 0.625 against 0.375.
    assert out["generated_tokens"]["accuracy_gain"] == pytest.approx(0.75 - 0.375)
    assert out["accuracy_gain"] == pytest.approx(0.625 - 0.375) and out["gain_compute"] == 400
    assert out["accuracy_gain_low"] > 0 and out["generated_tokens"]["accuracy_gain_low"] > 0
    # The baseline never reaches 0.75: grid edge, 200/200 in generated tokens and 220/800 in total tokens.
    assert out["ratio_is_grid_edge"] and out["compute_ratio"] == pytest.approx(220 / 800)
    assert out["generated_tokens"]["compute_ratio"] == 1.0 and out["compute_ratio_grid_edge_share"] == 1.0
    back = bootstrap_comparison(base, meth, n_boot=300, seed=0)
    assert back["accuracy_gain"] == -out["accuracy_gain"]
    # The same resamples: the gains are negated draw by draw, so the interval is mirrored.
    assert back["accuracy_gain_high"] == pytest.approx(-out["accuracy_gain_low"])
    assert back["accuracy_gain_low"] == pytest.approx(-out["accuracy_gain_high"]) and back["accuracy_gain_high"] < 0
    with pytest.raises(ValueError, match="per_problem_correct"):
        bootstrap_comparison(meth, per_problem_curve([3], [[1, 0]], [100], [10]), n_boot=10, seed=0)


def test_best_prover_says_when_every_k_ties():
    tie = best_prover([{"k": 1, "accuracy": 0.4}, {"k": 4, "accuracy": 0.4}, {"k": 8, "accuracy": 0.4}])
    assert (
        tie["best_prover_k_all_tie"] and tie["best_prover_k_ties"] == [1, 4, 8] and tie["best_prover_accuracy"] == 0.4
    )
    one = best_prover([{"k": 1, "accuracy": 0.4}, {"k": 4, "accuracy": 0.5}])
    assert one["best_prover_k"] == 4 and not one["best_prover_k_all_tie"]
