"""Reusing samples and scores across methods and budgets changes what runs, never what a method gets or is charged."""

import json

from trl_pav.generation import GenerationRequest
from trl_pav.search import ReusingPolicy, ReusingScorer, SearchEvalConfig, evaluate_search
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy

TASK = ArithmeticTask(min_ops=3, max_ops=4)


class CountingPolicy:
    """The noisy arithmetic policy, counting the requests it really serves."""

    def __init__(self, error_rate):
        self.inner = NoisyArithmeticPolicy(TASK, error_rate)
        self.name, self.step_format, self.served = "counting", self.inner.step_format, 0

    def generate(self, requests, stop_at_step=False):
        self.served += len(requests)
        return self.inner.generate(requests, stop_at_step=stop_at_step)


class CountingScorer:
    """Exact values of the noisy policy; reads 5 tokens per prompt and 3 per step (not proportional to characters)."""

    def __init__(self, error_rate):
        self.inner = NoisyArithmeticPolicy(TASK, error_rate)
        self.verifier_tokens, self.scored = 0, 0

    def trace_tokens(self, prompt, steps):
        return 5 + 3 * len(steps)

    def score(self, prompts, steps):
        self.scored += len(prompts)
        self.verifier_tokens += sum(self.trace_tokens(p, st) for p, st in zip(prompts, steps))
        return self.inner.score(prompts, steps)


class BatchCountingScorer(CountingScorer):
    """Counts tokens per batch only (no `trace_tokens`): reuse falls back to a share by characters."""

    trace_tokens = None

    def score(self, prompts, steps):
        self.scored += len(prompts)
        self.verifier_tokens += sum(len(p) + sum(len(s) for s in st) + 1 for p, st in zip(prompts, steps))
        return self.inner.score(prompts, steps)


def run(reuse: bool):
    policy, pav, orm = CountingPolicy(0.3), CountingScorer(0.3), CountingScorer(0.3)
    problems = TASK.sample_problems(10, seed=5)
    cfg = SearchEvalConfig(budgets=[3, 6, 12], reuse_samples=reuse)
    prompts, golds = [p.prompt for p in problems], [p.gold for p in problems]
    out = evaluate_search(policy, prompts, golds, TASK.grader, cfg, pav, orm, show_progress=False)
    return out, policy, pav


def test_reuse_gives_every_method_the_same_picks_and_compute():
    plain, plain_policy, plain_pav = run(reuse=False)
    reused, reused_policy, reused_pav = run(reuse=True)
    for method, records in plain["methods"].items():
        for a, b in zip(records, reused["methods"][method]):
            for field in ("per_problem_correct", "generated_tokens", "sampled_steps", "verifier_tokens", "n"):
                assert a[field] == b[field], (method, a["n"], field)
    # Q-only beam, the smaller budgets and the best-of-N samples below the largest N were served from the store.
    assert reused_policy.served < 0.6 * plain_policy.served
    assert reused_pav.scored < 0.6 * plain_pav.scored


def test_reusing_policy_serves_each_distinct_request_once():
    policy = CountingPolicy(0.3)
    reusing = ReusingPolicy(policy)
    prompt = TASK.sample_problems(1, seed=1)[0].prompt
    first = reusing.generate([GenerationRequest(prompt, seed=s) for s in (1, 2, 1)])
    again = reusing.generate([GenerationRequest(prompt, seed=2)], stop_at_step=False)
    step = reusing.generate([GenerationRequest(prompt, seed=2)], stop_at_step=True)  # a different request
    assert policy.served == 3 and reusing.reused == 2
    assert first[0] == first[2] and again[0] == first[1] and len(step[0].steps) == 1
    again[0].steps.append("changed")  # a caller's change does not reach the store
    assert reusing.generate([GenerationRequest(prompt, seed=2)])[0] == first[1]
    assert reusing.name == "counting"  # attributes come from the wrapped policy


def test_reusing_scorer_charges_repeats_like_the_wrapped_scorer():
    prompts, steps = ["Q:1+2*3?\n"] * 3, [[], ["2*3=6"], ["2*3=6"]]
    for inner in (CountingScorer(0.3), BatchCountingScorer(0.3)):
        # The per-trace count where the scorer has one; else its batch count split by characters (exact here).
        cost = inner.trace_tokens or (lambda p, s: len(p) + sum(map(len, s)) + 1)
        scorer = ReusingScorer(inner)
        values = scorer.score(prompts, steps)
        assert values == inner.inner.score(prompts, steps) and inner.scored == 2
        assert scorer.verifier_tokens == sum(cost(p, s) for p, s in zip(prompts, steps))
        before = scorer.verifier_tokens
        assert scorer.score(prompts[:1], steps[1:2]) == values[1:2] and inner.scored == 2
        assert scorer.verifier_tokens - before == cost(prompts[0], steps[1])


def test_wrappers_copy_and_keep_text_and_message_prompts_apart():
    import copy
    import pickle

    policy = ReusingPolicy(CountingPolicy(0.3))
    assert copy.copy(policy).name == "counting" and pickle.loads(pickle.dumps(ReusingScorer(CountingScorer(0.3))))
    prompt = "Q:1+2?\n"

    class KindScorer:  # 1.0 for a text prompt, 0.0 for a message list
        def score(self, prompts, steps):
            return [[float(isinstance(p, str))] for p in prompts]

    scorer = ReusingScorer(KindScorer())
    messages = [{"role": "user", "content": prompt}]
    text = json.dumps(messages, sort_keys=True)  # a text prompt that reads like the message list's serialisation
    assert scorer.score([text, messages, messages], [[], [], []]) == [[1.0], [0.0], [0.0]]
    assert scorer.score([text], [[]]) == [[1.0]] and scorer.reused == 2
    # A request built with a list of steps is keyed like the tuple it stands for.
    a = policy.generate([GenerationRequest(prompt, steps=["1+2=3"], seed=1)])
    b = policy.generate([GenerationRequest(prompt, steps=("1+2=3",), seed=1)])
    assert a == b and policy.reused == 1


def test_verifier_trace_tokens_add_up_to_what_a_batch_reads():
    from trl_pav import PAVMetadata, PAVVerifier
    from trl_pav.testing import char_tokenizer, tiny_token_classifier

    tok = char_tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok, seed=2), tok, PAVMetadata(prover_k=4))
    prompts, steps = ["Q:1+2*3?\n", "Q:4-1?\n", "Q:2*2?\n"], [["2*3=6", "1+6=7"], [], ["2*2=4", "#### 4"]]
    verifier.score(prompts, steps)
    assert verifier.verifier_tokens == sum(verifier.trace_tokens(p, s) for p, s in zip(prompts, steps)) > 0


def test_reuse_is_refused_under_several_processes(monkeypatch):
    import pytest

    from trl_pav.distributed import Lockstep

    monkeypatch.setattr(Lockstep, "world_size", property(lambda self: 2))
    policy = CountingPolicy(0.3)
    with pytest.raises(ValueError, match="reuse_samples needs one process"):
        evaluate_search(
            policy, ["Q:1+2?\n"], ["3"], TASK.grader, SearchEvalConfig(methods=["majority"], reuse_samples=True)
        )
