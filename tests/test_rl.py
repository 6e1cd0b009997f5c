import pytest
import torch
from datasets import Dataset

from trl_pav import StepFormat
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import cpu_rl_args, tiny_causal_lm
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, PAVRLOOConfig, PAVRLOOTrainer, grader_reward, locate_steps

TASK = ArithmeticTask()


class TableScorer:
    """Returns fixed values per step list (a stand-in verifier with known outputs)."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def score(self, prompts, steps):
        self.calls.append([list(s) for s in steps])
        return [self.table[tuple(s)] for s in steps]


def test_locate_steps(char_tok, bpe_tok):
    fmt = StepFormat()
    ids = char_tok("12+3=15\n15*2=30\n#### 30", add_special_tokens=False)["input_ids"]
    steps, owner = locate_steps(char_tok, ids, fmt, finished=True)
    assert steps == ["12+3=15", "15*2=30", "#### 30"]
    assert owner == [0] * 7 + [1] * 8 + [2] * 8
    # Truncated: the trailing piece is not a step.
    steps, owner = locate_steps(char_tok, ids[:18], fmt, finished=False)
    assert steps == ["12+3=15", "15*2=30"] and owner == [0] * 7 + [1] * 8 + [-1] * 3
    assert locate_steps(char_tok, ids[:5], fmt, finished=False) == ([], [-1] * 5)
    # BPE: multi-character tokens; each step's last token is the one holding its last character.
    text = "First add: 12+3=15.\nThen double it: 30.\nThe answer is 30."
    ids = bpe_tok(text, add_special_tokens=False)["input_ids"]
    steps, owner = locate_steps(bpe_tok, ids, fmt, finished=True)
    assert steps == text.split("\n")
    decoded = [bpe_tok.decode([i for i, o in zip(ids, owner) if o == h]) for h in range(3)]
    assert decoded[0] == "First add: 12+3=15." and decoded[1].strip() == "Then double it: 30."
    assert owner == sorted(owner) and -1 not in owner


@pytest.mark.parametrize("canonical", [True, False])
def test_locate_steps_keeps_a_split_character_in_its_step(bpe_tok, canonical):
    """A byte-level BPE splits a multi-byte character (emoji, CJK) over several tokens; every one of them belongs to
    the step the character ends, so the tokens a step owns decode to exactly its text (after the separator)."""
    fmt = StepFormat()
    steps = ["héllo 😀", "世界 ≤ 3", "ok 界"]
    enc = lambda s: bpe_tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    if canonical:
        ids = enc("\n".join(steps))
    else:  # a sampled tokenization: every piece tokenized on its own (the emoji's bytes split differently)
        ids = [i for piece in ["hé", "llo ", "😀", "\n世", "界 ≤ 3", "\nok ", "界"] for i in enc(piece)]
    ids = [*ids, bpe_tok.eos_token_id]
    found, owner = locate_steps(bpe_tok, ids, fmt, finished=True)
    assert found == steps
    owned = [bpe_tok.decode([i for i, o in zip(ids, owner) if o == h]) for h in range(len(steps))]
    assert owned == [steps[0], *("\n" + s for s in steps[1:])]
    assert owner[-1] == -1  # the EOS token carries the outcome term only


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = TASK.tokenizer()
    path = tmp_path_factory.mktemp("policy")
    tiny_causal_lm(tok, seed=0, hidden_size=32).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def rl_args(cls, tmp_path, **kw):
    return cpu_rl_args(cls, tmp_path / "rl", **kw)


def dataset(n=8):
    probs = TASK.sample_problems(n, seed=0)
    return Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})


def grpo_with(scorer, policy_dir, tmp_path, **kw):
    """A PAV-GRPO trainer on the test policy with `scorer` as its verifier (α = 2, K = 1 unless overridden)."""
    return PAVGRPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=scorer,
        args=rl_args(PAVGRPOConfig, tmp_path, **{"pav_alpha": 2.0, "prover_k": 1, **kw}),
        train_dataset=dataset(),
        processing_class=TASK.tokenizer(),
    )


def test_dense_advantages_hand_computed(policy_dir, tmp_path):
    tok = TASK.tokenizer()
    scorer = TableScorer({("1+1=2", "#### 2"): [0.5, 0.75, 1.0], ("2*3=7",): [0.4, 0.0]})
    trainer = grpo_with(scorer, policy_dir, tmp_path)
    rows = ["1+1=2\n#### 2", "2*3=7\n#", "2*"]  # finished; truncated after one step; no complete step
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]
    ids[0] = ids[0] + [tok.eos_token_id]
    width = max(len(x) for x in ids) + 2
    completion_ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    outcome = torch.tensor([1.0, -0.5, -0.5])
    out = trainer._pav_advantages(
        [{"prompt": "Q:1+1?\n"}, {"prompt": "Q:2*3?\n"}, {"prompt": "Q:2*3?\n"}],
        {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome},
    )
    assert out.shape == (3, width)
    # Row 0: step "1+1=2" (5 tokens) gains 0.25, step "\n#### 2" (7 tokens) gains 0.25; EOS gets the outcome only.
    expected0 = [1.0 + 2 * 0.25] * 5 + [1.0 + 2 * 0.25] * 7 + [1.0] + [0.0] * (width - 13)
    # Row 1: step "2*3=7" loses 0.4; the truncated "\n#" is no step: outcome only.
    expected1 = [-0.5 - 2 * 0.4] * 5 + [-0.5] * 2 + [0.0] * (width - 7)
    expected2 = [-0.5] * 2 + [0.0] * (width - 2)
    assert torch.allclose(out, torch.tensor([expected0, expected1, expected2]))
    # With outcome rewards known, a finished completion's EOS is a terminal step: f(outcome) - f(Q after last step).
    trainer._last_rewards = torch.tensor([[0.0], [0.0], [0.0]])  # row 0 ended wrong despite Q = 1.0 after "#### 2"
    terminal = trainer._pav_advantages(
        [{"prompt": "Q:1+1?\n"}, {"prompt": "Q:2*3?\n"}, {"prompt": "Q:2*3?\n"}],
        {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome},
    )
    assert terminal[0, 12] == pytest.approx(1.0 + 2 * (0.0 - 1.0))  # the EOS token pays for the wrong ending
    assert torch.allclose(terminal[:, :12], out[:, :12]) and torch.allclose(terminal[1:], out[1:])
    trainer._last_rewards = None
    assert scorer.calls[-1] == [["1+1=2", "#### 2"], ["2*3=7"]]  # the step-less row is not scored
    # alpha = 0: exactly the parent's advantages on every token.
    trainer.args.pav_alpha = 0.0
    out0 = trainer._pav_advantages(
        [{"prompt": "p"}] * 3, {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
    )
    assert torch.allclose(out0, outcome[:, None] * mask)
    # Ablation: Q^mu instead of A^mu.
    trainer.args.pav_alpha, trainer.args.process_reward = 1.0, "q_value"
    outq = trainer._pav_advantages(
        [{"prompt": "p"}] * 3, {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
    )
    assert outq[0, 0] == pytest.approx(1.0 + 0.75) and outq[1, 0] == pytest.approx(-0.5 + 0.0)
    # Ablation: Q^mu summed to the end as dense rewards (step 1 of row 0: 0.75 + 1.0; its step 2: 1.0).
    trainer.args.process_reward = "q_value_to_go"
    outg = trainer._pav_advantages(
        [{"prompt": "p"}] * 3, {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
    )
    assert outg[0, 0] == pytest.approx(1.0 + 1.75) and outg[0, 5] == pytest.approx(1.0 + 1.0)
    assert outg[1, 0] == pytest.approx(-0.5 + 0.0)
    # With the outcome known, a finished row's terminal step (its EOS) joins every return: row 0 ended wrong (0).
    trainer._last_rewards = torch.tensor([[0.0], [0.0], [0.0]])
    outt = trainer._pav_advantages(
        [{"prompt": "p"}] * 3, {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
    )
    assert outt[0, 0] == pytest.approx(1.0 + 1.75 + 0.0) and outt[0, 12] == pytest.approx(1.0 + 0.0)
    trainer._last_rewards = None


def test_steps_beyond_the_verifiers_length_get_the_outcome_term_only(policy_dir, tmp_path):
    """A sampled completion longer than the verifier reads does not stop training: its leading steps that fit are
    scored, the others (and its EOS, which no longer follows a scored step) carry the outcome advantage alone."""

    class ShortScorer(TableScorer):
        def steps_that_fit(self, prompt, steps):  # as PAVVerifier.steps_that_fit: here one step fits
            return min(len(steps), 1)

    tok = TASK.tokenizer()
    scorer = ShortScorer({("1+1=2",): [0.5, 0.75]})
    trainer = grpo_with(scorer, policy_dir, tmp_path)
    ids = tok("1+1=2\n#### 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    completion_ids, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
    trainer._last_rewards = torch.tensor([[1.0]])
    out = trainer._pav_advantages(
        [{"prompt": "Q:1+1?\n"}], {"completion_ids": completion_ids, "completion_mask": mask,
                                   "advantages": torch.tensor([1.0])},
    )  # fmt: skip
    assert scorer.calls[-1] == [["1+1=2"]]
    assert torch.allclose(out[0, :5], torch.full((5,), 1.0 + 2 * 0.25))  # the step that fits: 0.5 -> 0.75
    assert torch.allclose(out[0, 5:], torch.ones(len(ids) - 5))  # the rest and the EOS: outcome only
    mode = "train" if trainer.model.training else "eval"
    assert trainer._metrics[mode]["pav/steps_beyond_verifier"][-1] == 1.0


def test_a_learned_verifiers_reads_are_logged_as_compute(policy_dir, tmp_path):
    """A verifier that counts the tokens it reads (`verifier_tokens`, as `PAVVerifier`) has each scoring call's
    count logged per completion (`pav/verifier_tokens_per_completion`), which `GeneratedTokensCallback` turns back
    into the step's total; a scorer that counts none logs nothing."""
    from trl_pav.evaluation import GeneratedTokensCallback

    class ReadingScorer(TableScorer):
        verifier_tokens = 0

        def score(self, prompts, steps):
            self.verifier_tokens += 7 * len(steps)  # a known count per trace
            return super().score(prompts, steps)

    class ReadingGoldScorer(ReadingScorer):  # grades against gold answers: the trainer's other scoring path
        needs_gold = True

        def score(self, prompts, steps, golds):
            return super().score(prompts, steps)

    tok = TASK.tokenizer()
    ids = tok("1+1=2\n#### 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = {"completion_ids": torch.tensor([ids, ids]), "completion_mask": torch.ones(2, len(ids), dtype=torch.long),
             "advantages": torch.tensor([1.0, 1.0])}  # fmt: skip
    table = {("1+1=2", "#### 2"): [0.5, 0.75, 1.0]}
    logged = {}
    for name, scorer in (("reads", ReadingScorer(table)), ("reads_with_golds", ReadingGoldScorer(table)),
                         ("silent", TableScorer(table))):  # fmt: skip
        trainer = grpo_with(scorer, policy_dir, tmp_path / name)
        trainer._last_rewards = torch.tensor([[1.0], [1.0]])
        trainer._pav_advantages([{"prompt": "Q:1+1?\n", "gold": "2"}] * 2, batch)
        metrics = trainer._metrics["train" if trainer.model.training else "eval"]
        logged[name] = metrics.get("pav/verifier_tokens_per_completion")
    # 14 tokens over the batch's 2 completions, whichever path scored them
    assert logged["reads"] == logged["reads_with_golds"] == [7.0] and not logged["silent"]
    spent = GeneratedTokensCallback(completions_per_step=2)
    read = logged["reads"][0]
    spent.record(1, {"completions/mean_length": float(len(ids)), "pav/verifier_tokens_per_completion": read})
    assert spent.per_step == [(1, 2 * len(ids), 0, 14)] and spent.tokens_at(1) == 2 * len(ids) + 14


