"""Measurements of the demo's realistic stages: no-progress steps of the rewrite task (exact, by hand), the App. G
ablation's summary and report text (inputs that make each sentence true and false), sample efficiency paired by
seed, the verifiers' within-problem AUC on their least step value and their token budget, and the base policy's
token entropy."""

import json
import math

import pytest
from test_report import make_results

from trl_pav.demo.rl import no_progress_summary, paired_sample_efficiency
from trl_pav.report import paired_efficiency_text, q_value_ablation_md, write_report
from trl_pav.tasks import RewriteTask


def test_no_progress_steps_by_hand():
    task = RewriteTask()
    # 2*3+4: restate, reduce, restate, answer.
    assert task.no_progress_steps("2*3+4", ["2*3+4", "6+4", "6+4", "#### 10"]) == [True, False, True, False]
    # A wrong step, then a restatement of the wrong expression: still no progress (padding after a mistake).
    assert task.no_progress_steps("2*3+4", ["7+4", "7+4", "#### 11"]) == [False, True, False]
    # An unreadable step is not a restatement, and the next step is compared with the last readable expression.
    assert task.no_progress_steps("2*3+4", ["???", "2*3+4", "6+4"]) == [False, True, False]
    # A miscopied restatement changes the expression: it is a (wrong) step, not a no-progress one.
    assert task.no_progress_steps("2*3+4", ["2*3+5"]) == [False]
    assert task.no_progress_steps("2*3+4", []) == []
    with pytest.raises(ValueError, match="not a rewrite-task expression"):
        task.no_progress_steps("2*/3", ["6"])


def run(shares, steps_per_trace=5.0, every=10):
    return [
        {"step": i * every, "no_progress_share": s, "steps_per_trace": steps_per_trace} for i, s in enumerate(shares)
    ]


def test_no_progress_summary_by_hand():
    shapes = {
        "outcome": [run([0.1, 0.1, 0.1]), run([0.2, 0.2, 0.2])],
        "a": [run([0.1, 0.1, 0.1]), run([0.2, 0.2, 0.3])],
        "q": [run([0.1, 0.3, 0.5], 7.0), run([0.2, 0.4, 0.5], 9.0)],
    }
    out = no_progress_summary(shapes, reference="a")
    assert out["curves"]["q"][1] == {"step": 10, "share": pytest.approx(0.35), "min": 0.3, "max": 0.4}
    assert out["change"]["q"]["per_seed"] == pytest.approx([0.4, 0.3])
    assert out["change"]["q"]["estimate"] == pytest.approx(0.35)
    # t-interval over 2 seeds: 0.35 ± 12.706 · std([0.4, 0.3]) / sqrt(2) = 0.35 ± 0.6353.
    half = 12.706 * math.sqrt(((0.05**2) * 2) / 1) / math.sqrt(2)
    assert out["change"]["q"]["low"] == pytest.approx(0.35 - half, abs=1e-3)
    assert out["change"]["outcome"]["per_seed"] == pytest.approx([0.0, 0.0])
    assert out["final_steps_per_trace"]["q"] == 8.0
    assert out["steps_change"]["q"]["per_seed"] == [0.0, 0.0]  # 7 -> 7 and 9 -> 9 steps
    assert out["minus_reference"]["q"]["per_seed"] == pytest.approx([0.4, 0.2])
    assert set(out["minus_reference"]) == {"q"}  # neither the reference nor outcome-only is compared
    with pytest.raises(ValueError, match="reference arm 'b' not in"):
        no_progress_summary(shapes, reference="b")
    shapes["a"][0][1]["no_progress_share"] = None
    with pytest.raises(ValueError, match="arm 'a' has evaluations without"):
        no_progress_summary(shapes, reference="a")


