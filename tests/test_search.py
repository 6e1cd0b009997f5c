import json

import numpy as np
import pytest

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.generation import HFPolicy
from trl_pav.modeling import checked_step_values
from trl_pav.search import (
    BeamSearchConfig,
    ComputeLedger,
    SearchEvalConfig,
    beam_search,
    compare_curves,
    evaluate_search,
    majority_vote,
    plot_search_results,
    sample_candidates,
)
from trl_pav.search.beam_search import child_rewards
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, PlantedOracleScorer, PlantedProverPolicy, PlantedTask
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier

TASK = ArithmeticTask(min_ops=3, max_ops=4)


def accuracy(results, golds, task=TASK):
    return float(np.mean([task.grader.grade(task.step_format.join(r.steps), g) for r, g in zip(results, golds)]))


def test_figure2_ranking_and_alpha_zero():
    # Q-only (α = 0) ranks by the child's value; the advantage term flips it as in the paper's Figure 2.
    assert np.argmax(child_rewards([0.80, 0.50], [0.75, 0.70], alpha=0.0, k=1)) == 0
    assert np.argmax(child_rewards([0.80, 0.50], [0.75, 0.70], alpha=0.5, k=1)) == 1
    assert child_rewards([0.8, 0.5], [0.75, 0.7], 0.0, 4) == [0.75, 0.7]
    # With a Bo4 prover the advantage is measured on the transformed values.
    f = lambda q: 1 - (1 - q) ** 4  # noqa: E731
    assert child_rewards([0.5], [0.6], 1.0, 4)[0] == pytest.approx(0.6 + f(0.6) - f(0.5))


def test_oracle_beam_search_beats_sampling_at_equal_n():
    policy = NoisyArithmeticPolicy(TASK, error_rate=0.3)
    problems = TASK.sample_problems(40, seed=11)
    prompts, golds = [p.prompt for p in problems], [p.gold for p in problems]
    results = beam_search(policy, policy, prompts, BeamSearchConfig(budget=6, expansions=3, alpha=0.5, prover_k=4))
    beam_acc = accuracy(results, golds)
    samples = sample_candidates(policy, prompts, 6, seed=0)
    sampled_acc = np.mean(
        [TASK.grader.grade(TASK.step_format.join(c.steps), g) for cs, g in zip(samples, golds) for c in cs]
    )
    vote_acc = accuracy(majority_vote(samples, lambda s: s[-1] if s else None), golds)
    print(f"oracle beam {beam_acc:.2f}, sampling {sampled_acc:.2f}, majority@6 {vote_acc:.2f}")
    assert beam_acc >= 0.95 and sampled_acc <= 0.5 and beam_acc > vote_acc + 0.1


def test_oracle_beam_search_on_planted_task():
    task = PlantedTask()
    policy = PlantedProverPolicy(task, gamma=5.0)
    scorer = PlantedOracleScorer(task, gamma=5.0)
    cfg = BeamSearchConfig(budget=30, expansions=3, alpha=0.5, prover_k=1)
    results = beam_search(policy, scorer, [task.prompt] * 20, cfg)
    beam_acc = np.mean([task.grader.grade(task.step_format.join(r.steps)) for r in results])
    assert task.success_probability(5.0) < 0.01 and beam_acc >= 0.9


def test_ledger_totals_equal_sum_over_calls():
    class Counting(NoisyArithmeticPolicy):
        tokens = 0
        steps = 0

        def generate(self, requests, stop_at_step=False):
            out = super().generate(requests, stop_at_step)
            Counting.tokens += sum(g.num_tokens for g in out)
            Counting.steps += len(out)
            return out

    policy = Counting(TASK, 0.3)
    ledger = ComputeLedger()
    prompts = [p.prompt for p in TASK.sample_problems(5, seed=1)]
    beam_search(policy, NoisyArithmeticPolicy(TASK, 0.3), prompts, BeamSearchConfig(budget=6), ledger)
    assert ledger.generated_tokens == Counting.tokens and ledger.sampled_steps == Counting.steps
    totals = ledger.totals()
    assert totals["generated_tokens"] == sum(c[1] for c in ledger.calls if c[0] == "generate")
    assert totals["calls"] == len(ledger.calls) and all(c[1] == 0 for c in ledger.calls if c[0] == "score")


