"""Selection among candidates: only finished traces with a readable answer are picked, scored or vote; beam search's
answer pool is capped at the beam width and drops truncated children; curves are compared against running bests.

Ground truth comes from the arithmetic task's exact checker and `NoisyArithmeticPolicy`'s exact values (its `score`
is an oracle verifier), and from hand-built candidates.
"""

import random

import numpy as np
import pytest

from trl_pav.generation import Generation
from trl_pav.grading import extract_answer
from trl_pav.search import (
    BeamSearchConfig,
    SearchEvalConfig,
    beam_search,
    best_of_n,
    compare_curves,
    compare_to_baselines,
    evaluate_search,
    majority_vote,
    merge_search_results,
    sample_candidates,
    summarize_curve,
    weighted_majority,
)
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy

TASK = ArithmeticTask(min_ops=3, max_ops=4)
JOIN = TASK.step_format.join


def answer_fn(steps):
    return extract_answer(JOIN(steps))


class LimitedPolicy(NoisyArithmeticPolicy):
    """`NoisyArithmeticPolicy` with a backend's failure modes, each traced so tests know what was cut.

    - `max_chars`: a token limit (one character = one token) on a whole trace: a longer one is cut there and marked
      `truncated`, as `HFPolicy` does at `max_new_tokens`; with `whole_steps` the cut keeps only the steps that fit.
    - `max_step_chars`: the same for one step (`max_step_tokens`): a longer step comes back as a truncated fragment.
    - `skip_answer`: probability (drawn from the request's seed) that a trace ends without writing its `#### n` line.
    """

    def __init__(self, task, error_rate, max_chars=None, max_step_chars=None, skip_answer=0.0, whole_steps=False):
        super().__init__(task, error_rate)
        self.whole_steps = whole_steps
        self.max_chars, self.max_step_chars, self.skip_answer = max_chars, max_step_chars, skip_answer
        self.whole_children = set()  # (prompt, prefix, step) of every step that came out uncut

    def generate(self, requests, stop_at_step=False):
        out = []
        for req, gen in zip(requests, super().generate(requests, stop_at_step)):
            steps, finished = gen.steps, gen.finished
            answers = finished and steps and steps[-1].startswith("####")
            if answers and random.Random(req.seed + 7).random() < self.skip_answer:
                steps = steps[:-1]  # ends (EOS) right before the answer
            limit = self.max_step_chars if stop_at_step else self.max_chars
            text = JOIN(steps) if steps else ""
            if limit is not None and len(text) > limit:
                cut = text[: text.rfind("\n", 0, limit + 1)] if self.whole_steps and not stop_at_step else text[:limit]
                out.append(Generation(TASK.step_format.split(cut), num_tokens=limit, truncated=True))
                continue
            if stop_at_step and steps:
                self.whole_children.add((req.prompt, tuple(req.steps), steps[0]))
            out.append(Generation(steps, finished=finished, num_tokens=len(text) + 1))
        return out


def problems(n, seed):
    probs = TASK.sample_problems(n, seed=seed)
    return [p.prompt for p in probs], [p.gold for p in probs]


def grade(steps, gold):
    return TASK.grader.grade(JOIN(steps), gold) if steps else 0.0


# ---- best-of-N ------------------------------------------------------------------------------------------------------
def test_best_of_n_ranks_only_finished_answered_traces():
    # A token limit cuts half the traces and some traces end without their `#### n` line. The oracle values a cut
    # prefix still on the right path at (1 - p)^remaining > 0, above every finished wrong trace (0), and a complete
    # correct trace without its answer line at 1, so ranking every candidate picks traces that never answered.
    policy = LimitedPolicy(TASK, error_rate=0.3, max_chars=36, whole_steps=True, skip_answer=0.3)
    prompts, golds = problems(60, seed=5)
    cands = sample_candidates(policy, prompts, 4, seed=1)
    results = best_of_n(prompts, cands, policy, answer_fn=answer_fn)
    unanswered_would_win = 0  # prompts where ranking every candidate (ties to the first) picks one without answer
    for prompt, gold, cs, r in zip(prompts, golds, cands, results):
        ok = [c for c in cs if c.finished and answer_fn(c.steps) is not None]
        value = {tuple(c.steps): policy.exact_value(prompt, c.steps) for c in cs if c.steps}
        if ok:
            assert r.answered and tuple(r.steps) in {tuple(c.steps) for c in ok}
            assert r.score == max(value[tuple(c.steps)] for c in ok)
            # The oracle gives 1 to a correct trace and 0 to a wrong one: right iff an answered sample is right.
            assert grade(r.steps, gold) == max(grade(c.steps, gold) for c in ok)
            unanswered_would_win += max((c for c in cs if c.steps), key=lambda c: value[tuple(c.steps)]) not in ok
        else:
            assert not r.answered and r.score == max(value.values(), default=float("-inf"))
    assert unanswered_would_win >= 3  # the case the rule is for did occur


