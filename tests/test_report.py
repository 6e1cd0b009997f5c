"""The report's search part: verdicts, the compute ratio's wording, the results.json contract, and notes whose text
follows the numbers they state (inputs that make each note true and false)."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from trl_pav import report
from trl_pav.demo import DemoConfig
from trl_pav.demo.search import bootstrap_comparison
from trl_pav.report import comparison_verdict, ratio_text, search_headline, write_report
from trl_pav.search import summarize_curve

PROBLEMS = 20


def rec(n, right, gen, ver):
    """A search record at budget `n` right on the first `right` problems."""
    correct = [1.0 if i < right else 0.0 for i in range(PROBLEMS)]
    return {
        "n": n,
        "accuracy": right / PROBLEMS,
        "per_problem_correct": correct,
        "generated_tokens": gen,
        "verifier_tokens": ver,
    }


def comparison(gain, low, high, ratio=2.0, edge=False, identical=False, **extra):
    return {
        "accuracy_gain": gain,
        "accuracy_gain_low": low,
        "accuracy_gain_high": high,
        "compute_ratio": ratio,
        "compute_ratio_low": ratio * 0.8,
        "compute_ratio_high": ratio * 1.2,
        "ratio_is_grid_edge": edge,
        "ratio_is_lower_bound": edge,
        "compute": "total_tokens",
        "identical": identical,
        "differing_picks": 0 if identical else 3,
        "compared_picks": 2 * PROBLEMS,
        **extra,
    }


def learned_curves(pav_right=(12, 14), orm_right=(4, 5)):
    return {
        "pav_beam": [rec(3, pav_right[0], 300, 900), rec(6, pav_right[1], 600, 1800)],
        "q_beam": [rec(3, pav_right[0], 300, 900), rec(6, pav_right[1], 600, 1800)],
        "orm_bon": [rec(3, orm_right[0], 300, 300), rec(6, orm_right[1], 600, 600)],
        "majority": [rec(3, 8, 300, 0), rec(6, 9, 600, 0)],
        "random_pick": [rec(3, 5, 300, 0), rec(6, 5, 600, 0)],
        "pass_at_n": [rec(3, 12, 300, 0), rec(6, 16, 600, 0)],
    }


def block(curves):
    vs = {b: bootstrap_comparison(curves["pav_beam"], curves[b], 100, 0) for b in ("orm_bon", "majority", "q_beam")}
    intervals = {m: summarize_curve(curves[m], n_boot=100) for m in ("pav_beam", "q_beam", "orm_bon", "majority")}
    return {"curves": curves, "vs": vs, "intervals": intervals}


def quality(pav_auc=0.55, orm_auc=0.52, pav_bon=0.3, orm_bon=0.45, random=0.4):
    def one(auc, bon):
        return {
            "within_problem_auc": auc,
            "outcome_auc": 0.8,
            "step_auc": 0.7,
            "best_of_n_accuracy": bon,
            "random_pick_accuracy": random,
            "ece_final_value": 0.1,
        }

    return {
        "pav": one(pav_auc, pav_bon),
        "orm": one(orm_auc, orm_bon),
        "candidates": {
            "per_problem": 4,
            "problems": 10,
            "distinct_correct_per_problem": 1.1,
            "distinct_wrong_per_problem": 3.0,
            "problems_with_both": 6,
        },
    }


def make_results(learned=None, oracle=None, sweep=(0.45, 0.45, 0.45)):
    learned = learned or block(learned_curves())
    oracle = oracle or block(learned_curves(pav_right=(12, 15), orm_right=(12, 14)))
    planted_curves = {"pav_beam": [rec(3, 9, 100, 100)], "q_beam": [rec(3, 9, 100, 110)]}
    prover_sweep = [{"k": k, "accuracy": a} for k, a in zip((1, 4, 32), sweep)]
    return {
        "config": asdict(DemoConfig.quick()),
        "search": {
            "learned": learned,
            "oracle": oracle,
            "curves": learned["curves"],
            "monotone": True,
            "prover_sweep": prover_sweep,
            "best_prover_k": 1,
            "expansions": 3,
        },
        "rl": {
            "sample_efficiency_ratio": None,
            "accuracy_gain": 0.01,
            "accuracy_gain_interval": [-0.02, 0.04],
            "final_accuracy": {"outcome": 0.3, "pav_rl": 0.31},
            "final_accuracy_interval": {"outcome": [0.3, 0.28, 0.32], "pav_rl": [0.31, 0.29, 0.33]},
            "gain_over_outcome": {"pav_rl": {"estimate": 0.01, "low": -0.02, "high": 0.04}},
            "seeds": 2,
            "curves": {"outcome": [{"step": 0, "accuracy": 0.3}], "pav_rl": [{"step": 0, "accuracy": 0.31}]},
        },
        "planted": {
            "exact_search": {
                "gamma": 5.0,
                "curves": planted_curves,
                "pav_vs_q": bootstrap_comparison(planted_curves["pav_beam"], planted_curves["q_beam"], 50, 0),
            },
            "final_gain_interval": [0.2, 0.1, 0.3],
            "base_policy_success": 0.1,
            "curves": {"pav": [{"step": 0, "accuracy": 0.1}], "outcome": [{"step": 0, "accuracy": 0.1}]},
            "ppo_iterations_to_90": {},
            "iterations_to_90": {"pav": [50, 60], "outcome": [None, None]},
            "pav_iterations_to_90": 55.0,
            "outcome_iterations_to_90": None,
            "pav_final_accuracy": 0.95,
            "outcome_final_accuracy": 0.2,
            "final_accuracy_per_seed": {"pav": [0.95, 0.95], "outcome": [0.2, 0.2]},
            "seeds": 2,
            "gamma_sweep": [{"gamma": 1.0, "final_accuracy": 0.2}, {"gamma": 10.0, "final_accuracy": 0.9}],
            "gamma_sweep_outcome_accuracy": 0.2,
            "gamma_window": [10.0, 10.0],
        },
        "arithmetic": {
            "verifier_quality": quality(),
            "label_quality": {
                "pit_precision": 0.9,
                "masked_steps": 3,
                "failing_traces_with_pit": 10,
                "mean_label_correct_steps": 0.8,
                "mean_label_wrong_steps": 0.1,
            },
            "base_policy_train_seconds": 10.0,
            "base_policy_sampled_accuracy": 0.4,
            "base_policy_step_accuracy": 0.9,
            "labeling": {"num_traces": 48, "num_labels": 200, "rollouts": 1000},
        },
        "verifier": {"pav_step_auc": 0.7},
        "labels": {"pit_precision": 0.9},
        "runtime_seconds": 12.0,
    }


# ---- verdicts and the ratio's wording -----------------------------------------------------------------------------
def test_comparison_verdict():
    assert comparison_verdict(0.01, 0.1) == "reproduced"
    assert comparison_verdict(-0.1, -0.01) == "opposite"
    assert comparison_verdict(0.0, 0.1) == comparison_verdict(-0.1, 0.0) == "not resolved"
    assert comparison_verdict(None, 0.1) == "not resolved"
    # Identical curves: "no difference" whatever the interval says.
    assert comparison_verdict(0.0, 0.0, identical=True) == "no difference"


def test_ratio_is_stated_only_for_a_resolved_gain():
    c = comparison(0.05, 0.01, 0.1, ratio=2.5)
    assert ratio_text(c) == "2.50x [2.00, 3.00]"
    assert ratio_text({**c, "ratio_is_grid_edge": True}) == "≥ 2.50x (grid edge)"
    # Old comparisons carry only ratio_is_lower_bound.
    old = {k: v for k, v in c.items() if k != "ratio_is_grid_edge"}
    assert ratio_text({**old, "ratio_is_lower_bound": True}) == "≥ 2.50x (grid edge)"
    assert ratio_text({**c, "compute_ratio_grid_edge_share": 0.3}) == "2.50x [2.00, ≥ 3.00]"
    assert ratio_text({**c, "accuracy_gain_low": 0.0}) is None
    assert ratio_text({**c, "accuracy_gain_low": -0.2, "accuracy_gain_high": -0.1}) is None


def test_search_headline_keys():
    c = comparison(0.1, 0.05, 0.15, ratio=3.0, generated_tokens=comparison(0.2, 0.1, 0.3, ratio=8.0, edge=True))
    q = comparison(0.0, 0.0, 0.0, ratio=1.0, identical=True)
    out = search_headline({"orm_bon": c, "q_beam": q})
    assert out["compute_unit"] == "total_tokens"
    assert out["accuracy_gain"] == 0.1 and out["accuracy_gain_interval"] == [0.05, 0.15]
    assert out["compute_ratio"] == 3.0 and out["compute_ratio_interval"] == [pytest.approx(2.4), pytest.approx(3.6)]
    assert out["verdict"] == "reproduced" and out["compute_ratio_text"] == "3.00x [2.40, 3.60]"
    assert out["generated_only"]["compute_ratio_text"] == "≥ 8.00x (grid edge)"
    assert out["pav_vs_q_gain"] == 0.0 and out["pav_vs_q_interval"] == [0.0, 0.0]
    assert out["pav_vs_q_verdict"] == "no difference"


# ---- the whole report ---------------------------------------------------------------------------------------------
def test_write_report_contract_and_headline(tmp_path):
    write_report(make_results(), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    search = saved["search"]
    assert search["compute_unit"] == "total_tokens"
    for key in ("accuracy_gain", "compute_ratio", "pav_vs_q_gain"):
        assert isinstance(search[key], float), key
    for key in ("accuracy_gain_interval", "compute_ratio_interval", "pav_vs_q_interval"):
        assert len(search[key]) == 2 and search[key][0] <= search[key][1], key
    learned = make_results()["search"]["learned"]["vs"]
    assert search["accuracy_gain"] == learned["orm_bon"]["accuracy_gain"]
    assert search["pav_vs_q_gain"] == 0.0 and search["pav_vs_q_verdict"] == "no difference"
    assert saved["summary"]["search"]["compute_unit"] == "total_tokens"
    text = (tmp_path / "report.md").read_text()
    assert "generated + verifier tokens" in text and "Counting generated tokens only" in text
    assert "(lower bound)" not in text
    # Learned PAV and Q-only beams are the same curves: "no difference", not "opposite".
    claim = next(
        c for c in saved["summary"]["claims"] if c["claim"].startswith("Search (learned verifiers): PAV beam beats Q")
    )
    assert claim["verdict"] == "no difference" and claim["estimate"] == 0.0
    # In total tokens PAV beam spends 1,200 and 2,400, best-of-N 600 and 1,200: at 1,200 PAV beam is right on 12 of
    # 20 (N = 3), best-of-N on 5 (N = 6). PAV is right on a superset, so every resample keeps it ahead.
    assert learned["orm_bon"]["accuracy_gain"] == pytest.approx(12 / 20 - 5 / 20)
    assert learned["orm_bon"]["accuracy_gain_low"] > 0
    # Best-of-N never reaches PAV beam's 0.7 (at 2,400): a grid edge, 1,200 / 2,400.
    assert "compute ratio ≥ 0.50x (grid edge)" in text
    assert "compute ratio ≥" in text and "(grid edge)" in text
    # Every prover K ties: the sweep names no best K.
    assert "all K tie at 0.450" in text and "Best prover K" not in text
    assert "At N = 6 PAV beam reads 1,800 verifier tokens and the ORM's best-of-N 600 (3.0x)" in text


def test_headline_hides_the_ratio_of_an_unresolved_gain():
    curves = learned_curves(pav_right=(7, 7), orm_right=(6, 7))
    results = make_results(learned=block(curves))
    text = report._headline_md(results["search"])
    assert "not resolved; compute ratio not stated (the gain is not resolved)" in text


def test_prover_text():
    sweep = [{"k": 1, "accuracy": 0.4}, {"k": 4, "accuracy": 0.5}, {"k": 8, "accuracy": 0.5}]
    assert report._prover_text(sweep).startswith("Prover sweep: K = 4, 8 tie for the best accuracy, 0.500")
    assert report._prover_text(sweep[:2]).startswith("Best prover K in the sweep: 4 (0.500")
    assert report._prover_text([{**r, "accuracy": 0.4} for r in sweep]).startswith("Prover sweep: all K tie at 0.400")


# ---- notes --------------------------------------------------------------------------------------------------------
def test_pav_vs_q_note_follows_the_picks():
    results = make_results()
    # Exact-value PAV and Q-only beams identical: the mechanism sentence, and it says what the picks show.
    note = report._pav_vs_q_note(results)
    assert "no difference; the two are right on the same problems at every N" in note
    assert "pre-flight" not in note  # no pre-flight numbers, no sentence about the mechanism
    regime = {"rank_disagreement": 0.0, "beam_rounds": 80}
    note = report._pav_vs_q_note({**results, "regime": regime})
    assert "in 0.0% of 80 beam rounds: the two rules are the same search here" in note
    note = report._pav_vs_q_note({**results, "regime": {**regime, "rank_disagreement": 0.125}})
    assert "in 12.5% of 80 beam rounds." in note and "same search" not in note
    # Different picks, same accuracy at each N: not resolved, and no mechanism sentence.
    oracle = learned_curves(pav_right=(12, 15), orm_right=(12, 14))
    oracle["q_beam"] = [{**r, "per_problem_correct": r["per_problem_correct"][::-1]} for r in oracle["q_beam"]]
    results = make_results(oracle=block(oracle))
    note = report._pav_vs_q_note(results)
    assert "+0.0 points [" in note and "not resolved; the two are right on different problems in 26 of 40" in note
    assert "pre-flight" not in note
    # A resolved gain for PAV beam reproduces the paper: no note.
    oracle["q_beam"] = [rec(3, 4, 300, 900), rec(6, 5, 600, 1800)]
    assert report._pav_vs_q_note(make_results(oracle=block(oracle))) == ""


def test_planted_note_recomputes_a_stale_comparison():
    planted = make_results()["planted"]
    assert "no difference; the two are right on the same problems" in report._planted_search_note(planted)
    # A comparison cached by the old code (raw point against running best, no `compute` field) said -4.7 points
    # "opposite" for identical curves; the note recomputes it from the curves.
    stale = {**planted, "exact_search": {**planted["exact_search"], "pav_vs_q": comparison(-0.047, -0.1, -0.01)}}
    stale["exact_search"]["pav_vs_q"].pop("compute")
    stale["exact_search"]["pav_vs_q"].pop("identical")
    note = report._planted_search_note(stale, {"bootstrap_samples": 20, "seed": 0})
    assert "-4.7" not in note and "+0.0 points [+0.0, +0.0], no difference" in note
    differs = comparison(0.05, -0.02, 0.1)
    note = report._planted_search_note({**planted, "exact_search": {**planted["exact_search"], "pav_vs_q": differs}})
    assert "not resolved; the two are right on different problems in 3 of 40" in note


def test_learned_q_note():
    search = make_results()["search"]
    assert "are right on the same problems" in report._learned_q_note(search)
    assert "every prover K in the sweep gives the same accuracy, 0.450" in report._learned_q_note(search)
    curves = learned_curves()
    curves["q_beam"] = [{**r, "per_problem_correct": r["per_problem_correct"][::-1]} for r in curves["q_beam"]]
    other = {**search, "learned": block(curves), "prover_sweep": [{"k": 1, "accuracy": 0.4}, {"k": 4, "accuracy": 0.5}]}
    note = report._learned_q_note(other)
    assert "though they are right on different problems in 28 of 40" in note and "changed no pick" not in note
    assert "every prover K" not in note
    curves["q_beam"] = [rec(3, 1, 300, 900), rec(6, 2, 600, 1800)]
    assert report._learned_q_note({**search, "learned": block(curves)}) == ""


def test_decomposition_note_branches():
    results = make_results()
    search, q = results["search"], results["arithmetic"]["verifier_quality"]
    # Exact-value gain (12 vs 14 of 20 at 1,200 total tokens) below the learned one (12 vs 5): no smaller with the
    # learned verifiers.
    note = report._decomposition_note(search, q)
    assert "at equal total tokens" in note and "no smaller with the learned verifiers" in note
    assert "PAV beam goes 0.750 → 0.700 and the ORM's best-of-N 0.700 → 0.250" in note
    assert "losses within 5 points" not in note  # 5 and 45 points lost
    # The exact-value gain above the learned one: the gain shrinks; the difficulty clause only when the pooled AUCs
    # exceed the within-problem ones.
    oracle = block(learned_curves(pav_right=(18, 20), orm_right=(4, 5)))
    search = {**search, "oracle": oracle}
    note = report._decomposition_note(search, q)
    assert "The gain shrinks from exact to learned values" in note and "rank problems by difficulty" in note
    flat = {k: {**v, "outcome_auc": 0.55} if k in ("pav", "orm") else v for k, v in q.items()}
    assert "rank problems by difficulty" not in report._decomposition_note(search, flat)


def test_flat_search_note_says_what_each_curve_does():
    search = make_results()["search"]
    q = quality()
    # Learned PAV beam rises 12 → 14 of 20 (+10 points): no note.
    assert report._flat_search_note(search, q) == ""
    curves = learned_curves(pav_right=(10, 10), orm_right=(6, 9))
    search = {**search, "learned": block(curves)}
    note = report._flat_search_note(search, q)
    assert "PAV beam 0.500 → 0.500 (within 2 points)" in note and "best-of-N 0.300 → 0.450 (rises)" in note
    assert "Pass@N 0.600 → 0.800 (rises)" in note and "more often at larger N" in note
    assert "more often a wrong one" not in note  # PAV beam does not fall
    curves["pass_at_n"] = [rec(3, 12, 300, 0), rec(6, 12, 600, 0)]
    curves["pav_beam"] = [rec(3, 10, 300, 900), rec(6, 8, 600, 1800)]
    note = report._flat_search_note({**search, "learned": {"curves": curves}}, q)
    assert "PAV beam 0.500 → 0.400 (falls)" in note and "more often at larger N" not in note
    # Exact values flat too: no note.
    flat = learned_curves(pav_right=(10, 10))
    assert report._flat_search_note({**search, "learned": {"curves": curves}, "oracle": {"curves": flat}}, q) == ""


def test_below_random_note():
    search = make_results()["search"]
    note = report._below_random_note(search, quality())
    # Only the PAV is below random (0.30 < 0.40; the ORM's 0.45 is not).
    assert "(PAV 0.300; random 0.400)" in note and "ORM 0.450" not in note
    assert "near chance" in note  # AUC 0.55, wrong candidates more distinct than right ones
    # Majority (9 of 20) above the ORM's best-of-N (5 of 20) at the largest N.
    assert "reaches 0.450 at the largest N against the ORM's best-of-N 0.250" in note
    assert "near chance" not in report._below_random_note(search, quality(pav_auc=0.7))
    assert report._below_random_note(search, quality(pav_bon=0.5)) == ""
    curves = learned_curves(orm_right=(10, 12))
    assert "Majority vote" not in report._below_random_note({**search, "learned": {"curves": curves}}, quality())


def test_monotone_note_names_the_falling_curves():
    curves = learned_curves(pav_right=(20, 0))
    search = {**make_results()["search"], "learned": block(curves), "monotone": False}
    note = report._monotone_note(search)
    assert "pav_beam 1.000 → 0.000" in note and "orm_bon" not in note
    assert report._monotone_note({**search, "monotone": True}) == ""


def test_gamma_note():
    planted, cfg = make_results()["planted"], {"gamma_sweep_steps": 4}
    assert report._gamma_note(planted, cfg) == ""  # window [10, 10] inside the paper's

    def row(gamma, final, mean, gain):  # one seed: the interval is the estimate itself
        return {"gamma": gamma, "final_accuracy": final, "mean_success": mean,
                "mean_success_gain_over_outcome": [gain, gain, gain]}  # fmt: skip

    one_seed = {**planted, "gamma_sweep_outcome_mean_success": 0.1}
    sweep = [row(1.0, 0.2, 0.11, 0.01), row(3.0, 0.6, 0.4, 0.3), row(100.0, 0.21, 0.12, 0.02)]
    note = report._gamma_note({**one_seed, "gamma_sweep": sweep, "gamma_window": [3.0, 3.0]}, cfg)
    assert "success averaged over training is more than 5 points above outcome-only RL's (0.100)" in note
    assert "As in the paper, the weakest (γ=1: 0.110) and the strongest (γ=100: 0.120)" in note
    assert "3 points, one seed each and 4 GRPO steps per run" in note
    sweep[-1] = row(100.0, 0.9, 0.5, 0.4)
    note = report._gamma_note({**one_seed, "gamma_sweep": sweep, "gamma_window": [3.0, 100.0]}, cfg)
    assert "Unlike the paper, the strongest prover" in note and "As in the paper" not in note
    note = report._gamma_note({**planted, "gamma_window": None}, cfg)
    assert "No γ in the sweep gives that gain" in note
    # Several seeds: the window is where the paired gain's interval lies above 0, whatever the means say. Rows
    # without the mean success (recorded before it existed) fall back to the final gain.
    seeded = [
        {"gamma": 1.0, "final_accuracy": 0.3, "gain_over_outcome": [0.1, -0.05, 0.25]},
        {"gamma": 10.0, "final_accuracy": 0.6, "gain_over_outcome": [0.4, 0.3, 0.5]},
        {"gamma": 100.0, "final_accuracy": 0.26, "gain_over_outcome": [0.06, 0.01, 0.11]},
    ]
    multi = {**planted, "gamma_sweep": seeded, "gamma_window": [10.0, 100.0], "gamma_sweep_seeds": [10, 11, 12]}
    note = report._gamma_note(multi, cfg)
    assert "gain in final success" in note and "interval above 0 over 3 seeds" in note and "3 seeds each" in note
    assert "Unlike the paper, the strongest prover" in note  # its interval [0.01, 0.11] is above 0


def test_sweep_window_rule_reads_learning_speed_not_final_success():
    from trl_pav.demo.planted import sweep_gains

    # Both arms saturate: no final gain, but PAV-RL got there sooner on every seed.
    saturated = {"gain_over_outcome": [0.0, -0.01, 0.01], "mean_success_gain_over_outcome": [0.3, 0.2, 0.4]}
    assert sweep_gains(saturated, seeds=3)
    assert not sweep_gains({**saturated, "mean_success_gain_over_outcome": [0.3, -0.1, 0.7]}, seeds=3)
    assert sweep_gains({"mean_success_gain_over_outcome": [0.06] * 3}, seeds=1)
    assert not sweep_gains({"mean_success_gain_over_outcome": [0.04] * 3}, seeds=1)
    assert not sweep_gains({"gamma": 1.0}, seeds=3)


def test_mean_success_over_training_is_the_trapezoid_area_over_the_span():
    from trl_pav.evaluation import mean_success_over_training

    # A step from 0 to 1 halfway: area 0.5 * 10 (ramp) + 1 * 10, over 20 iterations.
    assert mean_success_over_training([(0, 0.0), (10, 1.0), (20, 1.0)]) == pytest.approx(0.75)
    assert mean_success_over_training([(20, 1.0), (0, 0.0), (10, 1.0)]) == pytest.approx(0.75)  # order-free
    assert mean_success_over_training([(0, 0.4), (30, 0.4)]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="two or more distinct iterations"):
        mean_success_over_training([(5, 0.3)])


def test_probe_and_likelihood_notes_follow_their_numbers():
    probes = {"final_token_hidden_layer_1": {"within_problem_auc": 0.55}, "token_logprob": {"within_problem_auc": 0.7},
              "train_traces": 48}  # fmt: skip
    assert "shows more in the likelihood" in report._probe_note(probes)
    probes["final_token_hidden_layer_1"]["within_problem_auc"] = 0.8
    assert "shows more in the likelihood" not in report._probe_note(probes)
    q = {**quality(), "policy_likelihood": {"within_problem_auc": 0.5, "best_of_n_accuracy": 0.3}}
    assert "near chance" in report._likelihood_note(q)
    q["policy_likelihood"]["within_problem_auc"] = 0.58  # above neither verifier's 0.55? above: better than both
    assert "better than either verifier: within-problem AUC 0.58 against 0.55" in report._likelihood_note(q)
    q["policy_likelihood"]["within_problem_auc"] = 0.53
    assert report._likelihood_note(q).endswith("(within-problem AUC 0.53): near chance, so the backbone's likelihood "
                                              "does not tell a right answer from a wrong one.")  # fmt: skip
    q = {**quality(pav_auc=0.9), "policy_likelihood": {"within_problem_auc": 0.7, "best_of_n_accuracy": 0.3}}
    assert report._likelihood_note(q).endswith("(within-problem AUC 0.70).")


def test_identical_curves_are_no_difference_in_claims():
    claims = report._claims(make_results())
    by = {c["claim"]: c for c in claims}
    q = by[
        "Search (learned verifiers): PAV beam beats Q-only beam at equal total tokens (running best vs running best)"
    ]
    assert q["verdict"] == "no difference" and q["compute_ratio_text"] is None
    orm = by[
        "Search (learned verifiers): PAV beam beats ORM best-of-N at equal total tokens (running best vs running best)"
    ]
    assert orm["verdict"] == "reproduced" and orm["compute_ratio_text"].endswith("(grid edge)")
    assert "compute ratio ≥" in report._fmt_interval(orm)
    assert np.isfinite(orm["estimate"])


# ---- RL and labels notes ------------------------------------------------------------------------------------------
def rl_results(low=-0.02, high=0.04, ratio=None, spread=0.06, end=0.31, exact=True):
    results = make_results()

    def curve(start, stop):
        return [{"step": 0, "accuracy": start, "min": start, "max": start},
                {"step": 40, "accuracy": stop, "min": stop - spread / 2, "max": stop + spread / 2}]  # fmt: skip

    gains = {"pav_rl": {"estimate": (low + high) / 2, "low": low, "high": high}}
    if exact:
        gains["pav_rl_exact"] = {"estimate": 0.0, "low": -0.01, "high": 0.01}
    results["rl"].update(
        accuracy_gain=(low + high) / 2,
        accuracy_gain_interval=[low, high],
        sample_efficiency_ratio=ratio,
        gain_over_outcome=gains,
        curves={"outcome": curve(0.3, 0.3), "pav_rl": curve(0.3, end)},
    )
    return results


def test_rl_note_follows_its_numbers():
    assert report._rl_note(rl_results(low=0.01, high=0.05)) == ""  # resolved above 0: no note
    note = report._rl_note(rl_results())
    assert "longer or faster" not in note and "exploration" not in note
    assert "+1.0 points (interval [-2.0, +4.0], 2 seeds)" in note
    assert "ratio is undefined: its mean curve never reaches" in note
    assert "With exact values the gain is +0.0 points [-1.0, +1.0]." in note
    assert "would still have an interval reaching below 0" not in note  # half-width 3.0 points
    assert "Over 40 GRPO steps the mean accuracy moves outcome 0.300 → 0.300, pav_rl 0.300 → 0.310" in note
    assert "differ by up to 6.0 points, no less than any arm's mean moved." in note
    note = report._rl_note(rl_results(low=-0.05, high=0.03, ratio=1.5, spread=0.02, end=0.4, exact=False))
    assert "sample-efficiency ratio is 1.50." in note and "With exact values" not in note
    assert "half-width is 4.0 points with 2 seeds and 32 evaluation problems" in note
    assert "differ by up to 2.0 points." in note and "no less than" not in note  # pav_rl moved 10 points


def test_labels_note_follows_its_numbers():
    results = make_results()
    assert report._labels_note(results) == ""  # precision 0.9
    labels = results["arithmetic"]["label_quality"]
    labels["pit_precision"] = 0.6
    note = report._labels_note(results)
    assert "first error in 60% of 10 failing traces (n_mc = 4, a candidate pit confirmed with 2 more" in note
    assert "no way back" not in note and "never comes after" not in note and "mismatched pits" not in note
    assert "0 successes in 6 rollouts, so the base policy finishes it with probability below 0.39" in note
    assert note.endswith("The 3 steps after a pit are masked, not labeled 0.")
    labels.update(pits_before_first_error=0, pits_after_first_error=4)
    note = report._labels_note(results)
    assert "Of the mismatched pits, 0 lie before the first error" in note and "4 after it" in note
    assert "0 successes" not in note
    labels["pits_before_first_error"] = 2
    assert "0 successes in 6 rollouts" in report._labels_note(results)
    results["config"]["pit_threshold"] = 0.25  # a pit may then have successes: no bound
    assert "0 successes" not in report._labels_note(results)


def _mc_arm(n, tokens, ratio=None, iters=None):
    return {
        "mc_rollouts": n,
        "iterations_to_90": iters or [10 if t is not None else None for t in tokens],
        "tokens_to_90": tokens,
        "final_accuracy": [0.9] * len(tokens),
        "total_tokens": [1000] * len(tokens),
        "rollout_tokens_per_step": 0.0 if n is None else 100.0 * n,
        "curves": [],
        **(
            {}
            if n is None
            else {"tokens_to_90_over_exact": ratio, "seeds_reaching_90": sum(t is not None for t in tokens)}
        ),
    }


def test_mc_section_states_what_its_ratios_say():
    base = {"gamma": 10.0, "steps": 300, "seeds": [0, 1, 2]}
    arms = {"outcome": _mc_arm(None, [None] * 3), "exact": _mc_arm(None, [100, 120, 110])}
    more = report._mc_md({**base, "arms": {**arms, "mc4": _mc_arm(4, [200, 260, 220], [2.0, 1.5, 2.5])}})
    assert "n = 4: tokens to 90% are 2.00x [1.50, 2.50] the exact arm's" in more and "more tokens than exact" in more
    fewer = report._mc_md({**base, "arms": {**arms, "mc4": _mc_arm(4, [50, 60, 55], [0.5, 0.4, 0.6])}})
    assert "fewer tokens than exact values" in fewer
    tie = report._mc_md({**base, "arms": {**arms, "mc2": _mc_arm(2, [90, 130, 110], [1.0, 0.8, 1.2])}})
    assert "no resolved difference" in tie and "| MC, n = 2 | 200 | 0 |" in tie
    never = report._mc_md({**base, "arms": {**arms, "mc2": _mc_arm(2, [None, None, None], None)}})
    assert "reached 90% on 0 of 3 seeds; no paired ratio" in never and "never, never, never" in never
    assert report._mc_md(None) == ""


def test_mc_section_with_learned_arms_states_its_numbers():
    """A learned PAV arm: its labeling cost and fitting error are stated as recorded, and each MC arm is compared
    with it (labeling counted) in the direction its interval says; no seed in common gives no ratio."""
    fit = {"traces": 256, "advantage_mae": 0.0104, "exact_advantage_mean_abs": 0.0130, "advantage_corr": 0.5}
    learned = {**_mc_arm(None, [None, 150, None]), "learned": True, "prover_share": 0.5, "labeling_tokens": 5000,
               "tokens_to_90_with_labeling": [None, 5150, None], "tokens_to_90_over_exact": [1.2, None, None],
               "seeds_reaching_90": 1}  # fmt: skip
    mc8 = {**_mc_arm(8, [900, 800, 850], [8.0, 6.0, 10.0]), "tokens_to_90_over_learned": {"learned_mix0.5": None}}
    base = {"gamma": 10.0, "steps": 300, "seeds": [0, 1, 2]}
    arms = {"outcome": _mc_arm(None, [None] * 3), "exact": _mc_arm(None, [100, 120, 110])}
    on_prover = {**fit, "advantage_mae": 0.2, "advantage_corr": 0.1}
    records = {"learned_mix0.5": {"labeled_traces": 512, "labels": 5095, "labeling_tokens": 5000, "fit": fit,
                                  "fit_on_prover_states": on_prover}}  # fmt: skip
    text = report._mc_md({**base, "arms": {**arms, "learned_mix0.5": learned, "mc8": mc8}, "learned_pav": records})
    assert "| learned PAV (50% prover traces) | 0 | 0 | never, 10, never | never, 150, never |" in text
    assert "labeling generated 5,000 tokens once" in text and "(never, 5,150, never)" in text
    assert "off the exact ones by 0.0104 on average, against exact advantages of 0.0130" in text
    assert "on the prover's traces, which reach the states an improving policy visits, by 0.2000" in text
    assert "no paired ratio (no seed where both reached 90%)" in text
    assert "(RL tokens only, labeling excluded) are 1.20x (one seed, no interval) the exact arm's" in text
    assert "not resolved on one seed" in text
    assert "repay its labeling" not in text  # no break-even recorded
    mc8["tokens_to_90_over_learned"] = {"learned_mix0.5": [0.2, 0.1, 0.3]}
    mc8["learned_break_even_runs"] = {"learned_mix0.5": 2.54}
    text = report._mc_md({**base, "arms": {**arms, "learned_mix0.5": learned, "mc8": mc8}, "learned_pav": records})
    assert "spent 0.20x [0.10, 0.30] its tokens to 90%: fewer tokens than that learned PAV" in text
    assert "to repay its labeling after 2.5 RL runs (on the 1 seed where both reached 90%" in text
    assert "come from its exact DP values, or from a PAV trained on Monte-Carlo labels, or from n rollouts" in text
    mc8["learned_break_even_runs"] = {"learned_mix0.5": 0.4}
    text = report._mc_md({**base, "arms": {**arms, "learned_mix0.5": learned, "mc8": mc8}, "learned_pav": records})
    assert "repay its labeling within its first RL run" in text
    no_mc = report._mc_md({**base, "arms": {**arms, "learned_mix0.5": learned}, "learned_pav": records})
    assert "rollouts of the prover" not in no_mc and "a PAV trained on Monte-Carlo labels" in no_mc
    mc8["tokens_to_90_over_learned"] = {"learned_mix0.5": [1.5, 0.9, 2.1]}
    text = report._mc_md({**base, "arms": {**arms, "learned_mix0.5": learned, "mc8": mc8}, "learned_pav": records})
    assert "no resolved difference from that learned PAV" in text


def test_mc_section_pools_learned_copies_over_verifier_seeds():
    """Copies of one learned recipe on other verifier seeds: the runs that reached 90% are counted, each ratio is the
    mean of the copies' per-seed means with a t-interval over copies (hand-computed), runs where MC reached 90% and a
    copy did not are counted as left out, and one copy with a ratio gets no interval and no verdict."""
    from trl_pav.demo.planted import _paired_ratio, _pooled_learned

    def copy(tokens, seed):
        with_labeling = [None if t is None else t + 1000 for t in tokens]
        return {**_mc_arm(None, tokens), "learned": True, "prover_share": 0.5, "labeling_tokens": 1000,
                "verifier_seed": seed, "tokens_to_90_with_labeling": with_labeling,
                "seeds_reaching_90": sum(t is not None for t in tokens),
                "tokens_to_90_over_exact": _paired_ratio(tokens, [100, 120, 110])}  # fmt: skip

    base = {"gamma": 10.0, "steps": 300, "seeds": [10, 11, 12]}
    arms = {
        "outcome": _mc_arm(None, [None] * 3),
        "exact": _mc_arm(None, [100, 120, 110]),
        "learned_mix0.5": {**copy([None, 150, 200], 0), "mean_success": [0.0, 0.5, 0.4]},
        "learned_mix0.5_v1": {**copy([300, None, 100], 1), "mean_success": [0.3, 0.0, 0.3]},
        "mc8": {**_mc_arm(8, [900, 800, 850]), "mean_success": [0.5, 0.5, 0.5]},
    }
    pooled = _pooled_learned(arms, ["learned_mix0.5", "learned_mix0.5_v1"])
    # Copy means over exact: (150/120 + 200/110) / 2 and (300/100 + 100/110) / 2; MC over the copies with labeling.
    over_exact = [(150 / 120 + 200 / 110) / 2, (300 / 100 + 100 / 110) / 2]
    mc_over = [(800 / 1150 + 850 / 1200) / 2, (900 / 1300 + 850 / 1100) / 2]
    assert pooled["runs"] == 6 and pooled["runs_reaching_90"] == 4
    assert pooled["tokens_to_90_over_exact"][0] == pytest.approx(np.mean(over_exact))
    assert pooled["mc_over_learned"]["mc8"][0] == pytest.approx(np.mean(mc_over))
    half = 12.706 * np.std(mc_over, ddof=1) / np.sqrt(2)  # t(0.975, 1 df)
    assert pooled["mc_over_learned"]["mc8"][2] == pytest.approx(np.mean(mc_over) + half, rel=1e-3)
    assert pooled["mc_reached_learned_missed"]["mc8"] == 2
    text = report._mc_md({**base, "arms": arms, "learned_pooled": {"learned_mix0.5": pooled}})
    assert "| learned PAV (50% prover traces, verifier seed 1) |" in text
    assert "| learned PAV (50% prover traces, verifier seed 0) |" in text
    assert "Over its 2 verifier seeds (each labeled and trained again), the learned PAV (50% prover traces) " in text
    assert "reached 90% in 4 of 6 RL runs" in text
    assert "the exact arm's: no resolved difference from exact values." in text
    low, high = pooled["mc_over_learned"]["mc8"][1:]
    assert (
        f"MC, n = 8 spent {np.mean(mc_over):.2f}x [{low:.2f}, {high:.2f}] its tokens to 90% with labeling: fewer "
        in text
    )
    assert "(2 runs where MC, n = 8 reached 90% and a copy did not are left out, which favours" in text
    # Success averaged over training, MC minus each copy: copy means 0.2 and 0.3, t-interval over the two.
    sooner = pooled["mean_success_mc_minus_learned"]["mc8"]
    assert sooner[0] == pytest.approx(0.25) and sooner[2] - sooner[0] == pytest.approx(12.706 * 0.05, rel=1e-3)
    assert (
        "also where 90% was never reached), MC, n = 8 minus the copies: +0.250 [-0.385, +0.885] (not resolved)" in text
    )
    assert "Each ratio is the mean over a copy's seeds" in text
    arms["learned_mix0.5_v1"]["mean_success"] = [0.3, 0.297, 0.3]  # copy means 0.2 and 0.201: MC resolved sooner
    pooled = _pooled_learned(arms, ["learned_mix0.5", "learned_mix0.5_v1"])
    text = report._mc_md({**base, "arms": arms, "learned_pooled": {"learned_mix0.5": pooled}})
    assert "minus the copies: +0.200 [+0.194, +0.207] (MC, n = 8 learned sooner)" in text
    arms["learned_mix0.5_v1"] = {
        **copy([None, None, None], 1),
        "mean_success": [0.0, 0.0, 0.0],
    }  # a copy that never reached 90%: one copy has ratios
    pooled = _pooled_learned(arms, ["learned_mix0.5", "learned_mix0.5_v1"])
    assert pooled["mc_over_learned"]["mc8"] == [mc_over[0], None, None]
    text = report._mc_md({**base, "arms": arms, "learned_pooled": {"learned_mix0.5": pooled}})
    assert "(one verifier seed, no interval)" in text and "not resolved on one verifier seed" in text
    assert "reached 90% in 2 of 6 RL runs" in text and "(4 runs where" in text


def test_mc_section_states_prover_refresh_against_fixed_and_outcome():
    """Refresh arms: labelled by their prover, compared with the fixed prover and outcome-only by paired seed
    differences computed from the arms' numbers; a gain only when the interval excludes 0, identical runs give no
    difference."""
    from trl_pav.demo.planted import _refresh_comparison

    def arm(mean_success, final, every):
        return {**_mc_arm(8, [None, None, None]), "refresh_every": every, "prover_k": 4,
                "mean_success": mean_success, "final_accuracy": final}  # fmt: skip

    base = {"gamma": 10.0, "steps": 300, "seeds": [10, 11, 12]}
    arms = {
        "outcome": {**_mc_arm(None, [None] * 3), "mean_success": [0.0, 0.0, 0.2], "final_accuracy": [0.0, 0.0, 0.8]},
        "exact": _mc_arm(None, [100, 120, 110]),
        "bo4_fixed": arm([0.0, 0.0, 0.2], [0.0, 0.0, 0.8], 0),
        "bo4_refresh50": arm([0.4, 0.5, 0.6], [0.9, 0.9, 0.9], 50),
    }
    rows = _refresh_comparison(arms)
    assert set(rows) == {"bo4_fixed", "bo4_refresh50"} and "mean_success_gain_over_fixed" not in rows["bo4_fixed"]
    gain = rows["bo4_refresh50"]["mean_success_gain_over_fixed"]  # differences 0.4, 0.5, 0.4
    assert gain[0] == pytest.approx(13 / 30) and gain[1] > 0
    text = report._mc_md({**base, "arms": arms, "prover_refresh": rows})
    assert "| Bo4 prover (the base policy's, fixed), MC, n = 8 |" in text
    assert "The Bo-K prover rows use another prover" in text
    assert "use another prover" not in report._mc_md({**base, "arms": {k: arms[k] for k in ("outcome", "exact")}})
    assert (
        "Against the fixed prover, the Bo4 prover (the policy's, refreshed every 50 steps), MC, n = 8 changed" in text
    )
    assert f"by +0.433 [{gain[1]:+.3f}, {gain[2]:+.3f}] (a gain)" in text
    assert (
        "Against outcome-only RL, the Bo4 prover (the base policy's, fixed), MC, n = 8 changed success averaged "
        "over training by +0.000 on every seed (no difference) and final success by +0.000 on every seed" in text
    )
    arms["bo4_refresh50"]["mean_success"] = [0.0, 0.4, 0.1]  # differences 0, 0.4, -0.1: not resolved
    text = report._mc_md({**base, "arms": arms, "prover_refresh": _refresh_comparison(arms)})
    assert "by +0.100 [" in text and "(not resolved)" in text


def test_pipeline_summary_pools_verdicts_over_pipeline_seeds():
    """A t-interval over pipelines: three consistent gains are reproduced, a sign flip is not resolved, one seed is
    a single pipeline; the report's section states the per-seed values and appears only with several seeds."""
    from trl_pav.demo import pipeline_summary

    out = pipeline_summary(
        {
            0: {"search_pav_vs_orm_gain": 0.05, "rl_accuracy_gain": 0.02},
            1: {"search_pav_vs_orm_gain": 0.06, "rl_accuracy_gain": -0.03},
            2: {"search_pav_vs_orm_gain": 0.07, "rl_accuracy_gain": None},
        }
    )
    gain = out["search_pav_vs_orm_gain"]
    # mean 0.06, sd 0.01, t(2) = 4.303: half-width 4.303 * 0.01 / sqrt(3).
    assert gain["mean"] == pytest.approx(0.06)
    assert gain["interval"] == pytest.approx([0.06 - 4.303 * 0.01 / 3**0.5, 0.06 + 4.303 * 0.01 / 3**0.5])
    assert gain["verdict"] == "reproduced"
    rl = out["rl_accuracy_gain"]
    assert rl["verdict"] == "not resolved" and set(rl["per_seed"]) == {"0", "1"}
    assert pipeline_summary({0: {"g": -0.1}})["g"]["verdict"] == "single pipeline"
    assert pipeline_summary({0: {"g": -0.1}, 1: {"g": -0.12}, 2: {"g": -0.11}})["g"]["verdict"] == "opposite"
    text = report._pipelines_md({"pipelines": out, "pipeline_seeds": [0, 1, 2]})
    assert "+0.050, +0.060, +0.070" in text and "| reproduced |" in text and "| not resolved |" in text
    assert report._pipelines_md({"pipelines": out, "pipeline_seeds": [0]}) == ""
    # `--full` runs RL on the first pipeline only: that metric has one value and no interval.
    single = pipeline_summary(
        {0: {"search_pav_vs_orm_gain": 0.05, "rl_accuracy_gain": 0.02}, 1: {"search_pav_vs_orm_gain": 0.06}}
    )
    text = report._pipelines_md({"pipelines": single, "pipeline_seeds": [0, 1]})
    assert "| +0.020 | +0.020 (one pipeline seed: no interval) | single pipeline |" in text
    assert "single-pipeline" in report._pipeline_text({"pipeline_seeds": [0], "config": {"seed": 0}})
    assert "3 pipeline seeds" in report._pipeline_text({"pipeline_seeds": [0, 1, 2], "config": {"seed": 0}})


