"""`lookahead_provers`: the tilted policies' success against exact dynamic programming on an enumerable task."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from trl_pav.prover_lookahead import ProverLookaheadConfig, lookahead_provers
from trl_pav.prover_selection import ProverCandidate
from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
from trl_pav.values import tilted_choice_probs

TASK = PlantedTask(vocab_size=3, length=4, planted=(0, 1))


def exact_tilted_success(task: PlantedTask, base_gamma: float, gamma: float, scale: float, m: int) -> float:
    """Success of the policy that draws m steps from μ_base at each state and keeps one with probabilities
    softmax(scale · Q^μ_γ): Markov in (position, match state), so a DP over them with the choice enumerated."""
    probs, table, nxt = task.prover_probs(base_gamma), task.value_table(gamma), task.transitions
    found, n_sym = len(task.planted), task.vocab_size
    u = np.zeros((task.length + 1, found + 1))
    u[task.length, found] = 1.0
    u[:, found] = 1.0
    for t in range(task.length - 1, -1, -1):
        for k in range(found):
            q = np.array([table[t + 1, nxt[k, a]] for a in range(n_sym)])
            choice = np.zeros(n_sym)
            for draw in itertools.product(range(n_sym), repeat=m):
                w = np.exp(scale * q[list(draw)])
                w = w / w.sum()
                for j, a in enumerate(draw):
                    choice[a] += np.prod(probs[k, list(draw)]) * w[j]
            u[t, k] = sum(choice[a] * u[t + 1, nxt[k, a]] for a in range(n_sym))
    return float(u[0, 0])


def test_tilted_choice_probs_is_the_natural_gradient_tilt():
    q = torch.tensor([[0.1, 0.5, 0.5], [0.0, 0.0, 1.0]])
    p = tilted_choice_probs(q, 2.0)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    # exp(2 · 0.4) odds between a 0.5 step and a 0.1 step; per-state shifts of Q^μ (= A^μ's baseline) change nothing
    assert float(p[0, 1] / p[0, 0]) == pytest.approx(np.exp(0.8))
    assert torch.allclose(tilted_choice_probs(q + 0.3, 2.0), p)
    assert torch.allclose(tilted_choice_probs(q, 0.0), torch.full((2, 3), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        tilted_choice_probs(q, -1.0)


@pytest.mark.parametrize(("scale", "m"), [(3.0, 2), (20.0, 3)])
def test_tilted_success_matches_exact_dp(scale, m):
    base_gamma, gamma, n = 1.5, 10.0, 3000
    exact = exact_tilted_success(TASK, base_gamma, gamma, scale, m)
    base = TASK.success_probability(base_gamma)
    assert exact > base + 0.1  # the tilt matters here: the test can tell the two apart
    out = lookahead_provers(
        PlantedProverPolicy(TASK, base_gamma),
        [TASK.prompt] * n,
        TASK.grader,
        [ProverCandidate("g10", scorer=PlantedOracleScorer(TASK, gamma))],
        ProverLookaheadConfig(step_sizes=[scale], candidates_per_step=m, num_bootstrap=200, seed=3),
    )
    row = out.ranking[0]
    sd = lambda p: (p * (1 - p) / n) ** 0.5  # noqa: E731
    assert abs(row.success[0] - exact) < 4 * sd(exact)
    assert abs(out.base_success - base) < 4 * sd(base)  # scale 0 (uniform choice among π's draws) is π
    assert row.score == pytest.approx(row.success[0] - out.base_success)
    low, high = row.score_interval
    assert low < row.score < high


def test_ranking_intervals_and_costs():
    task = PlantedTask(vocab_size=4, length=6, planted=(0, 1, 2))
    cands = [ProverCandidate(f"gamma{g:g}", scorer=PlantedOracleScorer(task, g)) for g in (1.0, 8.0)]
    cfg = ProverLookaheadConfig(step_sizes=[2.0, 8.0], candidates_per_step=4, num_bootstrap=300)
    out = lookahead_provers(PlantedProverPolicy(task, 1.0), [task.prompt] * 400, task.grader, cands, cfg)
    # γ = 1 is π itself: its values barely separate the steps, γ = 8's do, so following it helps more
    assert [r.name for r in out.ranking] == ["gamma8", "gamma1"]
    assert out.ranking[0].score_interval[0] > 0
    assert out.ranking[0].prob_best > 0.9 and sum(r.prob_best for r in out.ranking) == pytest.approx(1.0)
    assert out.generated_tokens > 0 and out.rollouts == 0 and out.num_traces == 400
    again = lookahead_provers(PlantedProverPolicy(task, 1.0), [task.prompt] * 400, task.grader, cands, cfg)
    assert again.to_dict() == out.to_dict()  # seeded
    d = out.to_dict()
    assert d["best"] == "gamma8" and d["step_sizes"] == [2.0, 8.0] and len(d["ranking"][0]["success"]) == 2


def test_monte_carlo_candidates_run_on_rollouts():
    """Best-of-K of π from π's rollouts, and a policy valued by its own rollouts."""
    cands = [2, ProverCandidate("prover", policy=PlantedProverPolicy(TASK, 10.0))]
    cfg = ProverLookaheadConfig(step_sizes=[5.0], candidates_per_step=3, n_rollouts=4, num_bootstrap=100)
    out = lookahead_provers(PlantedProverPolicy(TASK, 1.5), [TASK.prompt] * 200, TASK.grader, cands, cfg)
    assert {r.name for r in out.ranking} == {"Bo2", "prover"}
    assert out.rollouts > 0 and out.generated_tokens > out.rollouts
    by_name = {r.name: r for r in out.ranking}
    assert by_name["prover"].score > 0  # the γ = 10 prover's rollouts still point at the planted string