def test_finished_trace_without_answer_is_not_picked():
    oracle = NoisyArithmeticPolicy(TASK, error_rate=0.3)
    prompt, gold = "Q:2*3+4-1?\n", "9"
    no_answer = Generation(["2*3=6", "6+4=10", "10-1=9"], finished=True)  # every step right: value 1, no answer
    answered = Generation(["2*3=6", "6+4=10", "10-1=9", "#### 9"], finished=True)  # value 1 too, a later sample
    assert oracle.score([prompt], [no_answer.steps])[0][-1] == oracle.score([prompt], [answered.steps])[0][-1] == 1.0
    for r in (
        best_of_n([prompt], [[no_answer, answered]], oracle, answer_fn=answer_fn)[0],
        weighted_majority([prompt], [[no_answer, answered]], oracle, answer_fn)[0],
        majority_vote([[no_answer, answered]], answer_fn)[0],
    ):
        assert r.steps == answered.steps and r.answered and grade(r.steps, gold) == 1.0
    # Nothing answered: best_of_n falls back to the best trace and says so.
    r = best_of_n([prompt], [[Generation(["2*3=7"], truncated=True), no_answer]], oracle, answer_fn=answer_fn)[0]
    assert r.steps == no_answer.steps and not r.answered
    assert best_of_n([prompt], [[Generation()]], oracle)[0].steps == []


def test_truncated_traces_do_not_vote():
    # Two samples were cut in the middle of the answer `#### 57` and read `#### 5`; one finished with `#### 57`.
    cut = Generation(["50+7=57", "#### 5"], truncated=True)
    done = Generation(["50+7=57", "#### 57"], finished=True)
    assert majority_vote([[cut, cut, done]], answer_fn)[0].steps == done.steps
    assert majority_vote([[cut, cut]], answer_fn)[0].answered is False
    # Bare step lists are taken as finished traces (the older calling convention still works).
    assert majority_vote([[["#### 5"], ["#### 6"], ["#### 6"]]], answer_fn)[0].steps == ["#### 6"]


def test_verifier_scores_only_what_can_be_picked():
    class Recording(NoisyArithmeticPolicy):
        def score(self, prompts, steps):
            self.seen.extend((p, tuple(s)) for p, s in zip(prompts, steps))
            return super().score(prompts, steps)

    policy = LimitedPolicy(TASK, error_rate=0.3, max_chars=30, skip_answer=0.2)
    prompts, golds = problems(40, seed=8)
    cands = sample_candidates(policy, prompts, 4, seed=2)
    for method in ("best_of_n", "weighted_majority"):
        scorer = Recording(TASK, 0.3)
        scorer.seen = []
        if method == "best_of_n":
            results = best_of_n(prompts, cands, scorer, answer_fn=answer_fn)
        else:
            results = weighted_majority(prompts, cands, scorer, answer_fn)
        for prompt, gold, cs, r in zip(prompts, golds, cands, results):
            ok = {tuple(c.steps) for c in cs if c.finished and not c.truncated and answer_fn(c.steps) is not None}
            scored = {s for p, s in scorer.seen if p == prompt}
            assert scored == (ok or {tuple(c.steps) for c in cs if c.steps}), method
            # Oracle weights: 1 per finished correct trace, 0 per wrong one, so either method is right iff one is.
            if ok:
                assert grade(r.steps, gold) == max(grade(list(s), gold) for s in ok), method


# ---- beam search ----------------------------------------------------------------------------------------------------
def test_beam_answer_pool_holds_at_most_b_answered_traces():
    policy = NoisyArithmeticPolicy(TASK, error_rate=0.3)
    prompts, golds = problems(20, seed=3)
    cfg = BeamSearchConfig(budget=12, expansions=3, alpha=0.5, prover_k=4)
    results = beam_search(policy, policy, prompts, cfg, answer_fn=answer_fn)
    for prompt, r in zip(prompts, results):
        assert 1 <= len(r.candidates) <= cfg.beams  # not every finished child ever generated
        assert all(answer_fn(c) is not None for c in r.candidates) and r.answered
        assert (
            r.score == max(policy.exact_value(prompt, c) for c in r.candidates) == policy.exact_value(prompt, r.steps)
        )
    # Oracle values: a correct finished trace (value 1) always takes a slot, so beam search is right whenever it
    # found one; with error rate 0.3 and 12 children per step it nearly always does.
    assert np.mean([grade(r.steps, g) for r, g in zip(results, golds)]) >= 0.95