def test_batching_prompts_does_not_change_results(char_tok):
    problems = TASK.sample_problems(6, seed=4)
    prompts = [p.prompt for p in problems]
    policy = NoisyArithmeticPolicy(TASK, 0.3)
    cfg = BeamSearchConfig(budget=6, expansions=3, alpha=0.5)
    together = beam_search(policy, policy, prompts, cfg)
    alone = [beam_search(policy, policy, [p], cfg, prompt_ids=[i])[0] for i, p in enumerate(prompts)]
    assert [r.steps for r in together] == [r.steps for r in alone]
    # The same with a real HF policy and verifier whose tokenizer differs from the policy's.
    hf = HFPolicy(tiny_causal_lm(char_tok, seed=1), char_tok, max_step_tokens=8, max_new_tokens=24)
    tok = TASK.tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok, seed=2), tok, PAVMetadata(prover_k=4))
    cfg = BeamSearchConfig(budget=4, expansions=2, max_depth=3)
    together = beam_search(hf, verifier, prompts[:3], cfg)
    alone = [beam_search(hf, verifier, [p], cfg, prompt_ids=[i])[0] for i, p in enumerate(prompts[:3])]
    assert [r.steps for r in together] == [r.steps for r in alone]


def test_evaluate_search_runner_and_plot(tmp_path):
    policy = NoisyArithmeticPolicy(TASK, 0.3)
    problems = TASK.sample_problems(12, seed=3)
    cfg = SearchEvalConfig(budgets=[3, 6])
    results = evaluate_search(
        policy,
        [p.prompt for p in problems],
        [p.gold for p in problems],
        TASK.grader,
        cfg,
        pav=policy,
        orm=policy,
        show_progress=False,
    )
    assert set(results["methods"]) == set(cfg.methods)
    for records in results["methods"].values():
        assert [r["n"] for r in records] == [3, 6]
        for r in records:
            assert 0 <= r["accuracy"] <= 1 and r["generated_tokens"] > 0
    pass_at = {r["n"]: r["accuracy"] for r in results["methods"]["pass_at_n"]}
    for method in ("orm_bon", "majority"):
        for r in results["methods"][method]:
            assert r["accuracy"] <= pass_at[r["n"]] + 1e-12  # Pass@N is the ceiling of best-of-N
    json.dumps(results)
    path = plot_search_results(results, str(tmp_path / "search.png"))
    assert (tmp_path / "search.png").stat().st_size > 1000 and path.endswith(".png")
    with pytest.raises(ValueError, match="need a PAV scorer"):
        evaluate_search(policy, ["Q:1+2?\n"], ["3"], TASK.grader, SearchEvalConfig(methods=["pav_beam"]))


def test_compare_curves():
    pav = [{"generated_tokens": 100, "accuracy": 0.5}, {"generated_tokens": 200, "accuracy": 0.7}]
    orm = [
        {"generated_tokens": 100, "accuracy": 0.3},
        {"generated_tokens": 400, "accuracy": 0.5},
        {"generated_tokens": 1600, "accuracy": 0.7},
    ]
    out = compare_curves(pav, orm)
    assert out["compute_ratio"] == pytest.approx(8.0) and not out["ratio_is_lower_bound"]
    # The largest common budget is PAV's 200 tokens; the best ORM does with at most 200 tokens is 0.3.
    assert out["accuracy_gain"] == pytest.approx(0.7 - 0.3) and out["gain_compute"] == 200
    never = compare_curves([{"generated_tokens": 100, "accuracy": 0.9}], orm)
    assert never["ratio_is_lower_bound"] and never["compute_ratio"] == pytest.approx(16.0)


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.2])
def test_a_scorer_value_outside_0_1_is_named_before_it_is_ranked(bad):
    """A NaN would win a beam's max (and 1.5 would win outright): search refuses it, naming the trace and step."""

    class Broken(PlantedOracleScorer):
        def score(self, prompts, steps):
            out = super().score(prompts, steps)
            for row, s in zip(out, steps):
                if len(s) == 2:
                    row[2] = bad
            return out

    task = PlantedTask()
    cfg = BeamSearchConfig(budget=6, expansions=3, alpha=0.5, prover_k=1)
    with pytest.raises(ValueError, match=r"Broken.score: trace \d+, value 2 \(after step 2\) is .*finite numbers in"):
        beam_search(PlantedProverPolicy(task, gamma=5.0), Broken(task, 5.0), [task.prompt] * 2, cfg)
    with pytest.raises(ValueError, match=r"Broken.score: trace 0 has 1 steps but 1 values"):
        checked_step_values([[0.5]], [["a"]], Broken(task, 5.0))


