"""Regime pre-flight: its statistics against hand-computed values and the cases where the answer is known."""

import numpy as np
import pytest

from trl_pav.regime import (
    RegimeConfig,
    advantage_variance,
    all_equal_group_share,
    pass_gap,
    regime_preflight,
    regime_verdict,
)
from trl_pav.search.beam_search import _Node, _select, child_rewards
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, RewritePolicy, RewriteTask

RATES = {"hard_product": 0.7, "product": 0.2, "split": 0.1, "sum": 0.15}


def test_statistics_by_hand():
    assert pass_gap(np.array([[1, 1], [0, 1], [0, 0]])) == pytest.approx(2 / 3 - 0.5)
    assert all_equal_group_share([1, 1, 0, 1, 0, 0], group_size=2) == pytest.approx(2 / 3)
    # K = 2: f(q) = 1 - (1-q)^2; steps 0.5 -> 0.5 (A = 0) and 0.5 -> 1.0 (A = 1 - 0.75 = 0.25)
    assert advantage_variance([[0.5, 0.5, 1.0]], prover_k=2) == pytest.approx(np.var([0.0, 0.25]))
    with pytest.raises(ValueError, match="groups of 3"):
        all_equal_group_share([1, 0], group_size=3)
    with pytest.raises(ValueError, match="no trace has a step"):
        advantage_variance([[0.3]], prover_k=4)
    with pytest.raises(ValueError, match="pass_gap"):
        pass_gap(np.array([1, 0]))


def test_advantage_changes_the_kept_child_in_the_papers_figure_2():
    """Parents at 0.80 and 0.50, children at 0.75 and 0.70, one slot: Q keeps the first, Q + α·A the second."""
    parents, values = [0.80, 0.50], [0.75, 0.70]
    nodes = [_Node(("a",), v) for v in values]
    rewards = child_rewards(parents, values, alpha=0.5, k=1)
    by_reward, _, _ = _select([(r, i, n) for i, (r, n) in enumerate(zip(rewards, nodes))], 1, False, None)
    by_q, _, _ = _select([(n.value, i, n) for i, n in enumerate(nodes)], 1, False, None)
    assert by_reward == [nodes[1]] and by_q == [nodes[0]]