def test_beam_search_drops_truncated_children():
    # Steps longer than 8 characters (e.g. `13*12=156`) come back cut: fragments, never steps of a trace.
    policy = LimitedPolicy(TASK, error_rate=0.3, max_step_chars=8)
    prompts, _ = problems(30, seed=6)
    results = beam_search(policy, policy, prompts, BeamSearchConfig(budget=6, max_depth=6), answer_fn=answer_fn)
    for prompt, r in zip(prompts, results):
        for trace in [r.steps, *r.candidates]:
            for h, step in enumerate(trace):
                assert (prompt, tuple(trace[:h]), step) in policy.whole_children
    assert any(r.answered for r in results) and any(not r.answered for r in results)


def test_beam_search_finished_without_answer_is_a_dead_end():
    # Half the traces end right before their `#### n` line: value 1 under the oracle, the same as the answered
    # trace, and listed first (they end one step earlier), so taking them as answers loses correct problems.
    policy = LimitedPolicy(TASK, error_rate=0.2, skip_answer=0.5)
    prompts, golds = problems(20, seed=9)
    results = beam_search(policy, policy, prompts, BeamSearchConfig(budget=6), answer_fn=answer_fn)
    for r in results:
        assert r.answered == r.steps[-1].startswith("####")
        assert not r.answered or all(c[-1].startswith("####") for c in r.candidates)
    answered = [grade(r.steps, g) for r, g in zip(results, golds) if r.answered]
    # Rarely all expansions of the last step skip the answer (a fallback); otherwise the oracle finds it.
    assert len(answered) >= 17 and np.mean(answered) >= 0.9


def test_beam_search_falls_back_when_nothing_answers():
    policy = NoisyArithmeticPolicy(TASK, error_rate=0.3)
    prompts, _ = problems(10, seed=4)
    results = beam_search(policy, policy, prompts, BeamSearchConfig(budget=6, max_depth=2), answer_fn=answer_fn)
    for prompt, r in zip(prompts, results):  # 3-4 operations: nothing finishes within 2 steps
        assert not r.answered and len(r.steps) == 2 and 1 <= len(r.candidates) <= 2
        assert (
            r.score == policy.exact_value(prompt, r.steps) == max(policy.exact_value(prompt, c) for c in r.candidates)
        )


# ---- the evaluation runner -----------------------------------------------------------------------------------------
def test_evaluate_search_records_per_problem_and_unanswered():
    policy = LimitedPolicy(TASK, error_rate=0.3, max_chars=36)
    prompts, golds = problems(16, seed=12)
    cfg = SearchEvalConfig(methods=["q_beam", "orm_bon", "majority", "random_pick", "pass_at_n"], budgets=[3, 6])
    res = evaluate_search(policy, prompts, golds, TASK.grader, cfg, pav=policy, orm=policy, show_progress=False)
    assert res["problem_ids"] == list(range(16))
    for i, n in enumerate(cfg.budgets):
        cands = sample_candidates(policy, prompts, n, cfg.seed)  # the samples the runner used (same seeds)
        no_answer = [not any(c.finished and answer_fn(c.steps) for c in cs) for cs in cands]
        expected = {
            "random_pick": [np.mean([grade(c.steps, g) for c in cs]) for cs, g in zip(cands, golds)],
            "pass_at_n": [max(grade(c.steps, g) for c in cs) for cs, g in zip(cands, golds)],
            # Oracle ORM: right iff a finished sample is right (no cut trace is ever right).
            "orm_bon": [
                max(grade(c.steps, g) for c in cs if c.finished) if any(c.finished for c in cs) else 0.0
                for cs, g in zip(cands, golds)
            ],
        }
        for method, records in res["methods"].items():
            rec = records[i]
            assert len(rec["per_problem_correct"]) == 16 and rec["correct"] == sum(rec["per_problem_correct"])
            assert rec["accuracy"] == pytest.approx(np.mean(rec["per_problem_correct"]))
            if method in expected:
                assert rec["per_problem_correct"] == pytest.approx(expected[method]), method
            if method in ("orm_bon", "majority"):
                assert rec["unanswered"] == sum(no_answer) and rec["unanswered_share"] == sum(no_answer) / 16
            if method == "q_beam":
                assert "unanswered_share" in rec
            if method in ("random_pick", "pass_at_n"):
                assert "unanswered" not in rec
        assert sum(no_answer) > 0  # the token limit left some problems without any answered sample
    # Shards run with their global ids merge back into the unsharded result, problem for problem.
    parts = [
        evaluate_search(
            policy,
            [prompts[j] for j in ids],
            [golds[j] for j in ids],
            TASK.grader,
            cfg,
            pav=policy,
            orm=policy,
            show_progress=False,
            prompt_ids=ids,
        )
        for ids in (list(range(0, 16, 2)), list(range(1, 16, 2)))
    ]
    merged = merge_search_results(parts)
    assert merged["problem_ids"] == list(range(16))
    for method, records in res["methods"].items():
        for whole, joined in zip(records, merged["methods"][method]):
            for key in ("per_problem_correct", "accuracy", "unanswered", "unanswered_share", "generated_tokens"):
                if key in whole:
                    assert joined[key] == pytest.approx(whole[key]), (method, key)