def test_demo_command_overrides_fields_of_its_budget(tmp_path, monkeypatch):
    """`trl-pav demo --quick --planted_string bcb` is the quick budget with that field replaced (flags and YAML)."""
    import trl_pav.demo
    from trl_pav.cli import main

    seen = []
    monkeypatch.setattr(trl_pav.demo, "run_demo", lambda out, cfg, log=None: seen.append(cfg) or {"runtime_seconds": 1})
    yaml_file = tmp_path / "demo.yaml"
    yaml_file.write_text("planted_vocab_size: 6\nplanted_length: 14\n")
    main(["demo", "--quick", "--planted_string", "bcb", "--planted_seeds", "20", "21", "--config", str(yaml_file)])
    quick = DemoConfig.quick()
    assert seen[-1] == replace(
        quick, planted_string="bcb", planted_seeds=[20, 21], planted_vocab_size=6, planted_length=14
    )
    main(["demo", "--realistic_task", "arithmetic"])  # the task's own learning rate, not rewrite's
    assert seen[-1].realistic_task == "arithmetic" and seen[-1].realistic_rl_learning_rate == 2e-5
    with pytest.raises(SystemExit, match="planted"):
        main(["demo", "--planted_string", "zz", "--planted_vocab_size", "4"])


def test_demo_configs_and_the_full_budget():
    """`--full` adds pipeline seeds and seeded sweeps; the pipeline seeds must start with the base seed."""
    full, default = DemoConfig.full(), DemoConfig()
    assert full.pipeline_seeds == [0, 1, 2] and default.pipeline_seeds == [0]
    assert len(full.gamma_sweep_seeds) >= 3 and len(full.k_sweep_seeds) >= 3 and len(full.planted_ppo_seeds) >= 3
    assert any(5 <= g <= 17 for g in full.gamma_sweep) and full.planted_mc_rollouts
    with pytest.raises(ValueError, match="start with seed=1"):
        DemoConfig(seed=1)
    with pytest.raises(ValueError, match="repeats"):
        DemoConfig(pipeline_seeds=[0, 1, 1])
    from trl_pav.cli import main

    with pytest.raises((SystemExit, ValueError), match="exclude each other"):
        main(["demo", "--quick", "--full"])