def test_bad_inputs_raise_clear_errors():
    pol, scorer = PlantedProverPolicy(TASK, 2.0), PlantedOracleScorer(TASK, 5.0)
    for bad in ([], [0.0], [-1.0], [True], [float("inf")], [float("nan")]):
        with pytest.raises(ValueError, match="step_sizes must be finite numbers > 0"):
            ProverLookaheadConfig(step_sizes=bad)
    with pytest.raises(ValueError, match="candidates_per_step must be >= 2"):
        ProverLookaheadConfig(candidates_per_step=1)
    with pytest.raises(ValueError, match="K = 8 but Q\\^π has 4 rollouts"):
        lookahead_provers(pol, [">"], TASK.grader, [8], ProverLookaheadConfig(n_rollouts=4))
    with pytest.raises(ValueError, match="2 prompts but 1 gold"):
        lookahead_provers(pol, [">", ">"], TASK.grader, [ProverCandidate("g", scorer=scorer)], golds=[""])
    with pytest.raises(ValueError, match="no prompts"):
        lookahead_provers(pol, [], TASK.grader, [1])
    with pytest.raises(ValueError, match="names must be distinct"):
        lookahead_provers(pol, [">"], TASK.grader, [1, 1])


class _CutPolicy:
    """Every step it writes hits the token limit (a step longer than the policy may generate)."""

    name = "cut"
    step_format = TASK.step_format

    def generate(self, requests, stop_at_step=False):
        from trl_pav.generation.base import Generation

        return [Generation(steps=["b"], finished=False, num_tokens=3, truncated=True) for _ in requests]


def test_cut_steps_and_endless_traces_fail():
    scorer = PlantedOracleScorer(TASK, 5.0)
    cands = [ProverCandidate("g", scorer=scorer)]
    out = lookahead_provers(_CutPolicy(), [">"] * 4, TASK.grader, cands, ProverLookaheadConfig(num_bootstrap=10))
    assert out.base_success == 0.0 and out.ranking[0].success == [0.0] * 4
    # Traces that have not ended by max_steps are cut and fail, even where their steps so far would succeed.
    long = PlantedTask(vocab_size=3, length=60, planted=(0, 1))  # 60 uniform symbols hold `a b` almost surely
    cands = [ProverCandidate("g", scorer=PlantedOracleScorer(long, 5.0))]
    cfg = ProverLookaheadConfig(step_sizes=[1.0], max_steps=3, num_bootstrap=10)
    out = lookahead_provers(PlantedProverPolicy(long, 1.0), [">"] * 8, long.grader, cands, cfg)
    assert out.base_success == 0.0 and out.ranking[0].success == [0.0]
    uncut = lookahead_provers(PlantedProverPolicy(long, 1.0), [">"] * 8, long.grader, cands, replace(cfg, max_steps=64))
    assert uncut.base_success > 0.5