# ---- compare_curves -------------------------------------------------------------------------------------------------
def test_compare_curves_uses_the_baselines_running_best():
    # The baseline is best at its cheapest point and falls after it; the method never beats that point.
    method = [{"generated_tokens": 100, "accuracy": 0.5}, {"generated_tokens": 400, "accuracy": 0.55},
              {"generated_tokens": 1600, "accuracy": 0.58}]  # fmt: skip
    baseline = [{"generated_tokens": 100, "accuracy": 0.6}, {"generated_tokens": 400, "accuracy": 0.4},
                {"generated_tokens": 1600, "accuracy": 0.3}]  # fmt: skip
    out = compare_curves(method, baseline)
    assert out["accuracy_gain"] == pytest.approx(0.58 - 0.6) and out["baseline_accuracy"] == 0.6
    assert out["compute_ratio"] == pytest.approx(100 / 1600) and not out["ratio_is_lower_bound"]
    # A rising baseline: its running best is the curve itself, reached at 0.7 between 400 and 1600 on a log axis.
    rising = [{"generated_tokens": 100, "accuracy": 0.3}, {"generated_tokens": 400, "accuracy": 0.6},
              {"generated_tokens": 1600, "accuracy": 0.8}]  # fmt: skip
    out = compare_curves([{"generated_tokens": 200, "accuracy": 0.7}], rising)
    assert out["compute_ratio"] == pytest.approx(800 / 200) and out["accuracy_gain"] == pytest.approx(0.7 - 0.3)
    # Never reached: a lower bound from the baseline's largest compute.
    out = compare_curves([{"generated_tokens": 100, "accuracy": 0.9}], rising)
    assert out["ratio_is_lower_bound"] and out["compute_ratio"] == pytest.approx(16.0)
    # The method's points beyond the baseline's largest compute are not compared at unequal compute.
    longer = [*method, {"generated_tokens": 6400, "accuracy": 0.9}]
    assert compare_curves(longer, baseline)["gain_compute"] == 1600
    both = compare_to_baselines({"pav_beam": method, "orm_bon": rising, "majority": baseline})
    assert set(both) == {"orm_bon", "majority"} and both["majority"]["accuracy_gain"] == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="positive 'generated_tokens'"):
        compare_curves([{"generated_tokens": 0, "accuracy": 0.5}], baseline)


def test_compare_curves_treats_nearly_equal_compute_as_equal():
    # Two searches at the same budgets spend a few tokens more or fewer by chance (the demo's exact-value beams:
    # 44,023 against 44,025 and 88,015 against 87,956). The gain compares the same budget, not one budget lower.
    method = [{"generated_tokens": 22022, "accuracy": 0.633}, {"generated_tokens": 44023, "accuracy": 0.680},
              {"generated_tokens": 88015, "accuracy": 0.742}]  # fmt: skip
    baseline = [{"generated_tokens": 22019, "accuracy": 0.617}, {"generated_tokens": 44025, "accuracy": 0.680},
                {"generated_tokens": 87956, "accuracy": 0.734}]  # fmt: skip
    out = compare_curves(method, baseline)
    assert out["gain_compute"] == 88015 and out["accuracy_gain"] == pytest.approx(0.742 - 0.734)
    assert compare_curves(method[:2], baseline[:2])["accuracy_gain"] == pytest.approx(0.0)
    # Without the tolerance the cut falls one budget lower, as it did before.
    assert compare_curves(method[:2], baseline[:2], tolerance=0.0)["accuracy_gain"] == pytest.approx(0.680 - 0.617)
    # A real compute difference is not forgiven: a baseline point 4.5% dearer is not at equal compute.
    dearer = [*baseline[:2], {"generated_tokens": 46000, "accuracy": 0.9}]
    assert compare_curves(method[:2], dearer)["baseline_accuracy"] == pytest.approx(0.680)


