"""The demo's quick mode runs the whole pipeline on a tiny budget; every stage must produce numbers."""

import json
import math
from dataclasses import replace

from trl_pav.demo import DemoConfig, run_demo
from trl_pav.demo.planted import PLANTED_REFRESH_N_MC, learned_arm_name, refresh_arm_name


def test_quick_demo_writes_a_complete_report(tmp_path):
    # Not the paper's planted task: a repeated symbol, another vocabulary and traces longer than the default
    # policy's position table, so nothing may assume the default task.
    cfg = replace(DemoConfig.quick(), planted_string="bcb", planted_vocab_size=6, planted_length=14)
    results = run_demo(tmp_path, cfg)
    report = tmp_path / "report"
    saved = json.loads((report / "results.json").read_text())
    for png in (
        "search_accuracy_vs_compute.png",
        "search_oracle_accuracy_vs_compute.png",
        "prover_k_sweep.png",
        "rl_arithmetic.png",
        "rl_planted.png",
        "gamma_sweep.png",
    ):
        assert (report / png).stat().st_size > 2000, png
    text = (report / "report.md").read_text()
    assert "## The paper's claims, our estimates" in text and "## Where we disagree" in text
    # The keys the issue asks results.json to carry.
    search = saved["search"]
    for key in ("accuracy_gain", "compute_ratio"):
        assert isinstance(search[key], (int, float)) and math.isfinite(search[key])
    assert isinstance(search["monotone"], bool)
    assert set(search["oracle"]["curves"]) == set(search["learned"]["curves"])
    assert isinstance(saved["rl"]["accuracy_gain"], float) and "sample_efficiency_ratio" in saved["rl"]
    for key in ("pav_step_auc", "orm_outcome_auc", "pav_within_problem_auc", "orm_within_problem_auc"):
        assert key in saved["verifier"]
    assert 0.0 <= saved["labels"]["pit_precision"] <= 1.0
    # Every claim carries an interval and a verdict that follows from it.
    for claim in saved["summary"]["claims"]:
        assert claim["verdict"] in ("reproduced", "opposite", "not resolved", "no difference")
        if claim["unit"] == "accuracy" and claim["low"] is not None:
            assert claim["low"] <= claim["estimate"] <= claim["high"]
            assert (claim["verdict"] == "reproduced") == (claim["low"] > 0)
        elif claim["unit"] == "accuracy":  # one seed: no interval, no verdict
            assert claim["verdict"] == "not resolved"
    assert saved["summary"]["runtime_seconds"] == results["runtime_seconds"] > 0
    # Every stage produced numbers, with the configured seeds.
    assert 0.0 <= saved["arithmetic"]["base_policy_sampled_accuracy"] <= 1.0
    assert saved["arithmetic"]["labeling"]["rollouts"] > 0
    assert all(len(r) == len(cfg.search_budgets) for r in search["curves"].values())
    assert len(search["prover_sweep"]) == len(cfg.k_sweep)
    assert saved["rl"]["seeds"] == len(cfg.rl_seeds) and all(len(c) >= 2 for c in saved["rl"]["curves"].values())
    assert saved["planted"]["task"] == {"vocab_size": 6, "length": 14, "planted": "bcb"}
    assert "planted `b c b` (symbols 1 2 1)" in text and "3 6 0 3 5" not in text
    to_90 = saved["planted"]["iterations_to_90"]
    assert len(to_90["pav"]) == len(to_90["outcome"]) == len(cfg.planted_seeds)
    assert len(to_90["pav_ppo"]) == len(to_90["outcome_ppo"]) == len(cfg.planted_ppo_seeds)
    assert len(saved["planted"]["gamma_sweep"]) == len(cfg.gamma_sweep)
    lookahead = saved["planted"]["prover_selection"]["lookahead"]  # on the trained base policy of the task above
    assert sorted(r["gamma"] for r in lookahead["ranking"]) == sorted(cfg.gamma_sweep)
    assert "The lookahead (lookahead_provers" in text
    # Outcome, exact, one learned PAV per prover share and verifier seed, MC.
    mc_advantages = saved["planted"]["mc_advantages"]
    arms = mc_advantages["arms"]
    recipes = [learned_arm_name(share) for share in cfg.planted_pav_prover_shares]
    copies = [learned_arm_name(share, v) for share in cfg.planted_pav_prover_shares for v in cfg.planted_pav_seeds[1:]]
    refresh_k = min(cfg.prover_k, PLANTED_REFRESH_N_MC)
    refresh = [refresh_arm_name(m, refresh_k) for m in cfg.planted_prover_refresh]
    mc = [f"mc{n}" for n in cfg.planted_mc_rollouts]
    assert set(arms) == {"outcome", "exact", *recipes, *copies, *mc, *refresh}
    # The refresh arms value every step boundary with 8 rollouts: more rollout tokens than 2 per state.
    assert min(arms[name]["rollout_tokens_per_step"] for name in refresh) > arms["mc2"]["rollout_tokens_per_step"]
    assert set(mc_advantages["prover_refresh"]) == set(refresh)
    for name in recipes + copies:
        assert arms[name]["labeling_tokens"] > 0 and arms[name]["verifier_tokens_per_step"] > 0
        assert mc_advantages["learned_pav"][name]["fit"]["traces"] > 0
    assert set(mc_advantages["learned_pooled"]) == set(recipes)
    for recipe in recipes:
        pooled = mc_advantages["learned_pooled"][recipe]
        assert len(pooled["arms"]) == len(cfg.planted_pav_seeds)
        assert pooled["runs"] == len(cfg.planted_pav_seeds) * len(cfg.planted_seeds)
    planted_search = saved["planted"]["exact_search"]
    assert all(len(c) == len(cfg.search_budgets) for c in planted_search["curves"].values())
    assert "policy_likelihood" in saved["arithmetic"]["verifier_quality"]
    probes = saved["arithmetic"]["verifier_quality"]["backbone_probes"]
    assert {"final_token_hidden_layer_1", "token_logprob"} <= set(probes) and probes["train_traces"] > 0
    # The verifier-head experiment runs on the demo's outputs.
    from trl_pav.experiments.verifier_heads import run_verifier_heads

    heads = run_verifier_heads(
        tmp_path, tmp_path / "heads", settings=(("pav", True, 1e-4),), problems=4, candidates=2, verifier_steps=4
    )
    assert heads[0]["likelihood_head"] and 0.0 <= heads[0]["best_of_n_accuracy"] <= 1.0
    # A re-run with the same configuration reads every stage back from its cache.
    again = run_demo(tmp_path, cfg)
    assert again["search"]["learned"]["curves"] == results["search"]["learned"]["curves"]
    assert again["rl"]["curves"] == results["rl"]["curves"]
    assert again["runtime_seconds"] < results["runtime_seconds"]
    # Cached stages still report what a run from scratch costs: the first run's builds, read back from the caches.
    assert results["fresh_runtime_seconds"] >= results["runtime_seconds"]
    assert again["fresh_runtime_seconds"] >= 0.8 * results["fresh_runtime_seconds"]
    hits = {b["name"] for b in again["builds"] if b["cached"]}
    assert {"arithmetic/policy", "arithmetic/search/learned.json", "planted/policy"} <= hits
    assert "from scratch" in (report / "report.md").read_text()