def test_majority_vote_counts_one_number_written_differently_as_one_answer():
    from trl_pav import extract_answer
    from trl_pav.generation import Generation

    answers = ["\\boxed{1000}", "\\boxed{1,000}", "\\boxed{1000.0}", "\\boxed{7}", "\\boxed{7}"]
    pool = [Generation([f"so {a}"], finished=True) for a in answers]
    result = majority_vote([pool], lambda steps: extract_answer(steps[-1]))[0]
    assert result.steps == ["so \\boxed{1000}"] and result.score == 3


def test_vote_keys_merge_equal_numbers_only():
    from trl_pav.search import vote_key

    assert len({vote_key(a) for a in ["1,000", "1000.0", "$1000$", "1000.", "1 000"]}) == 1
    assert vote_key("12345678901234567") != vote_key("12345678901234568")  # beyond float precision
    assert vote_key("1.5,000") != vote_key("1.5") and vote_key("-0") == vote_key("0")
    long = "1234567890123456789012345678901"  # beyond a decimal context's 28 digits
    assert vote_key(long) != vote_key(long[:-1] + "2") and vote_key(long + ".000") == vote_key(long)
    assert vote_key("0.00120") == vote_key("1.2e-3") == "0.0012" and vote_key("1E+2") == "100"
    assert vote_key("1e999999999") == "1e999999999"  # too long to write out: compared as written, no overflow


def test_traces_longer_than_the_verifier_reads_count_as_failing_instead_of_aborting_the_search(char_tok):
    """A policy that rambles past the verifier's max_length: search goes on, the rambling trace loses to one that
    fits, and the ledger counts it."""
    from trl_pav import StepFormat
    from trl_pav.generation import Generation
    from trl_pav.search import ComputeLedger, best_of_n

    verifier = PAVVerifier(tiny_token_classifier(char_tok), char_tok, PAVMetadata(), max_length=40)
    long_step = "1+1=2 1+1=2 1+1=2 1+1=2 1+1=2 1+1=2"
    prompt = "Q:2+3?\n"
    rambling = Generation([long_step, long_step, "#### 5"], finished=True)
    short = Generation(["#### 5"], finished=True)
    ledger = ComputeLedger()
    picked = best_of_n([prompt], [[rambling, short]], verifier, ledger)[0]
    assert picked.steps == ["#### 5"] and ledger.beyond_verifier == ledger.totals()["beyond_verifier"] == 1
    assert verifier.steps_that_fit(prompt, rambling.steps) < 3  # the case is real: it does not fit

    class Rambler:
        name, step_format = "rambler", StepFormat()

        def generate(self, requests, stop_at_step=False):
            return [Generation([long_step], num_tokens=len(long_step)) for _ in requests]

    ledger = ComputeLedger()
    cfg = BeamSearchConfig(budget=3, alpha=0.5, prover_k=1, max_depth=2)
    results = beam_search(Rambler(), verifier, [prompt], cfg, ledger)
    assert len(results) == 1 and ledger.beyond_verifier > 0
    with pytest.raises(ValueError, match="max_length"):  # a prompt alone too long is a setting to fix
        best_of_n(["Q:" + "1+" * 40 + "1?\n"], [[short]], verifier, ComputeLedger())