def test_summarize_curve_intervals_and_monotone():
    flat = [{"n": n, "per_problem_correct": [1.0, 0.0, 1.0, 1.0]} for n in (6, 3, 12)]
    out = summarize_curve(flat)
    assert out["n"] == [3, 6, 12] and out["accuracy"] == [0.75] * 3 and out["monotone"]
    assert all(lo <= 0.75 <= hi for lo, hi in zip(out["low"], out["high"]))
    falling = [{"n": 3, "per_problem_correct": [1.0] * 40}, {"n": 12, "per_problem_correct": [1.0] * 5 + [0.0] * 35}]
    out = summarize_curve(falling)
    assert out["accuracy"] == [1.0, 0.125] and out["low"][0] == out["high"][0] == 1.0 and not out["monotone"]
    with pytest.raises(ValueError, match="missing at N = \\[3\\]"):
        summarize_curve([{"n": 3, "accuracy": 0.5}])


def test_merge_keeps_shard_order_when_ids_collide():
    def part(values):
        rec = {"n": 2, "accuracy": 0.0, "correct": sum(values), "per_problem_correct": values, "unanswered": 1}
        return {"methods": {"m": [rec]}, "num_problems": len(values), "problem_ids": list(range(len(values)))}

    merged = merge_search_results([part([1.0, 0.0]), part([0.0, 0.0, 1.0])])
    row = merged["methods"]["m"][0]
    assert row["per_problem_correct"] == [1.0, 0.0, 0.0, 0.0, 1.0] and "problem_ids" not in merged
    assert row["accuracy"] == 0.4 and row["unanswered"] == 2 and row["unanswered_share"] == 0.4
    broken = part([1.0])
    broken["num_problems"] = 2
    with pytest.raises(ValueError, match="per_problem_correct has 3 values for 4 problems"):
        merge_search_results([part([1.0, 0.0]), broken])


def test_beam_search_without_merging_samples_the_correct_state_more():
    # One correct derivation: a state's correct children coincide. Merged, they hold one beam and the other beam
    # takes a wrong child (oracle value 0), so each step has C = 3 tries at the correct one; unmerged, both beams sit
    # on the correct state whenever two children were correct, which gives 2C = 6 tries. With step error 0.6 that is
    # a failure chance of 0.6^3 = 0.22 against 0.6^6 = 0.05 per step, over 4-5 steps.
    policy = NoisyArithmeticPolicy(TASK, error_rate=0.6)
    prompts, golds = problems(60, seed=11)

    def accuracy(merge):
        cfg = BeamSearchConfig(budget=6, expansions=3, alpha=0.0, prover_k=1, merge_duplicates=merge)
        results = beam_search(policy, policy, prompts, cfg, answer_fn=answer_fn)
        return np.mean([grade(r.steps, g) for r, g in zip(results, golds)])

    merged, unmerged = accuracy(True), accuracy(False)
    assert BeamSearchConfig().merge_duplicates is False  # the paper's independent expansions
    assert unmerged >= merged + 0.1, (merged, unmerged)
    assert unmerged >= 0.7 and merged <= 0.65


def test_search_reads_answers_the_way_its_grader_does():
    """A trace ending "The answer is 7." is answered for math-verify's grader (its answer pattern reads it), so
    search selects it instead of counting the problem unanswered."""
    from trl_pav import MathVerifyGrader
    from trl_pav.generation.base import Generation
    from trl_pav.search import SearchEvalConfig, evaluate_search
    from trl_pav.steps import StepFormat

    class Writer:
        name, step_format = "writer", StepFormat("\n\n")

        def generate(self, requests, stop_at_step=False):
            full = ["3 + 4 = 7.", "The answer is 7."]
            out = []
            for r in requests:
                rest = full[len(r.steps) :]
                steps = rest[:1] if stop_at_step else rest
                out.append(Generation(steps, finished=len(r.steps) + len(steps) == 2, num_tokens=4))
            return out

    cfg = SearchEvalConfig(methods=["majority"], budgets=[2], seed=0)
    rec = evaluate_search(Writer(), ["What is 3 + 4?"], ["7"], MathVerifyGrader(timeout_seconds=None), cfg)
    row = rec["methods"]["majority"][0]
    assert row["unanswered"] == 0 and row["accuracy"] == 1.0
