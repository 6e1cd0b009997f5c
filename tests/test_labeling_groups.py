"""Labeling in request groups (issue 25): one vLLM request per prefix group with `n` and one seed, token-id prompts,
the fallback to single requests for every other policy (same seeds, so the same labels), grading overlapped with
generation, and vLLM sleep mode."""

import logging
import sys
import threading
import types
import zlib

import pytest

from trl_pav.generation import (
    Generation,
    GenerationGroup,
    GenerationRequest,
    GroupPolicy,
    generate_groups,
    member_seed,
    mix_seed,
)
from trl_pav.labeling import MCLabelConfig, MCLabeler
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import VLLMCompletion as Completion
from trl_pav.testing import VLLMRequestOutput as RequestOutput
from trl_pav.testing import VLLMSamplingParams as SamplingParams

TASK = ArithmeticTask()
SEP = TASK.step_format.separator
TRACE = ["1+2=3", "3*1=3"]  # every completion of the stand-in engine: these two steps, then an answer


def answer(seed: int) -> str:
    """The stand-in's answer for a sample seeded `seed`: right ("#### 3") for odd seeds, wrong for even ones."""
    return "#### 3" if seed % 2 else "#### 0"


class Engine:
    """Shaped like `vllm.LLM`: `generate(prompts, params)` answers each request with `params.n` completions, child k
    seeded `params.seed + k` as vLLM seeds the children of an `n > 1` request. The completion finishes the trace from
    wherever the prompt stands (steps of `TRACE` not yet taken, then the seed's answer), so every label is computable
    from the seeds alone."""

    def __init__(self, tokenizer, sleep_mode: bool | None = None):
        self.tokenizer, self.calls, self.sleeps = tokenizer, [], []
        if sleep_mode is not None:
            config = types.SimpleNamespace(enable_sleep_mode=sleep_mode)
            self.llm_engine = types.SimpleNamespace(model_config=config)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        outputs = []
        for prompt, p in zip(prompts, params):
            text = self.tokenizer.decode(prompt["prompt_token_ids"], skip_special_tokens=True)
            taken = sum(step + SEP in text for step in TRACE)
            rest = [*TRACE[taken:]]
            outs = []
            for k in range(p.n):
                body = SEP.join([*rest, answer(p.seed + k)])
                outs.append(Completion(body, list(range(len(body))), "stop", None))
            outputs.append(RequestOutput(outs))
        return outputs

    def sleep(self, level=1):
        self.sleeps.append(("sleep", level))

    def wake_up(self):
        self.sleeps.append(("wake_up",))


@pytest.fixture()
def vllm_policy(monkeypatch, char_tok):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    from trl_pav.generation.vllm import VLLMPolicy

    def make(**kw):
        engine = Engine(char_tok, kw.pop("sleep_mode", None))
        return VLLMPolicy(engine, TASK.step_format, name="stand-in", max_new_tokens=200, **kw), engine

    return make


def odd_fraction(seeds) -> float:
    seeds = list(seeds)
    return sum(s % 2 for s in seeds) / len(seeds)


def test_vllm_labeling_sends_one_request_per_prefix_group(vllm_policy, char_tok):
    policy, engine = vllm_policy()
    assert isinstance(policy, GroupPolicy)
    n_cov, n_mc, seed = 3, 5, 11
    problems = [{"prompt": f"Q:1+2*{k}?\n", "gold": "3"} for k in range(2)]
    cfg = MCLabelConfig(n_cov=n_cov, n_mc=n_mc, strategy="all", seed=seed, show_progress=False)
    ds = MCLabeler(policy, TASK.grader, cfg).label(problems)

    # Three engine calls: seed traces, root rollouts, prefix rollouts; one request per problem or per prefix.
    (seed_prompts, seed_params), (_, root_params), (prefix_prompts, prefix_params) = engine.calls
    assert [(p.n, p.seed) for p in seed_params] == [(n_cov, mix_seed(seed, i, 0)) for i in range(2)]
    assert [(p.n, p.seed) for p in root_params] == [(n_mc, mix_seed(seed, i, 2, zlib.crc32(b""))) for i in range(2)]
    # Both prefixes of a problem's trace, asked once each although n_cov traces share them.
    prefix_seeds = {
        (i, h): mix_seed(seed, i, 2, zlib.crc32(SEP.join(TRACE[:h]).encode())) for i in range(2) for h in (1, 2)
    }
    assert len(prefix_params) == 4
    assert sorted((p.n, p.seed) for p in prefix_params) == sorted((n_mc, s) for s in prefix_seeds.values())
    # Token-id prompts with one BOS (the char tokenizer adds it to plain text).
    first = seed_prompts[0]["prompt_token_ids"]
    assert first == [char_tok.bos_token_id, *char_tok(problems[0]["prompt"], add_special_tokens=False)["input_ids"]]
    assert all(ids["prompt_token_ids"].count(char_tok.bos_token_id) == 1 for ids in prefix_prompts)

    # Labels follow from vLLM's child seeds (group seed + k) alone.
    assert len(ds) == 2 * n_cov
    for row in ds:
        i, j = row["problem_index"], row["trace_index"]
        assert row["completions"] == [*TRACE, answer(mix_seed(seed, i, 0) + j)]
        root = mix_seed(seed, i, 2, 0)
        assert row["root_value"] == odd_fraction(range(root, root + n_mc))
        assert row["labels"][:2] == [odd_fraction(range(prefix_seeds[i, h], prefix_seeds[i, h] + n_mc)) for h in (1, 2)]
        assert row["labels"][2] == row["seed_outcome"] == (mix_seed(seed, i, 0) + j) % 2
        assert row["label_rollouts"] == [n_mc, n_mc, 0]