def ablation_block(method_shares, reference_shares, to_go_shares=None):
    shapes = {
        "outcome": [run([0.1, 0.1]), run([0.1, 0.1]), run([0.1, 0.1])],
        "exact": [run([0.1, s]) for s in reference_shares],
        "qv": [run([0.1, s]) for s in method_shares],
    }
    arms = {"qv": "q_value"}
    if to_go_shares is not None:
        shapes["qg"] = [run([0.1, s]) for s in to_go_shares]
        arms["qg"] = "q_value_to_go"
    return {
        "arms": arms,
        "advantage_arm": "exact",
        "no_progress": no_progress_summary(shapes, reference="exact"),
        "final_accuracy": {"outcome": 0.3, "exact": 0.32, "qv": 0.2, "qg": 0.1},
    }


def test_ablation_text_follows_its_numbers():
    cfg = {"rl_alpha": 3.0}
    block = ablation_block([0.5, 0.6, 0.55], [0.1, 0.12, 0.11], to_go_shares=[0.1, 0.13, 0.1])
    both = q_value_ablation_md({"q_value_ablation": block}, cfg)
    assert (
        "The one-step Q^μ reward minus the A^μ reward at the last evaluation: +0.440 [+0.341, +0.539]: more "
        "no-progress steps than the A^μ reward at the end (interval above 0)." in both
    )
    assert "The Q^μ reward summed to go minus the A^μ reward at the last evaluation: +0.000" in both
    assert "no resolved difference from the A^μ reward at the end (the interval contains 0)" in both
    assert "| the one-step Q^μ reward (`qv`) | 0.100 | 0.550 | +0.450" in both and "(rises)" in both
    assert "| outcome-only (`outcome`) | 0.100 | 0.100 | +0.000 [+0.000, +0.000] (no resolved change)" in both
    assert "| the Q^μ reward summed to go (`qg`) |" in both and "3 seeds, 10 GRPO steps" in both
    assert "| 5.00; change +0.00 [+0.00, +0.00] (no resolved change) | 0.100 |" in both  # qg: 5 steps throughout
    fewer = q_value_ablation_md({"q_value_ablation": ablation_block([0.01, 0.02, 0.015], [0.3, 0.32, 0.31])}, cfg)
    assert "fewer no-progress steps than the A^μ reward at the end (interval below 0)" in fewer and "(falls)" in fewer
    assert "summed from each step" not in fewer and "one-step (each step's own" in fewer  # only the arms that ran
    assert "summed from each step" in both
    # A^μ minus outcome-only, paired by seed: +0.01 [-0.015, +0.035] in `both`, +0.21 in `fewer`
    assert "The A^μ reward minus outcome-only RL at the last evaluation: +0.010 [-0.015, +0.035]: no resolved" in both
    assert "outcome-only RL at the last evaluation: +0.210 [+0.185, +0.235]: more no-progress steps" in fewer
    assert q_value_ablation_md({}, cfg) == ""
    # The pre-flight's stall incentive: worded by its interval; the consequence only when it is below 0 and the RL
    # arms use a process term with the pre-flight's prover.
    cfg = {"rl_alpha": 3.0, "prover_k": 4}

    def stall(interval, **kw):
        regime = {"mean_step_advantage": sum(interval) / 2, "mean_step_advantage_interval": interval, "prover_k": 4}
        return q_value_ablation_md({"q_value_ablation": block}, {**cfg, **kw}, regime)

    below = stall([-0.07, -0.03])
    assert "mean A^μ of -0.0500 [-0.0700, -0.0300] with exact values (Bo4), below the 0 of a no-progress step" in below
    assert "also pays a no-progress step" in below
    assert "not resolved from the 0 of a no-progress step." in stall([-0.03, 0.01])
    assert "above the 0 of a no-progress step." in stall([0.01, 0.03])
    for text in (
        stall([-0.03, 0.01]),
        stall([0.01, 0.03]),
        stall([-0.07, -0.03], rl_alpha=0.0),
        stall([-0.07, -0.03], prover_k=1),
    ):
        assert "also pays" not in text
    assert "pre-flight" not in both  # no regime, no sentence


