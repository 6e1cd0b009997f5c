"""Online Monte-Carlo prover values (`MCStepScorer`) against exact values, and inside the RL trainers."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_pav import MCStepScorer
from trl_pav.tasks import (
    ArithmeticTask,
    PlantedOracleScorer,
    PlantedProverPolicy,
    PlantedTask,
    RewritePolicy,
    RewriteTask,
)
from trl_pav.testing import cpu_rl_args, tiny_causal_lm
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward
from trl_pav.values import best_of_k, prover_advantages

PLANTED = PlantedTask()


class RecordingPolicy:
    """Wraps a policy and records the requests it is sent."""

    def __init__(self, policy):
        self.inner, self.requests = policy, []
        self.name, self.step_format = policy.name, policy.step_format

    def generate(self, requests, stop_at_step=False):
        self.requests.extend(requests)
        return self.inner.generate(requests, stop_at_step)


def test_planted_values_converge_to_the_exact_dp_values():
    gamma, n = 10.0, 600
    traces = [[], ["d", "g", "a"], ["d", "g", "a", "d", "f"], ["b", "d", "g"]]
    scorer = MCStepScorer(PlantedProverPolicy(PLANTED, gamma), PLANTED.grader, n_rollouts=n, seed=3)
    got = scorer.score([PLANTED.prompt] * len(traces), traces, golds=[""] * len(traces))
    for trace, values in zip(traces, got):
        exact = PLANTED.exact_values(gamma, trace)
        assert len(values) == len(exact) == len(trace) + 1
        for v, q in zip(values, exact):
            sd = math.sqrt(max(q * (1 - q), 1e-4) / n)
            assert abs(v - q) <= 4.5 * sd + 1e-9, (trace, v, q)
    # With n this large the advantages are the exact-value arm's, within the same binomial error.
    oracle = PlantedOracleScorer(PLANTED, gamma).score([PLANTED.prompt], [traces[2]])[0]
    mc_adv = prover_advantages(torch.tensor(got[2], dtype=torch.float64), 1)
    exact_adv = prover_advantages(torch.tensor(oracle, dtype=torch.float64), 1)
    assert torch.allclose(mc_adv, exact_adv, atol=0.12)


def test_best_of_k_of_the_rollout_policy_is_unbiased_against_exact_values():
    task = RewriteTask()
    rates = {"hard_product": 0.5, "product": 0.2, "split": 0.1, "sum": 0.05}
    policy = RewritePolicy(task, rates, restate_rate=0.1)
    problem = task.sample_problems(1, seed=5)[0]
    trace = task.reference_steps(problem.expression, seed=1)[:2]
    k, n = 4, 2000
    scorer = MCStepScorer(policy, task.grader, n_rollouts=n, prover_k=k, seed=0)
    got = scorer.score([problem.prompt], [trace], golds=[problem.gold])[0]
    exact_pi = torch.tensor(policy.values_along(problem.prompt, trace), dtype=torch.float64)
    exact_mu = best_of_k(exact_pi, k)
    # The unbiased estimator's sd is at most sqrt(K / (4 n)) (a U-statistic of order K).
    assert np.allclose(got, exact_mu.numpy(), atol=4.5 * math.sqrt(k / (4 * n)))
    assert not np.allclose(exact_mu.numpy(), exact_pi.numpy())  # the test separates Q^mu from Q^pi


def test_shared_prefixes_share_rollouts_and_results_do_not_depend_on_order():
    traces = [["d", "g"], ["d", "a"], ["d", "g"]]
    make = lambda: MCStepScorer(PlantedProverPolicy(PLANTED, 5.0), PLANTED.grader, n_rollouts=6, seed=1)  # noqa: E731
    scorer = make()
    out = scorer.score([PLANTED.prompt] * 3, traces, golds=[""] * 3)
    # States: root, d, dg, da.
    assert scorer.stats.states == 4 and scorer.stats.rollouts == 24
    # A rollout from h of the 10 steps writes 10 - h letters with a space before each (none before the first of
    # a trace) and the end of sequence: the policy's character tokens.
    assert scorer.stats.rollout_tokens == sum(2 * (10 - h) - (h == 0) + 1 for h in (0, 1, 2, 2)) * 6
    assert out[0] == out[2] and out[0][:2] == out[1][:2]
    reordered = make().score([PLANTED.prompt] * 3, traces[::-1], golds=[""] * 3)
    assert reordered[::-1] == out


def test_successive_calls_draw_fresh_rollouts():
    policy = RecordingPolicy(PlantedProverPolicy(PLANTED, 5.0))
    scorer = MCStepScorer(policy, PLANTED.grader, n_rollouts=3)
    scorer.score([PLANTED.prompt], [["d"]], golds=[""])
    first = {r.seed for r in policy.requests}
    policy.requests.clear()
    scorer.score([PLANTED.prompt], [["d"]], golds=[""])
    assert len(first) == 6 and first.isdisjoint({r.seed for r in policy.requests})
    assert scorer.stats.calls == 2


def test_a_last_step_ending_in_part_of_the_separator_is_rolled_out_and_graded():
    """A finished completion under blank-line steps may end in one newline ("b\n"): its rollouts still grade."""
    from trl_pav.generation.base import Generation
    from trl_pav.grading import ExactMatchGrader
    from trl_pav.steps import StepFormat

    class Answers:
        name, step_format = "answers", StepFormat.blank_line()

        def generate(self, requests, stop_at_step=False):  # right on odd seeds, wrong on even ones
            return [Generation(steps=[f"A:{5 if r.seed % 2 else 6}"], finished=True, num_tokens=3) for r in requests]

    scorer = MCStepScorer(Answers(), ExactMatchGrader(), n_rollouts=64)
    values = scorer.score(["Q"], [["step one", "step two\n"]], golds=["5"])[0]
    assert len(values) == 3 and all(0.25 < v < 0.75 for v in values)


def test_bad_settings_and_inputs_raise_clearly():
    pol = PlantedProverPolicy(PLANTED, 5.0)
    with pytest.raises(ValueError, match="prover_k=4 needs at least"):
        MCStepScorer(pol, PLANTED.grader, n_rollouts=2, prover_k=4)
    with pytest.raises(ValueError, match="n_rollouts"):
        MCStepScorer(pol, PLANTED.grader, n_rollouts=0)
    with pytest.raises(ValueError, match="'frozen'"):
        MCStepScorer("current", PLANTED.grader)
    scorer = MCStepScorer(pol, PLANTED.grader)
    with pytest.raises(ValueError, match="gold answers are needed"):
        scorer.score([PLANTED.prompt], [["d"]])
    with pytest.raises(ValueError, match="2 prompts but 1 step lists"):
        scorer.score([PLANTED.prompt] * 2, [["d"]], golds=["", ""])
    with pytest.raises(RuntimeError, match="no rollout policy bound"):
        MCStepScorer(None, PLANTED.grader).score([PLANTED.prompt], [["d"]], golds=[""])


ARITH = ArithmeticTask()


class ContainsGrader:
    """Success iff the trace contains `needle`: an untrained model succeeds often enough to get gradients."""

    def __init__(self, needle="1"):
        self.needle = needle

    def grade(self, completion, gold=""):
        return float(self.needle in completion)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = ARITH.tokenizer()
    path = tmp_path_factory.mktemp("policy")
    tiny_causal_lm(tok, seed=0, hidden_size=32).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _trainer(policy_dir, tmp_path, scorer, **kw):
    probs = ARITH.sample_problems(8, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    args = cpu_rl_args(PAVGRPOConfig, tmp_path / "rl", **{"max_completion_length": 16, "step_separator": "\n", **kw})
    return PAVGRPOTrainer(
        policy_dir,
        [grader_reward(ContainsGrader())],
        verifier=scorer,
        args=args,
        train_dataset=data,
        processing_class=ARITH.tokenizer(),
    )


@pytest.mark.parametrize("rollout_policy", [None, "frozen"])
def test_grpo_trains_with_online_rollout_values(policy_dir, tmp_path, rollout_policy):
    scorer = MCStepScorer(rollout_policy, ContainsGrader(), n_rollouts=2)
    trainer = _trainer(policy_dir, tmp_path, scorer)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.pav_prover_k == 1  # the scorer's values are already Q^mu
    assert (scorer.policy.model is model) == (rollout_policy is None)
    before = {k: v.clone() for k, v in scorer.policy.model.state_dict().items()}
    trainer.train()
    assert scorer.stats.calls >= 1 and scorer.stats.rollout_tokens > 0
    logged = [h for h in trainer.state.log_history if "pav/rollout_tokens_per_completion" in h]
    assert logged and all(h["pav/rollout_tokens_per_completion"] > 0 for h in logged)
    changed = any(not torch.equal(before[k], v) for k, v in scorer.policy.model.state_dict().items())
    assert changed == (rollout_policy is None)  # the frozen copy keeps the initial weights


@pytest.mark.parametrize("rollout_policy", [None, "frozen"])
def test_frozen_prover_computes_with_its_own_weights(policy_dir, tmp_path, rollout_policy):
    """The rollout model's outputs, not only its state dict: TRL patches the trained model's forward with a closure
    over the original, which a plain deep copy keeps (the "frozen" prover then ran the live weights)."""
    from transformers import AutoModelForCausalLM

    scorer = MCStepScorer(rollout_policy, ContainsGrader(), n_rollouts=2)
    trainer = _trainer(policy_dir, tmp_path, scorer)
    live = trainer.accelerator.unwrap_model(trainer.model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        for weight in live.parameters():
            weight.add_(0.5)  # the trained policy moves far from its initial weights
        rollout_logits = scorer.policy.model(ids).logits
        initial_logits = AutoModelForCausalLM.from_pretrained(policy_dir)(ids).logits
    assert torch.allclose(rollout_logits, initial_logits) == (rollout_policy == "frozen")


def test_prover_refresh_takes_the_live_weights_at_each_multiple_of_its_interval(policy_dir, tmp_path):
    """Outputs again: right after a refresh the rollout model computes like the live one, between refreshes it stays
    put while the live one moves, and a step that scored nothing (4) does not shift the schedule (6, not 7)."""
    scorer = MCStepScorer("frozen", ContainsGrader(), n_rollouts=1, refresh_every=2)
    trainer = _trainer(policy_dir, tmp_path, scorer)
    trainer._pav_spent = {"rollout": 0, "verifier": 0}
    live = trainer.accelerator.unwrap_model(trainer.model)
    ids = torch.tensor([[1, 2, 3, 4]])

    def moved_then_scored_at(step):
        with torch.no_grad():
            for weight in live.parameters():
                weight.add_(0.1)
        trainer.state.global_step = step
        trainer._score_rollouts(["Q:1+1?\n"], [["1+1=2"]], ["2"])
        with torch.no_grad():
            return torch.allclose(scorer.policy.model(ids).logits, live(ids).logits)

    refreshed = [moved_then_scored_at(step) for step in (1, 2, 3, 5, 5, 6)]
    assert refreshed == [False, True, False, True, False, True]  # 6 is a multiple of 2, one step after 5


def test_detached_copy_rebinds_patches_and_refuses_what_it_cannot():
    """An accelerate hook under a TRL-style patch (a partial inside a closure) is rebound onto the copy; a forward
    that reaches the original through a global cannot be, and raises rather than roll out the live weights."""
    import types

    from accelerate.hooks import ModelHook, add_hook_to_module

    from trl_pav.trainers.pav_rl import detached_copy

    live = torch.nn.Linear(1, 1, bias=False)
    add_hook_to_module(live, ModelHook())
    original_forward = live.forward  # a functools.partial bound to `live`
    live.forward = types.MethodType(lambda self, x: original_forward(x) + 1, live)
    frozen = detached_copy(live)
    with torch.no_grad():
        live.weight.fill_(2.0)
        frozen.weight.fill_(1.0)
        assert (frozen(torch.ones(1)).item(), live(torch.ones(1)).item()) == (2.0, 3.0)
    plain = torch.nn.Linear(1, 1, bias=False)
    global _ORIGINAL
    _ORIGINAL = plain
    plain.forward = types.MethodType(lambda self, x: _ORIGINAL.weight * x, plain)
    with pytest.raises(RuntimeError, match="root forward still reaches the original model"):
        detached_copy(plain)
    assert detached_copy(torch.nn.Linear(1, 1)).weight.shape == (1, 1)  # an unpatched model copies as it is


def test_trainer_rejects_a_second_best_of_k_on_rollout_values(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="already the prover's"):
        _trainer(policy_dir, tmp_path, MCStepScorer(None, ARITH.grader, n_rollouts=4, prover_k=4), prover_k=4)


def test_prover_refresh_copies_the_trained_weights_into_the_frozen_prover(policy_dir, tmp_path):
    scorer = MCStepScorer("frozen", ContainsGrader(), n_rollouts=2, refresh_every=1)
    trainer = _trainer(policy_dir, tmp_path, scorer, max_steps=3)
    initial = {k: v.clone() for k, v in scorer.policy.model.state_dict().items()}
    live = trainer.accelerator.unwrap_model(trainer.model)
    assert scorer.policy.model is not live
    trainer.train()
    # Refreshed at steps 1 and 2 (before step 3's update): no longer the initial weights, nor the live ones.
    frozen = scorer.policy.model.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in frozen.items())
    assert any(not torch.equal(live.state_dict()[k], v) for k, v in frozen.items())
    with pytest.raises(ValueError, match="set policy='frozen'"):
        MCStepScorer(None, ContainsGrader(), refresh_every=5)


def test_config_route_grades_rollouts_with_the_reward_functions(policy_dir, tmp_path):
    trainer = _trainer(policy_dir, tmp_path, None, verifier_type="mc", mc_rollouts=2, mc_rollout_policy="frozen")
    scorer = trainer.verifier
    assert isinstance(scorer, MCStepScorer) and scorer.n_rollouts == 2 and scorer.frozen
    # The reward functions' weighted sum grades a rollout exactly as it grades a completion.
    grader = scorer.grader
    rows = [{"prompt": "Q:1+1?\n", "gold": "2"}, {"prompt": "Q:1+1?\n", "gold": "2"}]
    assert grader.grade_batch(["#### 12", "#### 3"], rows) == [1.0, 0.0]
    trainer.train()
    assert scorer.stats.rollout_tokens > 0
    with pytest.raises(ValueError, match="unset verifier_model_name_or_path"):
        PAVGRPOConfig(output_dir=str(tmp_path), verifier_type="mc", verifier_model_name_or_path="x", use_cpu=True)


def test_reward_function_grades_read_nan_and_none_as_no_reward():
    from types import SimpleNamespace

    from trl_pav.trainers.pav_rl import RewardFunctionsGrader

    def reward(prompts, completions, **kwargs):
        return [{"ok": 1.0, "nan": float("nan"), "none": None}[c] for c in completions]

    trainer = SimpleNamespace(reward_funcs=[reward, reward], reward_weights=torch.tensor([0.5, 0.5]))
    grades = RewardFunctionsGrader(trainer).grade_batch(["ok", "nan", "none"], [{"prompt": "p"}] * 3)
    assert grades == [1.0, 0.0, 0.0]