def test_vllm_group_extension_and_chat_rendered_prompts(vllm_policy, char_tok):
    policy, engine = vllm_policy()
    # Rollouts 4..6 of a prefix (a pit being confirmed): vLLM's children continue at seed + 4.
    out = policy.generate_groups([GenerationGroup("Q:1?\n", ("1+2=3",), seed=100, n=3, first=4)])
    (params,) = engine.calls[-1][1]
    assert (params.n, params.seed) == (3, 104)
    assert [g.steps[-1] for g in out[0]] == [answer(s) for s in (104, 105, 106)]
    assert all(g.finished for g in out[0])
    # A prompt rendered by a chat template already holds BOS: it is not added again.
    policy.generate([GenerationRequest("<s>Q:1?\n", seed=1)])
    ids = engine.calls[-1][0][0]["prompt_token_ids"]
    assert ids[0] == char_tok.bos_token_id and ids.count(char_tok.bos_token_id) == 1
    policy.rendered_prompts = False  # told the text is plain: the tokenizer's BOS is added, as asked
    policy.generate([GenerationRequest("<s>Q:1?\n", seed=1)])
    assert engine.calls[-1][0][0]["prompt_token_ids"][:2] == [char_tok.bos_token_id] * 2


def test_groups_fall_back_to_single_requests_with_the_old_per_rollout_seeds():
    """A policy without `generate_groups` (procedural task policies) gets n single requests per group, seeded
    `mix_seed(run seed, problem, stage, prefix id, r)`: the seeds (and so the labels) of per-request labeling."""

    class Recording(NoisyArithmeticPolicy):
        def __init__(self):
            super().__init__(TASK, 0.3)
            self._log = []

        def generate(self, requests, stop_at_step=False):
            self._log += list(requests)
            return super().generate(requests, stop_at_step)

    policy = Recording()
    cfg = MCLabelConfig(n_cov=2, n_mc=3, strategy="all", seed=4, show_progress=False)
    problems = TASK.problems_dataset(3, seed=9)
    ds = MCLabeler(policy, TASK.grader, cfg).label(problems)
    seeds = {r.seed for r in policy._log}
    expected = {mix_seed(4, i, 0, j) for i in range(3) for j in range(2)}
    for row in ds:
        i = row["problem_index"]
        for h in range(len(row["completions"]) + 1):
            if h == 0 or row["label_rollouts"][h - 1]:
                prefix_id = zlib.crc32(SEP.join(row["completions"][:h]).encode())
                expected |= {mix_seed(4, i, 2, prefix_id, r) for r in range(3)}
    assert seeds == expected
    assert len(policy._log) == len(seeds)  # no sample asked twice

    # The group helpers themselves.
    assert member_seed(mix_seed(1, 2, 3), 7) == mix_seed(1, 2, 3, 7)
    group = GenerationGroup("Q:2*3+4?\n", seed=5, n=2, first=3)
    assert [r.seed for r in group.requests()] == [member_seed(5, 3), member_seed(5, 4)]
    (gens,) = generate_groups(NoisyArithmeticPolicy(TASK, 0.3), [group])
    assert gens == NoisyArithmeticPolicy(TASK, 0.3).generate(group.requests())
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        GenerationGroup("Q:1?\n", n=0)
    with pytest.raises(ValueError, match="first must be an int >= 0, got -1"):
        GenerationGroup("Q:1?\n", first=-1)

    class Short(NoisyArithmeticPolicy):
        def generate_groups(self, groups, stop_at_step=False):
            return [[Generation()] for _ in groups]

    with pytest.raises(RuntimeError, match=r"returned 1 results for group 0 of 2 samples"):
        generate_groups(Short(TASK, 0.1), [GenerationGroup("Q:1?\n", n=2)])