class _ScriptedPolicy:
    """Steps from a fixed script per prefix length (a policy whose behaviour is known exactly)."""

    name = "scripted"
    step_format = TASK.step_format

    def __init__(self, script, extra=0):
        self.script, self.extra = script, extra  # script[len(prefix)]: (steps, finished); extra: generations added

    def generate(self, requests, stop_at_step=False):
        from trl_pav.generation.base import Generation

        out = [Generation(*self.script[len(r.steps)], num_tokens=2) for r in requests]
        return out + out[: self.extra]


def test_max_steps_leaves_room_for_the_end_of_sequence():
    """A policy that writes `a b` and then a bare end of sequence succeeds under max_steps = 2 (its trace has two
    steps); one that writes a third step is cut."""
    script = {0: (["a"], False), 1: (["b"], False), 2: ([], True)}
    cands = [ProverCandidate("g", scorer=PlantedOracleScorer(TASK, 5.0))]
    cfg = ProverLookaheadConfig(step_sizes=[1.0], max_steps=2, num_bootstrap=10)
    assert lookahead_provers(_ScriptedPolicy(script), [">"] * 4, TASK.grader, cands, cfg).base_success == 1.0
    longer = {**script, 2: (["a"], False), 3: ([], True)}
    assert lookahead_provers(_ScriptedPolicy(longer), [">"] * 4, TASK.grader, cands, cfg).base_success == 0.0
    cfg3 = ProverLookaheadConfig(step_sizes=[1.0], max_steps=3, num_bootstrap=10)
    assert lookahead_provers(_ScriptedPolicy(longer), [">"] * 4, TASK.grader, cands, cfg3).base_success == 1.0


def test_broken_policies_and_graders_raise():
    script = {0: (["a"], False), 1: (["b"], True)}
    cands = [ProverCandidate("g", scorer=PlantedOracleScorer(TASK, 5.0))]
    with pytest.raises(RuntimeError, match=r"returned 33 results .* for 32 requests"):  # 4 states x 8 candidates
        lookahead_provers(_ScriptedPolicy(script, extra=1), [">"] * 4, TASK.grader, cands)

    class NaNGrader:
        def grade(self, completion, gold=""):
            return float("nan")

    with pytest.raises(ValueError, match="the grader returned nan"):
        lookahead_provers(_ScriptedPolicy(script), [">"], NaNGrader(), cands)
    with pytest.raises(ValueError, match="returned 2 steps for a stop_at_step request"):
        lookahead_provers(_ScriptedPolicy({0: (["a", "b"], True)}), [">"], TASK.grader, cands)


def test_a_policy_candidate_named_like_the_base_gets_its_own_rollouts():
    """Best-of-K candidates share the base policy's rollout counts; a policy candidate (named anything, even "pi"
    or "base") is valued by its own rollouts."""
    strong = PlantedProverPolicy(TASK, 1000.0)  # writes the planted string from any state that fits it
    cfg = ProverLookaheadConfig(step_sizes=[30.0], candidates_per_step=3, n_rollouts=4, num_bootstrap=50)
    base = PlantedProverPolicy(TASK, 1.0)
    named = {}
    for name in ("pi", "base", "mu"):
        out = lookahead_provers(base, [">"] * 64, TASK.grader, [1, ProverCandidate(name, policy=strong)], cfg)
        named[name] = {r.name: r.score for r in out.ranking}[name]
    assert named["pi"] == named["base"] == named["mu"]


def test_tied_candidates_share_prob_best():
    scorer = PlantedOracleScorer(TASK, 5.0)
    cands = [ProverCandidate("a", scorer=scorer), ProverCandidate("b", scorer=scorer)]
    out = lookahead_provers(
        PlantedProverPolicy(TASK, 1.5), [">"] * 32, TASK.grader, cands, ProverLookaheadConfig(num_bootstrap=40)
    )
    assert [r.prob_best for r in out.ranking] == [0.5, 0.5]