def test_logistic_probe_recovers_a_known_linear_rule():
    """Labels drawn from a logistic model with known weights: the probe's scores rank held-out points like the true
    logits do, up to sampling noise."""
    import numpy as np

    from trl_pav.demo.arithmetic import _logistic_probe
    from trl_pav.metrics import auc

    rng = np.random.default_rng(0)
    w = np.array([2.0, -1.0, 0.0, 0.5])
    x_train, x_test = rng.normal(size=(4000, 4)) * [1, 3, 1, 10], rng.normal(size=(2000, 4)) * [1, 3, 1, 10]
    y_train = rng.random(4000) < 1 / (1 + np.exp(-(x_train @ w)))
    y_test = rng.random(2000) < 1 / (1 + np.exp(-(x_test @ w)))
    scores = _logistic_probe(x_train, y_train.astype(float), x_test)
    assert np.corrcoef(scores, x_test @ w)[0, 1] > 0.99
    assert abs(auc(scores, y_test) - auc(x_test @ w, y_test)) < 0.01


def test_report_notes_follow_the_curves():
    """The flat-search note appears only when learned search stays flat while exact values and Pass@N rise; the
    PAV-vs-Q note only when the two learned curves coincide."""
    from trl_pav.report import _flat_search_note, _learned_q_note

    def rows(values):
        return [{"accuracy": v} for v in values]

    quality = {"pav": {"within_problem_auc": 0.8}, "orm": {"within_problem_auc": 0.7}}
    flat = {
        "learned": {
            "curves": {
                "pav_beam": rows([0.47, 0.46]),
                "q_beam": rows([0.47, 0.46]),
                "orm_bon": rows([0.40, 0.42]),
                "pass_at_n": rows([0.48, 0.77]),
            }
        },
        "oracle": {"curves": {"pav_beam": rows([0.55, 0.74])}},
        "prover_sweep": [{"k": 1, "accuracy": 0.45}, {"k": 4, "accuracy": 0.45}],
    }
    assert "0.470 → 0.460" in _flat_search_note(flat, quality)
    assert "every prover K" in _learned_q_note(flat)
    rising = {**flat, "learned": {"curves": {**flat["learned"]["curves"], "pav_beam": rows([0.47, 0.60])}}}
    assert _flat_search_note(rising, quality) == "" and _learned_q_note(rising) == ""