def test_task_text_names_the_run_task():
    rewrite = {"task": "rewrite", "checker": {"error_rates": {"sum": 0.25}, "restate_rate": 0.1}}
    title, line, checker = report._task_text(rewrite)
    assert title == "Rewriting" and "Rewriting task" in line and "sum 0.25" in checker and "0.10" in checker
    assert report._task_text({})[0] == "Arithmetic"  # runs from before the rewriting task


def test_selector_note_follows_the_window():
    ranking = [{"gamma": 30.0, "score": 0.46, "score_interval": [0.43, 0.49]}, {"gamma": 10.0, "score": 0.2}]
    sel = {"stand_in_gamma": 5.0, "alpha": 1.0, "best_gamma": 30.0, "ranking": ranking}
    inside = {"window": [10.0, 30.0], "gaining_gammas": [10.0, 30.0], "in_window": True}
    note = report._selector_note({"prover_selection": {**sel, **inside}})
    assert "ranks γ=30 first (score 0.460 [0.430, 0.490])" in note and "so its choice is one of them" in note
    outside = {"window": [3.0, 17.0], "gaining_gammas": [3.0, 17.0], "in_window": False}
    note = report._selector_note({"prover_selection": {**sel, **outside}, "gamma_sweep_seeds": [10, 11, 12]})
    assert "the sweep's γ with a resolved gain are 3, 17, so its choice is not one of them" in note
    note = report._selector_note({"prover_selection": {**sel, **outside}, "gamma_sweep_seeds": [10]})
    assert "resolved" not in note and "more than 5 points above outcome-only RL on its one seed are 3, 17" in note
    note = report._selector_note({"prover_selection": {**sel, "window": None, "gaining_gammas": [], "in_window": None}})
    assert "resolves no window" in note and "one of them" not in note
    assert report._selector_note({}) == ""