def test_token_level_advantages_reach_grpo_loss(policy_dir, tmp_path):
    """Regression: GRPO's loss must use (B, T) advantages per token (TRL may change this; we must notice)."""
    tok = TASK.tokenizer()
    trainer = PAVGRPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=NoisyArithmeticPolicy(TASK, 0.2),
        args=rl_args(PAVGRPOConfig, tmp_path, beta=0.0),
        train_dataset=dataset(),
        processing_class=tok,
    )
    prompt = tok(["Q:1+2?\n"] * 2, return_tensors="pt")
    comp = tok(["1+2=3\n#", "1+2=4\n#"], add_special_tokens=False, return_tensors="pt")
    inputs = {
        "prompt_ids": prompt["input_ids"],
        "prompt_mask": prompt["attention_mask"],
        "completion_ids": comp["input_ids"],
        "completion_mask": comp["attention_mask"],
        "num_items_in_batch": comp["attention_mask"].sum(),
    }
    flat = torch.tensor([1.0, 0.5])
    loss_1d = trainer._compute_loss(trainer.model, {**inputs, "advantages": flat})
    loss_2d = trainer._compute_loss(
        trainer.model, {**inputs, "advantages": flat[:, None].expand_as(comp["input_ids"]).clone()}
    )
    assert torch.allclose(loss_1d, loss_2d)
    tokenwise = flat[:, None].expand_as(comp["input_ids"]).clone()
    tokenwise[:, 3:] = 0.0
    assert not torch.allclose(trainer._compute_loss(trainer.model, {**inputs, "advantages": tokenwise}), loss_1d)