def test_paired_sample_efficiency_cases():
    base = [[(0, 0.1), (50, 0.2), (100, 0.3)], [(0, 0.1), (50, 0.3), (100, 0.3)], [(0, 0.2), (50, 0.3), (100, 0.2)]]
    arm = [[(0, 0.1), (50, 0.3), (100, 0.4)], [(0, 0.1), (50, 0.2), (100, 0.25)], [(0, 0.2), (50, 0.5), (100, 0.5)]]
    out = paired_sample_efficiency(arm, base)
    # Seed 0: outcome reaches its 0.3 at 100, the arm at 50. Seed 1: the arm never reaches 0.3. Seed 2: outcome ends
    # below its start, so there is no target.
    assert out["per_seed"] == [2.0, None, None]
    assert out["status"] == ["ok", "unreached", "baseline_flat"]
    assert out["steps"] == [[100, 50], [50, None], None]
    assert out["geometric_mean"] is None and out["interval"] is None
    text = paired_efficiency_text({"paired_sample_efficiency": {"pav": out}})
    assert "per seed 2.00, never reached, outcome-only RL ended at or below its start" in text
    assert "undefined for 2 of 3 seeds" in text
    both = paired_sample_efficiency(arm[:1] * 2, base[:1] * 2)
    assert both["geometric_mean"] == pytest.approx(2.0) and both["interval"] == pytest.approx([2.0, 2.0])
    text = paired_efficiency_text({"paired_sample_efficiency": {"pav": both}})
    assert "geometric mean 2.00 [2.00, 2.00]" in text
    flat = paired_sample_efficiency([base[2]], [base[2]])
    assert "undefined on every seed, since outcome-only RL ended at or below" in paired_efficiency_text(
        {"paired_sample_efficiency": {"pav": flat, "exact": flat}}
    )
    with pytest.raises(ValueError, match="2 runs but 3 baseline runs"):
        paired_sample_efficiency(arm[:2], base)


def test_write_report_with_the_ablation(tmp_path):
    results = make_results()
    results["rl"]["q_value_ablation"] = ablation_block([0.5, 0.6, 0.55], [0.1, 0.12, 0.11], [0.5, 0.6, 0.55])
    write_report(results, tmp_path)
    assert (tmp_path / "rl_no_progress.png").stat().st_size > 0
    text = (tmp_path / "report.md").read_text()
    assert "![no-progress steps](rl_no_progress.png)" in text and "App. G" in text
    claims = json.loads((tmp_path / "results.json").read_text())["summary"]["claims"]
    claim = next(c for c in claims if c["claim"].startswith("RL ablation (App. G): the Q^μ reward summed to go"))
    # The one-step form is a control (a baseline away from A^μ), not the paper's claim.
    assert not any(c["claim"].startswith("RL ablation (App. G): the one-step") for c in claims)
    assert claim["verdict"] == "reproduced" and claim["estimate"] == pytest.approx(0.44)
    lo, hi = (round(x * 100, 1) for x in (claim["low"], claim["high"]))
    assert f"| {claim['claim']} | +44.0 [{lo:+.1f}, {hi:+.1f}] points of the steps | reproduced |" in text
    # "A^μ does not drift": A^μ minus outcome-only is +0.01 [-0.015, +0.035] here, so not resolved; a block where
    # A^μ drifts above outcome-only (+0.21, interval above 0) is the opposite, and one below it reproduces it.
    drift = next(c for c in claims if c["claim"].startswith("RL ablation (App. G): the A^μ reward ends with no more"))
    assert drift["verdict"] == "not resolved" and drift["estimate"] == pytest.approx(0.01)
    for reference, verdict in (([0.3, 0.32, 0.31], "opposite"), ([0.05, 0.06, 0.055], "reproduced")):
        results = make_results()
        results["rl"]["q_value_ablation"] = ablation_block([0.5, 0.6, 0.55], reference, [0.5, 0.6, 0.55])
        write_report(results, tmp_path / verdict)
        claims = json.loads((tmp_path / verdict / "results.json").read_text())["summary"]["claims"]
        assert next(c for c in claims if "ends with no more no-progress" in c["claim"])["verdict"] == verdict
    # Without the ablation there is neither the plot nor the claim.
    write_report(make_results(), tmp_path / "plain")
    assert not (tmp_path / "plain" / "rl_no_progress.png").exists()
    assert "App. G" not in (tmp_path / "plain" / "report.md").read_text()