class Chunked(NoisyArithmeticPolicy):
    """A procedural policy with a batch size: the labeler sends it batch-sized chunks. It signals each call."""

    batch_size = 6

    def __init__(self):
        super().__init__(TASK, 0.3)
        self._calls = 0
        self._second_call = threading.Event()

    def generate(self, requests, stop_at_step=False):
        self._calls += 1
        if self._calls == 2:
            self._second_call.set()
        return super().generate(requests, stop_at_step)


class WaitingGrader:
    """Grades like the task's grader; its first batch waits (up to `wait` s) for the policy's second generate call,
    which can only come while that batch is being graded if grading runs beside generation."""

    def __init__(self, policy: Chunked, wait: float):
        self.policy, self.wait, self.threads, self.overlapped = policy, wait, set(), None

    def grade(self, completion: str, gold: str) -> float:
        return TASK.grader.grade(completion, gold)

    def grade_batch(self, completions, golds):
        self.threads.add(threading.current_thread().name)
        if self.overlapped is None:
            self.overlapped = self.policy._second_call.wait(self.wait)
        return [self.grade(c, g) for c, g in zip(completions, golds)]


def test_grading_overlaps_generation_and_changes_nothing():
    problems = TASK.problems_dataset(4, seed=2)
    results = {}
    for background, wait in ((True, 10.0), (False, 0.2)):
        policy = Chunked()
        grader = WaitingGrader(policy, wait)
        cfg = MCLabelConfig(n_cov=2, n_mc=4, seed=1, show_progress=False, grade_in_background=background)
        ds = MCLabeler(policy, grader, cfg).label(problems)
        results[background] = (ds.to_list(), grader.overlapped, grader.threads)
    rows, overlapped, threads = results[True]
    assert overlapped is True and threads == {"mc-grading_0"}  # the first chunk was graded while the next generated
    serial_rows, serial_overlapped, serial_threads = results[False]
    assert serial_overlapped is False and serial_threads == {"MainThread"}
    assert rows == serial_rows
    # The same labels as the same policy unchunked (same seeds, another batching).
    cfg = MCLabelConfig(n_cov=2, n_mc=4, seed=1, show_progress=False)
    assert rows == MCLabeler(NoisyArithmeticPolicy(TASK, 0.3), TASK.grader, cfg).label(problems).to_list()


def test_vllm_sleep_and_wake(vllm_policy, caplog):
    policy, engine = vllm_policy(sleep_mode=True)
    assert policy.sleep() is True and engine.sleeps == [("sleep", 1)]
    policy.generate([GenerationRequest("Q:1?\n", seed=1)])  # wakes the engine first
    assert engine.sleeps == [("sleep", 1), ("wake_up",)] and policy.sleep_level == 0
    assert policy.wake_up() is False  # already awake: nothing sent
    assert policy.sleep(level=2) and engine.sleeps[-1] == ("sleep", 2)
    with pytest.raises(RuntimeError, match="slept at level 2 and dropped its weights"):
        policy.generate([GenerationRequest("Q:1?\n", seed=1)])
    with pytest.raises(ValueError, match="level must be 1 or 2, got 3"):
        policy.sleep(level=3)

    # An engine without sleep mode enabled, or without the methods: a no-op with a debug log.
    for kw in ({"sleep_mode": False}, {}):
        off, engine = vllm_policy(**kw)
        if not kw:
            engine.sleep = engine.wake_up = None
        with caplog.at_level(logging.DEBUG, logger="trl_pav.generation.vllm"):
            assert off.sleep() is False and off.wake_up() is False
        assert "no sleep mode enabled" in caplog.text
        assert engine.sleeps == []
        off.generate([GenerationRequest("Q:1?\n", seed=1)])


def test_sft_puts_its_rejection_sampling_engine_to_sleep(tmp_path, monkeypatch, math500_path):
    """`sft --rejection_sampling` frees the sampling engine's memory (vLLM sleep, level 2) before training."""
    import trl_pav.scripts.common as common
    from trl_pav.cli import main as cli
    from trl_pav.testing import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer()
    tiny_causal_lm(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    slept, real = [], common.load_stage_policy

    def sleepy_policy(*args, **kwargs):
        policy = real(*args, **kwargs)
        policy.sleep = lambda level=1: slept.append(level)  # what a VLLMPolicy offers
        return policy

    monkeypatch.setattr(common, "load_stage_policy", sleepy_policy)
    args = ["sft", "--model_name_or_path", str(tmp_path / "tiny"), "--dataset_name", math500_path, "--num_problems"]
    args += ["2", "--rejection_sampling", "--samples_per_problem", "1", "--max_new_tokens", "4", "--use_cpu", "true"]
    with pytest.raises(SystemExit, match="no correct trace"):  # a random tiny model solves nothing
        cli([*args, "--output_dir", str(tmp_path / "rft")])
    assert slept == [2]