def test_selector_note_states_the_lookahead_against_the_window():
    ranking = [{"gamma": 30.0, "score": 0.46, "score_interval": [0.43, 0.49]}]
    sel = {"stand_in_gamma": 5.0, "alpha": 1.0, "best_gamma": 30.0, "ranking": ranking}
    look_rows = [{"gamma": 100.0, "score": 0.105, "score_interval": [0.07, 0.13], "success": [0.1]}]
    look = {"step_sizes": [1.0, 3.0], "base_success": 0.004, "best_gamma": 100.0, "ranking": look_rows}
    window = {"window": [5.0, 17.0], "gaining_gammas": [5.0, 17.0], "in_window": False}
    note = report._selector_note({"prover_selection": {**sel, **window, "lookahead": {**look, "in_window": False}}})
    assert "ranks γ=100 first (success gain +0.105 [+0.070, +0.130] over the base policy's 0.004)" in note
    assert "c in 1, 3" in note and note.endswith("outside that window.")
    look_rows[0]["gamma"] = 5.0
    note = report._selector_note({"prover_selection": {**sel, **window, "lookahead": {**look, "in_window": True}}})
    assert "ranks γ=5 first" in note and note.endswith("inside that window.")
    none = {"window": None, "gaining_gammas": [], "in_window": None}
    note = report._selector_note({"prover_selection": {**sel, **none, "lookahead": {**look, "in_window": None}}})
    assert "resolves no window" in note and note.endswith("not checked either.") and "inside" not in note