def test_one_beam_cannot_disagree_and_identical_searches_give_zero():
    """With N = C every child shares the one parent, so Q + α·A is monotone in Q: the same search."""
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    probs = task.sample_problems(12, seed=4)
    cfg = RegimeConfig(budgets=[3], samples=8, group_size=4, bootstrap_samples=50)
    pre = regime_preflight(pol, pol, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
    assert pre["beam_rounds"] > 0
    assert pre["rank_disagreement"] == 0.0
    assert pre["exact_pav_vs_q_identical"] and pre["exact_pav_vs_q_gain"] == 0.0
    assert pre["exact_pav_vs_q_interval"] == [0.0, 0.0]
    assert pre["pass_at_n"] >= pre["sampled_accuracy"]


def test_preflight_on_an_exact_policy_matches_its_values():
    """The noisy arithmetic policy's success is (1 - e)^ops: sampled accuracy agrees with the mean exact root value,
    and its all-equal group share agrees with the binomial formula, within sampling error."""
    task = ArithmeticTask(min_ops=2, max_ops=2)
    pol = NoisyArithmeticPolicy(task, error_rate=0.3)
    probs = task.sample_problems(150, seed=8)
    cfg = RegimeConfig(budgets=[3], samples=8, group_size=4, bootstrap_samples=20)
    pre = regime_preflight(pol, pol, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
    q = 0.7**2
    assert abs(pre["sampled_accuracy"] - q) < 4 * np.sqrt(q * (1 - q) / (150 * 8))
    equal = q**4 + (1 - q) ** 4
    assert abs(pre["rl_all_equal_groups"] - equal) < 4 * np.sqrt(equal * (1 - equal) / 150)
    assert pre["advantage_variance"] > 0


def test_verdict_is_written_from_its_numbers():
    base = {
        "pass_gap": 0.3,
        "rank_disagreement": 0.2,
        "rl_all_equal_groups": 0.4,
        "advantage_variance": 0.02,
        "exact_pav_vs_q_gain": 0.05,
        "exact_pav_vs_q_interval": [0.01, 0.09],
    }
    v = regime_verdict(base)
    assert v["search"] and v["rl"]
    assert "0.300" in v["search_reasons"][0] and "20.0%" in v["search_reasons"][1]
    assert "above 0" in v["search_reasons"][2]
    v = regime_verdict({**base, "rank_disagreement": 0.0, "exact_pav_vs_q_interval": [-0.02, 0.01]})
    assert not v["search"] and "0.0%" in v["search_reasons"][1] and "includes 0" in v["search_reasons"][2]
    assert not regime_verdict({**base, "pass_gap": 0.01})["search"]
    assert not regime_verdict({**base, "rl_all_equal_groups": 0.9})["rl"]
    assert not regime_verdict({**base, "rl_all_equal_groups": 0.0})["rl"]
    assert not regime_verdict({**base, "advantage_variance": 0.0})["rl"]


def test_report_section_follows_the_numbers():
    from trl_pav.report import _pipeline_text, _regime_md

    pre = {
        "budgets": [6, 12],
        "sampled_accuracy": 0.3,
        "pass_at_n": 0.9,
        "pass_gap": 0.6,
        "rank_disagreement": 0.0,
        "beam_rounds": 120,
        "exact_curves": {"12": {"pav_beam": 1.0, "q_beam": 1.0}, "6": {"pav_beam": 0.9, "q_beam": 0.8}},
        "exact_pav_vs_q_gain": 0.0,
        "exact_pav_vs_q_interval": [0.0, 0.0],
        "rl_all_equal_groups": 0.3,
        "advantage_variance": 0.05,
    }
    text = _regime_md({"regime": {**pre, "verdict": regime_verdict(pre)}})
    flat = " ".join(text.split())
    assert "search gains **not met**" in text and "0.0% of 120 beam rounds" in flat
    assert "RL gains **met**" in text
    assert text.index("| 6 | 0.900 | 0.800 |") < text.index("| 12 |")  # budgets in numeric order
    moved = {**pre, "rank_disagreement": 0.25}
    assert "search gains **met**" in _regime_md({"regime": {**moved, "verdict": regime_verdict(moved)}})
    assert _regime_md({}) == ""
    assert "Warning" not in text  # no stall incentive measured, no warning
    stalled = {**pre, "mean_step_advantage": -0.03, "mean_step_advantage_interval": [-0.04, -0.02]}
    warned = " ".join(_regime_md({"regime": {**stalled, "verdict": regime_verdict(stalled)}}).split())
    assert "- Warning (not a condition): the policy's own steps average a prover advantage of -0.0300" in warned
    assert "single-pipeline" in _pipeline_text({"pipeline_seeds": [0], "config": {"seed": 0}})
    assert "over 3 pipeline seeds" in _pipeline_text({"pipeline_seeds": [0, 1, 2], "config": {"seed": 0}})


def test_preflight_runner_separates_the_tasks(capsys):
    """The arithmetic task's forced derivation never lets the two rules disagree; the rewriting task's free order
    does (on a few problems)."""
    from trl_pav.experiments.regime_preflight import main

    records = main(["--problems", "6"])
    assert [r["setting"].split(",")[0] for r in records] == ["arithmetic", "rewrite", "rewrite"]
    assert records[0]["rank_disagreement"] == 0.0
    assert all(r["rank_disagreement"] > 0 for r in records[1:])
    assert capsys.readouterr().out.count("\n") == 3


def test_preflight_runner_reads_a_demo_runs_checker(tmp_path, capsys):
    """`--demo_dir`: the run's task (from its pools.json), its pre-flight pool and its checker as the policy. An
    error-free checker is a perfect policy: every sample right, every group all-equal, nothing for search to gain."""
    import json

    from trl_pav.demo import DemoConfig
    from trl_pav.demo.arithmetic import demo_pools
    from trl_pav.experiments.arithmetic_verifiers import task_kwargs
    from trl_pav.experiments.regime_preflight import main

    task = RewriteTask(min_terms=2, max_terms=2, max_factor=9)
    pools = demo_pools(DemoConfig.quick(), task)
    folder = tmp_path / "arithmetic"
    folder.mkdir()
    saved = {**pools.spec(), "task": "rewrite", "task_kwargs": task_kwargs(task)}
    (folder / "pools.json").write_text(json.dumps(saved))
    spec = {"task": "rewrite", "error_rates": dict.fromkeys(("hard_product", "product", "split", "sum"), 0.0)}
    (folder / "checker.json").write_text(json.dumps({"key": "k", "value": {**spec, "restate_rate": 0.0}}))
    (record,) = main(["--demo_dir", str(tmp_path), "--only_demo"])
    assert record["setting"].startswith("demo task")
    assert record["sampled_accuracy"] == 1.0 and record["pass_gap"] == 0.0 and record["rl_all_equal_groups"] == 1.0
    assert record["exact_pav_vs_q_gain"] == 0.0
    assert capsys.readouterr().out.count("\n") == 1
    with pytest.raises(FileNotFoundError, match=r"checker\.json"):
        main(["--demo_dir", str(tmp_path / "missing"), "--only_demo"])


def _tree_value(node) -> float:
    """Success probability of a tree policy: a node is an outcome (0/1) or a list of (probability, child)."""
    return float(node) if not isinstance(node, list) else sum(p * _tree_value(c) for p, c in node)


def _paths(node, prob=1.0, values=None):
    """Every complete trace of a tree policy with its probability and its values (root, then after each step)."""
    values = [_tree_value(node)] if values is None else values
    if not isinstance(node, list):
        yield prob, values
        return
    for p, child in node:
        yield from _paths(child, prob * p, [*values, _tree_value(child)])


@pytest.mark.parametrize("k", [1, 2, 4, 16])
def test_expected_prover_advantage_equals_the_enumerated_sum_over_traces(k):
    """An exactly enumerable policy with a no-progress branch (same value, one step later), a safe route of two
    easy steps and a gamble on one hard step: E over traces of Σ_h A^μ_h equals V - f(V), below 0 for K > 1."""
    import torch

    from trl_pav.values import expected_prover_advantage, prover_advantages

    easy = [(0.9, [(0.9, 1), (0.1, 0)]), (0.1, 0)]  # two steps of 0.9
    hard = [(0.3, 1), (0.7, 0)]  # one step of 0.3
    stall = [(0.5, easy), (0.5, hard)]  # restated state: the same choice again, one step later
    root = [(0.2, stall), (0.4, easy), (0.4, hard)]
    expected = sum(p * float(prover_advantages(torch.tensor(v, dtype=torch.float64), k).sum()) for p, v in _paths(root))
    v0 = _tree_value(root)
    assert sum(p for p, _ in _paths(root)) == pytest.approx(1.0)
    got = float(expected_prover_advantage(torch.tensor(v0, dtype=torch.float64), k))
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(v0 - (1 - (1 - v0) ** k))
    assert (got < 0) == (k > 1)


def test_the_stall_incentive_is_measured_and_worded_from_its_numbers():
    """Every step of a Bo4 prover's exact values: the mean over a hand-made pair of traces, then the pre-flight on
    the rewrite policy scored by its own exact values: mean step advantage below 0, and the mean per-trace sum
    within sampling error of V - f(V) averaged over problems (the identity `expected_prover_advantage` states)."""
    from trl_pav.regime import mean_step_advantage, problem_advantage_sums

    # K = 2: 0.5 -> 1 is +0.25; 0.5 -> 0.5 is 0 and 0.5 -> 0 is -0.75: mean over 3 steps
    assert mean_step_advantage([[0.5, 1.0], [0.5, 0.5, 0.0]], prover_k=2) == pytest.approx((0.25 - 0.75) / 3)
    with pytest.raises(ValueError, match="no trace has a step"):
        mean_step_advantage([[0.3]], prover_k=4)
    # two problems of two traces: (+0.25, -0.75) and (0 from 0.5 -> 0.5, one trace without a step)
    sums, steps, traces = problem_advantage_sums([[0.5, 1.0], [0.5, 0.0], [0.5, 0.5], [0.5]], 2, prover_k=2)
    assert sums.tolist() == pytest.approx([-0.5, 0.0]) and steps.tolist() == [2, 1] and traces.tolist() == [2, 1]
    with pytest.raises(ValueError, match="groups of 2"):
        problem_advantage_sums([[0.5, 1.0]] * 3, 2, prover_k=2)

    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    probs = task.sample_problems(40, seed=5)
    cfg = RegimeConfig(budgets=[3], samples=16, group_size=4, bootstrap_samples=200)
    pre = regime_preflight(pol, pol, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
    lo, hi = pre["mean_step_advantage_interval"]
    assert lo <= pre["mean_step_advantage"] <= hi < 0
    roots = [pol.exact_value(p.prompt, []) for p in probs]
    assert pre["expected_trace_advantage"] == pytest.approx(np.mean([v - (1 - (1 - v) ** 4) for v in roots]))
    # Each trace's sum is f(outcome) - f(V) in [-1, 1]: its standard error over 640 traces is below 1/sqrt(640).
    assert abs(pre["trace_advantage_sum"] - pre["expected_trace_advantage"]) < 4 / np.sqrt(40 * 16)
    verdict = regime_verdict(pre)
    stall, sums_line = verdict["rl_warnings"]
    assert f"{pre['mean_step_advantage']:+.4f}" in stall and "below the 0" in stall and "pays" in stall
    assert f"{pre['trace_advantage_sum']:+.3f}" in sums_line and f"{pre['expected_trace_advantage']:+.3f}" in sums_line
    assert not any("prover advantage of" in r for r in verdict["rl_reasons"])  # a warning, not a condition
    # an interval across 0 (as printed) is not resolved, one above it says so, and neither claims the stall is paid
    for interval, word in (([-0.01, 0.01], "not resolved from"), ([0.01, 0.02], "above"), ([-0.3, -1e-5], "not")):
        r = regime_verdict({**pre, "mean_step_advantage_interval": interval})["rl_warnings"][0]
        assert word in r and "pays" not in r
    # warnings decide nothing
    assert verdict["rl"] == regime_verdict({**pre, "mean_step_advantage_interval": [0.01, 0.02]})["rl"]


def test_with_the_policy_as_its_own_prover_there_is_no_stall_incentive():
    """K = 1 (μ = π) with the policy's own exact values: V - f(V) = 0, and the sampled per-trace sums average 0
    within sampling error."""
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    probs = task.sample_problems(40, seed=6)
    cfg = RegimeConfig(budgets=[3], samples=16, group_size=4, bootstrap_samples=200, prover_k=1)
    pre = regime_preflight(pol, pol, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
    assert pre["expected_trace_advantage"] == 0.0
    assert abs(pre["trace_advantage_sum"]) < 4 / np.sqrt(40 * 16)