def test_build_ledger_counts_cache_hits_at_their_recorded_cost(tmp_path):
    """A re-run that reads every cache reports the first run's cost; a hit inside a fresh build counts towards that
    build's cost and towards the run's."""
    import time

    from trl_pav.demo import common

    def slow(seconds):
        time.sleep(seconds)
        return seconds

    ledger = common.new_ledger()
    common.cached_json(tmp_path / "a.json", "k", lambda: slow(0.2))
    assert ledger.saved_seconds() == 0.0 and ledger.builds[-1]["seconds"] >= 0.2

    ledger = common.new_ledger()
    assert common.cached_json(tmp_path / "a.json", "k", lambda: slow(5.0)) == 0.2  # a hit: not rebuilt
    assert ledger.saved_seconds() >= 0.2 and ledger.builds[-1]["cached"]

    def outer():
        common.cached_json(tmp_path / "a.json", "k", lambda: slow(5.0))  # hit inside a fresh build
        return slow(0.1)

    ledger = common.new_ledger()
    common.cached_json(tmp_path / "b.json", "k", outer)
    assert ledger.builds[-1]["name"].endswith("b.json") and ledger.builds[-1]["seconds"] >= 0.3
    ledger = common.new_ledger()
    common.cached_json(tmp_path / "b.json", "k", outer)
    assert ledger.saved_seconds() >= 0.3
    ledger = common.new_ledger()
    ledger.resumed("labels", total_seconds=10.0, wall_seconds=2.0)  # shards of earlier runs took 8 s
    assert ledger.saved_seconds() == 8.0 and ledger.builds[-1] == {"name": "labels", "seconds": 10.0, "cached": True}
    folder = common.cached(tmp_path / "model", "k", lambda d: slow(0.1))
    assert float((folder / ".seconds").read_text()) >= 0.1


def test_rewrite_checker_is_fit_on_the_policys_traces():
    """The demo's exact checker for the rewriting task: per-kind error rates measured on a policy's sampled traces
    (here a procedural policy with known rates) and that policy's exact values rebuilt from the JSON spec."""
    import pytest

    from trl_pav.demo.arithmetic import checker_scorer, demo_task, fit_checker
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, RewritePolicy

    task = demo_task(DemoConfig())
    assert task.name == "rewrite"
    truth = RewritePolicy(task, {"hard_product": 0.5, "product": 0.1, "split": 0.2, "sum": 0.05}, restate_rate=0.1)
    problems = task.sample_problems(300, seed=5)
    spec = fit_checker(task, truth, problems, step_accuracy=0.0, seed=0)
    assert json.loads(json.dumps(spec)) == spec  # a cache key
    for kind, rate in truth.error_rates.items():
        assert spec["error_rates"][kind] == pytest.approx(rate, abs=0.06), kind
    checker = checker_scorer(task, spec)
    p = problems[0]
    exact = RewritePolicy(task, spec["error_rates"], restate_rate=spec["restate_rate"]).exact_value(p.prompt, [])
    assert checker.score([p.prompt], [[]])[0] == [exact]
    arith = fit_checker(ArithmeticTask(), None, [], step_accuracy=0.8, seed=0)
    assert isinstance(checker_scorer(ArithmeticTask(), arith), NoisyArithmeticPolicy)
    with pytest.raises(ValueError, match="realistic_task"):
        demo_task(DemoConfig(realistic_task="countdown"))