class TableScorer:
    """A step scorer that returns given values per (prompt, steps)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, steps):
        return [self.table[(p, tuple(s))] for p, s in zip(prompts, steps)]


def test_verifier_measures_least_step_value_reads_the_steps():
    """A verifier whose final values rank a problem's wrong candidate first, but whose step values dip inside it:
    within-problem AUC 0 on final values, 1 on the least step value."""
    import numpy as np

    from trl_pav.experiments.arithmetic_verifiers import verifier_measures

    task = RewriteTask()
    problem = task.sample_problems(1, seed=3)[0]
    right = task.reference_steps(problem.expression, seed=0)
    wrong = [*right[:-1], "#### 1"] if right[-1] != "#### 1" else [*right[:-1], "#### 2"]
    table = {
        (problem.prompt, tuple(right)): [0.5] + [0.6] * (len(right) - 1) + [0.7],
        (problem.prompt, tuple(wrong)): [0.5] + [0.6] * (len(wrong) - 1) + [0.9],
    }
    table[(problem.prompt, tuple(wrong))][1] = 0.1  # a dip at the first step
    sets = {
        "problems": [problem],
        "rows": [(0, right), (0, wrong)],
        "correct": np.array([1, 0]),
        "pid": np.array([0, 0]),
        "traces": [(problem, right), (problem, wrong)],
        "siblings": {"prompts": [problem.prompt] * 2, "steps": [right, wrong], "correct": [1, 0], "parent": [0, 0]},
    }
    out = verifier_measures(TableScorer(table), task, sets)
    assert out["within_problem_auc"] == 0.0 and out["within_problem_auc_least_step"] == 1.0
    assert out["best_of_n_accuracy"] == 0.0 and out["random_pick_accuracy"] == 0.5


def test_token_entropy_of_a_uniform_policy_is_log_vocabulary():
    """A model whose LM head is zero predicts the uniform distribution: every completion token's entropy is exactly
    log(vocabulary size), whatever it samples."""
    import torch

    from trl_pav.demo.arithmetic import token_entropy
    from trl_pav.generation import HFPolicy
    from trl_pav.tasks import TinyPolicyConfig
    from trl_pav.tasks.sft import tiny_policy_model

    task = RewriteTask()
    tok = task.tokenizer()
    model = tiny_policy_model(tok, TinyPolicyConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=128))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=24, max_step_tokens=24)
    entropy = token_entropy(policy, task.sample_problems(6, seed=1), seed=0, batch_size=4)
    assert entropy == pytest.approx(math.log(model.config.vocab_size), rel=1e-5)


def test_token_entropy_against_a_token_by_token_reference():
    """On a random model the entropy of each completion token's distribution differs; recomputed one prefix at a
    time (no batching, no slicing), the mean over the same sampled completions is the same."""
    import torch

    from trl_pav.demo.arithmetic import token_entropy
    from trl_pav.evaluation import sample_traces
    from trl_pav.generation import HFPolicy
    from trl_pav.tasks import TinyPolicyConfig
    from trl_pav.tasks.sft import tiny_policy_model

    task = RewriteTask()
    tok = task.tokenizer()
    model = tiny_policy_model(tok, TinyPolicyConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=128))
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=20, max_step_tokens=20)
    problems = task.sample_problems(3, seed=2)
    got = token_entropy(policy, problems, seed=5, batch_size=2)
    traces = [ts[0] for ts in sample_traces(policy, [p.prompt for p in problems], 1, seed=5 + 13)]
    per_token = []
    with torch.no_grad():
        for p, steps in zip(problems, traces):
            full = tok(p.prompt + task.step_format.join(steps))["input_ids"]
            n = len(tok(p.prompt)["input_ids"])
            for t in range(n, len(full)):  # the distribution that chose token t, from the prefix before it
                logp = torch.log_softmax(model(input_ids=torch.tensor([full[:t]])).logits[0, -1].float(), -1)
                per_token.append(float(-(logp.exp() * logp).sum()))
    assert len(per_token) > 0 and max(per_token) - min(per_token) > 1e-3  # not a uniform model
    assert got == pytest.approx(sum(per_token) / len(per_token), rel=1e-4)


def test_verifier_max_length_is_the_backbone_position_table(tmp_path):
    """Verifiers read as many tokens as their backbone has positions: the demo's rewrite policy (256) holds whole
    reference traces (prompt included) up to their 99.5th percentile, the length the policy's generation stops at."""
    from trl_pav.experiments.arithmetic_verifiers import trace_limits, verifier_max_length
    from trl_pav.tasks import DEFAULT_POLICY
    from trl_pav.tasks.sft import tiny_policy_model

    task = RewriteTask(min_terms=2, max_terms=3, max_factor=15)  # the demo's
    tok = task.tokenizer()
    tiny_policy_model(tok, DEFAULT_POLICY["rewrite"]).save_pretrained(tmp_path)
    assert verifier_max_length(tmp_path) == DEFAULT_POLICY["rewrite"].max_positions == 256
    lengths = [
        len(tok(p.prompt + task.step_format.join(task.reference_steps(p.expression, seed=i)))["input_ids"])
        for i, p in enumerate(task.sample_problems(2000, seed=0))
    ]
    budget = verifier_max_length(tmp_path)
    # The old fixed 128 cut many whole reference traces; the position table holds all but the policy's own tail.
    assert sum(n > 128 for n in lengths) > 20 and sum(n <= budget for n in lengths) >= 0.995 * len(lengths)
    assert trace_limits(task)["max_new_tokens"] <= budget