@pytest.mark.parametrize(
    ("trainer_cls", "config_cls"), [(PAVGRPOTrainer, PAVGRPOConfig), (PAVRLOOTrainer, PAVRLOOConfig)]
)
def test_training_changes_policy_and_logs_monitoring(policy_dir, tmp_path, trainer_cls, config_cls):
    tok = TASK.tokenizer()
    oracle = NoisyArithmeticPolicy(TASK, 0.2)  # exact values as the verifier
    trainer = trainer_cls(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=oracle,
        args=rl_args(config_cls, tmp_path, pav_alpha=3.0, prover_k=4, beta=0.04),
        train_dataset=dataset(),
        processing_class=tok,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = sum(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed > 0
    logged = set().union(*(e.keys() for e in trainer.state.log_history))
    for key in (
        "pav/outcome_advantage_abs",
        "pav/process_term_per_completion",
        "pav/process_outcome_corr",
        "pav/steps_per_completion",
        "pav/step_length_tokens",
        "pav/process_reward_corr",
    ):
        assert key in logged, (key, sorted(logged))


def test_rejects_sequence_level_losses(tmp_path):
    with pytest.raises(ValueError, match="loss_type='vespo' assumes one advantage per sequence"):
        rl_args(PAVGRPOConfig, tmp_path, loss_type="vespo")
    with pytest.raises(ValueError, match="importance_sampling_level='sequence'"):
        rl_args(PAVGRPOConfig, tmp_path, importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="process_reward must be"):
        rl_args(PAVRLOOConfig, tmp_path, process_reward="return")


def test_needs_a_verifier(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a verifier"):
        PAVGRPOTrainer(
            policy_dir,
            [grader_reward(TASK.grader)],
            args=rl_args(PAVGRPOConfig, tmp_path),
            train_dataset=dataset(),
            processing_class=TASK.tokenizer(),
        )


def test_token_char_ends_fast_path_equals_prefix_decoding(char_tok, bpe_tok):
    from trl_pav.trainers.pav_rl import token_char_ends

    def by_prefixes(tok, ids):
        return [len(tok.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]

    for tok in (char_tok, bpe_tok):
        for text in ("12+3=15\n15*2=30\n#### 30", "First, add: 12+3=15.\nThe answer is 15.", "é€ x\n\ny"):
            ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            assert token_char_ends(tok, ids) == by_prefixes(tok, ids)
    # A non-canonical BPE tokenization (" answer" as single characters) takes the exact fallback path.
    odd = bpe_tok("The", add_special_tokens=False)["input_ids"] + [bpe_tok.convert_tokens_to_ids(c) for c in "Ġans"]
    assert bpe_tok("The ans", add_special_tokens=False)["input_ids"] != odd
    assert token_char_ends(bpe_tok, odd) == by_prefixes(bpe_tok, odd)


def test_non_canonical_completions_take_the_linear_path_and_keep_each_step_whole(bpe_tok, monkeypatch):
    """A sampled tokenization that re-tokenizing does not reproduce (pieces tokenized apart, multi-byte characters
    split differently) is detokenized incrementally, not prefix by prefix, and every step still owns exactly its
    text."""
    import random

    from trl_pav.trainers import pav_rl

    monkeypatch.setattr(bpe_tok, "batch_decode", lambda *a, **k: pytest.fail("took the quadratic prefix-decoding path"))
    rng = random.Random(0)
    alphabet = ["a", "b", " ", "7", "=", "+", "é", "😀", "世", "界", "≤", "π", "."]
    fmt = StepFormat()
    for _ in range(20):
        steps = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))).strip() or "x" for _ in range(4)]
        text = "\n".join(steps)
        cuts = sorted(rng.sample(range(1, len(text)), k=min(6, len(text) - 1)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        ids = [i for piece in pieces for i in bpe_tok(piece, add_special_tokens=False)["input_ids"]]
        ids.append(bpe_tok.eos_token_id)
        found, owner = pav_rl.locate_steps(bpe_tok, ids, fmt, finished=True)
        assert found == [s for s in steps]
        owned = [bpe_tok.decode([i for i, o in zip(ids, owner) if o == h]) for h in range(len(steps))]
        assert owned == [steps[0], *("\n" + s for s in steps[1:])], (pieces, owned)
    # Cut inside a multi-byte character (at the token limit): the whole steps before it keep their text.
    ids = [i for p in ["ab", " c", "\nd", "e 😀"] for i in bpe_tok(p, add_special_tokens=False)["input_ids"]]
    found, owner = pav_rl.locate_steps(bpe_tok, ids[:-1], fmt, finished=False)
    assert found == ["ab c"] and bpe_tok.decode([i for i, o in zip(ids, owner) if o == 0]) == "ab c"


def test_pav_metrics_run_the_same_collectives_with_or_without_steps():
    """Every process must join the same gathers whatever its completions hold: a process with no complete step that
    skipped one made the next collective mismatch (two processes, ZeRO-3, in tests/test_deepspeed.py)."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl_pav.trainers.pav_rl import PAVRLMixin

    def collectives(n_steps: int) -> tuple[int, dict]:
        calls = []

        def gather(t):
            calls.append(t.shape)
            return t

        fake = SimpleNamespace(
            model=SimpleNamespace(training=True),
            accelerator=SimpleNamespace(gather=gather, process_index=0),
            _metrics={"train": defaultdict(list)},
            _last_rewards=torch.tensor([[0.0], [1.0]]),
            verifier=SimpleNamespace(verifier_tokens=0, stats=SimpleNamespace(rollout_tokens=0)),  # counts both
            _pav_spent={"rollout": 3 * n_steps, "verifier": 4 * n_steps},
        )
        process = torch.zeros(2, max(n_steps, 1))
        step_mask = torch.zeros_like(process, dtype=torch.bool)
        step_mask[0, :n_steps] = True
        process[0, :n_steps] = 0.5
        steps = [["1+2=3"] * n_steps, []]
        owners = [[0] * 3 if n_steps else [-1] * 3, [-1] * 3]
        PAVRLMixin._log_pav(fake, torch.tensor([0.1, -0.1]), process, step_mask, torch.ones(2, 3), steps, owners)
        return calls, fake._metrics["train"]

    with_steps, metrics = collectives(2)
    without_steps, empty_metrics = collectives(0)
    assert with_steps == without_steps  # same gathers, same shapes
    assert metrics["pav/process_term_per_step"] == [0.5] and "pav/process_term_per_step" not in empty_metrics
    # Compute per completion over the (here one) process: 2 steps x 4 read tokens over 2 completions.
    assert metrics["pav/verifier_tokens_per_completion"] == [4.0] and metrics["pav/rollout_tokens_per_completion"] == [
        3.0
    ]
    assert empty_metrics["pav/verifier_tokens_per_completion"] == [0.0]


def test_truncated_terminal_charges_a_cut_completion_its_outcome(policy_dir, tmp_path):
    """A completion cut at max_completion_length: off (the default), its tail has no process term; with
    `truncated_terminal`, the tokens after its last whole step carry the drop from the last value to the outcome."""
    tok = TASK.tokenizer()
    scorer = TableScorer({("2*3=6",): [0.4, 0.6]})
    row = "2*3=6\n#"  # one whole step, then the start of the next: cut
    ids = tok(row, add_special_tokens=False)["input_ids"]
    completion_ids, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
    outcome = torch.tensor([-0.5])
    for flag, tail in ((False, -0.5), (True, -0.5 + 2 * (0.0 - 0.6))):
        trainer = PAVGRPOTrainer(
            policy_dir,
            [grader_reward(TASK.grader)],
            verifier=scorer,
            args=rl_args(
                PAVGRPOConfig, tmp_path, pav_alpha=2.0, prover_k=1, max_completion_length=len(ids),
                truncated_terminal=flag,
            ),
            train_dataset=dataset(),
            processing_class=tok,
        )  # fmt: skip
        trainer._last_rewards = torch.tensor([[0.0]])  # graded wrong as cut
        out = trainer._pav_advantages(
            [{"prompt": "Q:2*3?\n"}], {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
        )
        assert torch.allclose(out[0, :5], torch.full((5,), -0.5 + 2 * 0.2))  # the step: 0.4 -> 0.6
        assert torch.allclose(out[0, 5:], torch.full((len(ids) - 5,), tail)), (flag, out)
    # A completion shorter than the limit is not cut: the flag changes nothing there.
    trainer.args.max_completion_length = len(ids) + 5
    out = trainer._pav_advantages(
        [{"prompt": "Q:2*3?\n"}], {"completion_ids": completion_ids, "completion_mask": mask, "advantages": outcome}
    )
    assert torch.allclose(out[0, 5:], torch.full((len(ids) - 5,), -0.5))


def test_a_completion_without_a_whole_step_is_charged_from_the_root(policy_dir, tmp_path):
    """An empty completion (EOS only) and, with `truncated_terminal`, a cut one with no whole step (padding) get the
    terminal step from the root's value to their outcome. Before, they carried no process term, while a whole
    failing trace's terms sum to f(0) - f(V_root) < 0: RL learned to write nothing (or pad) under a strong prover."""
    tok = TASK.tokenizer()
    scorer = TableScorer({(): [0.7], ("2*3=6",): [0.7, 0.9]})
    outcome = torch.tensor([0.0])
    eos = [tok.eos_token_id]
    pad = tok("\n\n\n", add_special_tokens=False)["input_ids"]  # separators only: no step
    for ids, flag, expected in ((eos, False, 2 * (0.0 - 0.7)), (pad, True, 2 * (0.0 - 0.7)), (pad, False, 0.0)):
        trainer = grpo_with(scorer, policy_dir, tmp_path, max_completion_length=len(ids), truncated_terminal=flag)
        trainer._last_rewards = torch.tensor([[0.0]])
        out = trainer._pav_advantages(
            [{"prompt": "Q:2*3?\n"}],
            {
                "completion_ids": torch.tensor([ids]),
                "completion_mask": torch.ones(1, len(ids), dtype=torch.long),
                "advantages": outcome,
            },
        )
        assert torch.allclose(out[0], torch.full((len(ids),), expected)), (ids, flag, out)
    # A whole failing trace pays the same in all: its step (0.7 -> 0.9) then its EOS (0.9 -> 0), summing to -0.7 x α.
    ids = tok("2*3=6", add_special_tokens=False)["input_ids"] + eos
    out = trainer._pav_advantages(
        [{"prompt": "Q:2*3?\n"}],
        {
            "completion_ids": torch.tensor([ids]),
            "completion_mask": torch.ones(1, len(ids), dtype=torch.long),
            "advantages": outcome,
        },
    )
    assert torch.allclose(out[0, :5], torch.full((5,), 2 * 0.2)) and torch.allclose(out[0, 5:], torch.tensor([-1.8]))


def test_a_stepless_completion_whose_prompt_the_verifier_cannot_read_gets_the_outcome_term(policy_dir, tmp_path):
    """A learned verifier cannot read the root of a prompt longer than its `max_length` (`PAVVerifier.root_fits`):
    an EOS-only completion of such a prompt gets no terminal step, rather than stopping training."""
    from trl_pav import PAVMetadata, PAVVerifier
    from trl_pav.testing import tiny_token_classifier

    tok = TASK.tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), max_length=12)
    trainer = grpo_with(verifier, policy_dir, tmp_path)
    ids = [tok.eos_token_id]
    trainer._last_rewards = torch.tensor([[0.0], [0.0]])
    batch = {
        "completion_ids": torch.tensor([ids, ids]),
        "completion_mask": torch.ones(2, 1, dtype=torch.long),
        "advantages": torch.tensor([0.25, 0.25]),
    }
    out = trainer._pav_advantages([{"prompt": "Q:" + "1+" * 20 + "1?\n"}, {"prompt": "Q:1+1?\n"}], batch)
    assert out[0, 0] == pytest.approx(0.25)  # too long to read: outcome only
    root = verifier.score(["Q:1+1?\n"], [[]])[0][0]
    assert out[1, 0] == pytest.approx(0.25 + trainer.args.pav_alpha * (0.0 - root), abs=1e-5)  # charged from the root