@pytest.mark.parametrize(
    ("pav", "outcome", "verdict"),
    [
        ([None] * 3, [None] * 3, "not resolved"),  # neither reaches 90%: nothing says which is better
        ([None] * 3, [200, None, None], "opposite"),
        ([120, 90, 150], [None] * 3, "reproduced"),
        ([120, None, 90], [None] * 3, "not resolved"),
        ([120], [None], "not resolved"),  # one run is an anecdote (REACH_CLAIM_MIN_SEEDS)
        ([None], [200], "not resolved"),
    ],
)
def test_planted_ppo_claim_verdict(pav, outcome, verdict):
    from trl_pav.report import _claims

    results = make_results()
    results["planted"]["ppo_iterations_to_90"] = {"pav_ppo": pav, "outcome_ppo": outcome}
    claim = next(c for c in _claims(results) if c["claim"].startswith("Planted, PPO"))
    assert claim["verdict"] == verdict


def test_padding_note_follows_its_numbers():
    """The exact arm's padding sentence: only when its no-progress share rises (interval above 0), with the
    pre-flight's stall incentive only when that lies below 0."""
    from trl_pav.report import _padding_note

    rising = {"q_value_ablation": ablation_block([0.5, 0.6, 0.55], [0.5, 0.6, 0.55])}  # exact: 0.1 -> 0.55
    below = {"mean_step_advantage": -0.03, "mean_step_advantage_interval": [-0.04, -0.02]}
    text = _padding_note(rising, below)
    assert "goes 0.100 → 0.550 (+0.450 [+0.326, +0.574]) and its traces end at 5.00 steps" in text
    assert "averaged an A^μ of -0.0300 [-0.0400, -0.0200], below the 0" in text
    assert "averaged" not in _padding_note(rising, {**below, "mean_step_advantage_interval": [-0.04, 0.01]})
    assert _padding_note({"q_value_ablation": ablation_block([0.5, 0.6, 0.55], [0.1, 0.12, 0.11])}, below) == ""
    assert _padding_note({}, below) == ""


def test_an_iterations_claim_says_how_many_seeds_reached():
    """A seed that never reaches 90% has no iteration count: the range printed is over the others, and says so."""
    from trl_pav.report import _claims, _fmt_interval

    results = make_results()
    results["planted"]["iterations_to_90"] = {"pav": [None, 120, 140], "outcome": [None, None, None]}
    claim = next(c for c in _claims(results) if c["claim"].startswith("Planted: PAV-RL reaches 90%"))
    assert claim["reached"] == [2, 3, 0] and claim["verdict"] == "not resolved"
    assert _fmt_interval(claim).endswith("(seeds' range 120-140); reached on 2 of 3 seeds, the baseline on 0")
