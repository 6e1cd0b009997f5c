"""Public-PRM adapters: equal to each model card's own per-trace recipe, loadable by Hub id, usable in search and RL."""

import shutil

import pytest
import torch
from datasets import Dataset

from trl_pav import StepFormat
from trl_pav.prm_adapters import MathShepherdPRM, QwenMathPRM, RLHFlowPRM, load_public_prm
from trl_pav.reward_funcs import scorer_reward_func
from trl_pav.search import BeamSearchConfig, beam_search, best_of_n, sample_candidates
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_causal_lm, tiny_public_prm
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

TASK = ArithmeticTask()
ADAPTERS = {"qwen-prm": QwenMathPRM, "math-shepherd": MathShepherdPRM, "rlhflow": RLHFlowPRM}
PROMPTS = ["What is 12+3*2?", "2*3?", "Compute 7-1."]
STEPS = [["3*2=6", "12+6=18", "The answer is 18"], ["2*3=6"], ["7-1=6", "#### 6"]]


def reference_qwen(model, tok, prompt, steps):
    """Qwen2.5-Math-PRM's model-card recipe, one trace at a time."""
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    ids = torch.tensor([tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))])
    logits = model(input_ids=ids).logits
    probs = torch.softmax(logits, dim=-1)[..., 1]
    return probs[ids == tok.encode("<extra_0>", add_special_tokens=False)[0]].tolist()


def reference_shepherd(model, tok, prompt, steps):
    """Math-Shepherd's model-card recipe, one trace at a time."""
    output = "\n".join(f"Step {h + 1}: {s} ки" for h, s in enumerate(steps))
    ids = torch.tensor([tok.encode(f"{prompt} {output}")])
    candidates = [tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]]
    scores = model(ids).logits[:, :, candidates].softmax(dim=-1)[:, :, 0]
    return scores[ids == tok.encode("ки", add_special_tokens=False)[-1]].tolist()


def reference_rlhflow(model, tok, prompt, steps):
    """RLHFlow's recipe: one forward per step over the chat up to that step, read where '+' is predicted."""
    plus, minus = tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]
    out, conversation = [], []
    for h, step in enumerate(steps):
        conversation.append({"role": "user", "content": f"{prompt} {step}" if h == 0 else step})
        head = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(head, add_special_tokens=False)["input_ids"]])
        logits = model(ids).logits[0, -1, [plus, minus]]
        out.append(torch.softmax(logits, dim=-1)[0].item())
        conversation.append({"role": "assistant", "content": "+"})
    return out


REFERENCES = {"qwen-prm": reference_qwen, "math-shepherd": reference_shepherd, "rlhflow": reference_rlhflow}


@pytest.mark.parametrize("convention", list(ADAPTERS))
def test_adapter_equals_model_card_recipe(convention):
    model, tok = tiny_public_prm(convention, seed=3)
    prm = ADAPTERS[convention](model, tok, batch_size=2, root_value=0.7)
    widths = []
    if convention != "qwen-prm":  # causal LMs: vocabulary logits only at the read positions
        model.lm_head.register_forward_hook(lambda module, inputs, output: widths.append(output.shape[1]))
    # Batched, padded, in an order unlike the input's: still each trace's own recipe.
    got = prm.score([*PROMPTS, "empty"], [*STEPS, []])
    if convention != "qwen-prm":
        assert widths and max(widths) <= sum(len(s) for s in STEPS)
    for values, prompt, steps in zip(got, PROMPTS, STEPS):
        assert values[0] == 0.7
        assert values[1:] == pytest.approx(REFERENCES[convention](model, tok, prompt, steps), abs=1e-5)
    assert got[3] == [0.7]  # no step: the root only
    # What a batch reads is the sum of what each of its traces reads (the search reuse charges per trace).
    assert prm.verifier_tokens == sum(prm.trace_tokens(p, s) for p, s in zip([*PROMPTS, "empty"], [*STEPS, []])) > 0
    # Prefix consistency (causal models read no later token): scoring a prefix gives the prefix of the scores.
    if convention != "qwen-prm":  # Qwen's closing template tokens follow the last step, but attention is causal too
        assert prm.score(PROMPTS[:1], [STEPS[0][:2]])[0] == pytest.approx(got[0][:3], abs=1e-5)


@pytest.mark.parametrize(("convention", "bad_step"), [("math-shepherd", "x и y"), ("rlhflow", " ")])
def test_adapter_rejects_steps_it_cannot_mark(convention, bad_step):
    # The character fixture's step tag is its last character `и`: any `и` is a read position it cannot escape.
    prm = ADAPTERS[convention](*tiny_public_prm(convention))
    with pytest.raises(ValueError, match="trace 1"):
        prm.score(["q", "q"], [["ok"], ["ok", bad_step]])


def test_a_step_writing_the_marker_text_is_read_once_per_step():
    """Model output may contain the adapter's marker as text: it is escaped (a zero-width space inside), so the
    trace keeps one read position per step and scores as the escaped text does."""
    prm = QwenMathPRM(*tiny_public_prm("qwen-prm"))
    got = prm.score(["q <extra_0> q"], [["ok", "a<extra_0>b"]])[0]
    escaped = prm.score(["q <\u200bextra_0> q"], [["ok", "a<\u200bextra_0>b"]])[0]
    assert len(got) == 3 and got == pytest.approx(escaped)


def test_load_by_hub_id_offline(tmp_path):
    """Every convention loads by repo id from the Hub cache layout (HF_HUB_OFFLINE=1), and scores as in memory."""
    for convention, cls in ADAPTERS.items():
        model, tok = tiny_public_prm(convention, seed=1)
        folder = tmp_path / convention
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        repo = f"models--someone--{convention}"
        snapshot = tmp_path / "hub" / repo / "snapshots" / ("b" * 40)
        shutil.copytree(folder, snapshot)
        (tmp_path / "hub" / repo / "refs").mkdir()
        (tmp_path / "hub" / repo / "refs" / "main").write_text("b" * 40)
        loaded = load_public_prm(convention, f"someone/{convention}", cache_dir=str(tmp_path / "hub"), batch_size=3)
        assert isinstance(loaded, cls) and loaded.batch_size == 3
        expected = cls(model, tok).score(PROMPTS, STEPS)
        for got, want in zip(loaded.score(PROMPTS, STEPS), expected):
            assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="unknown PRM convention"):
        load_public_prm("nope", "x")


@pytest.mark.parametrize("convention", list(ADAPTERS))
def test_adapters_in_beam_search_and_best_of_n(convention):
    prm = ADAPTERS[convention](*tiny_public_prm(convention, seed=2), step_format=StepFormat())
    policy = NoisyArithmeticPolicy(TASK, error_rate=0.3)
    prompts = [p.prompt for p in TASK.sample_problems(2, seed=5)]
    results = beam_search(policy, prm, prompts, BeamSearchConfig(budget=6, expansions=3, alpha=0.5, prover_k=1))
    for prompt, result in zip(prompts, results):
        assert result.steps and result.steps[-1].startswith("####")
        # The answer is the finished trace with the highest final value, as the adapter scores it.
        finals = [v[-1] for v in prm.score([prompt] * len(result.candidates), result.candidates)]
        assert result.score == pytest.approx(max(finals), abs=1e-6)
    candidates = sample_candidates(policy, prompts, n=4, seed=1)
    chosen = best_of_n(prompts, candidates, prm)
    for prompt, gens, pick in zip(prompts, candidates, chosen):
        cands = [g.steps for g in gens]  # the noisy policy always finishes with an answer: every one is eligible
        assert all(g.finished for g in gens)
        finals = [v[-1] for v in prm.score([prompt] * len(cands), cands)]
        assert pick.steps == cands[max(range(len(cands)), key=lambda j: (finals[j], -j))]


def test_reward_func_from_adapter():
    prm = RLHFlowPRM(*tiny_public_prm("rlhflow", seed=2), step_format=StepFormat())
    reward = prm.as_reward_func(mode="final")
    completions = ["3*2=6\n12+6=18", "", "2*3=6"]
    prompts = ["What is 12+3*2?", "2*3?", "2*3?"]
    got = reward(prompts=prompts, completions=completions)
    scores = prm.score([prompts[0], prompts[2]], [["3*2=6", "12+6=18"], ["2*3=6"]])
    assert got == pytest.approx([scores[0][-1], 0.0, scores[1][-1]])
    effective = scorer_reward_func(prm, mode="effective", alpha=0.5, prover_k=1)(
        prompts=prompts, completions=completions
    )
    q = scores[0]
    assert effective[0] == pytest.approx(((q[1] + 0.5 * (q[1] - q[0])) + (q[2] + 0.5 * (q[2] - q[1]))) / 2)
    # Conversational completions are read from their last message.
    chat = reward(prompts=prompts[:1], completions=[[{"role": "assistant", "content": completions[0]}]])
    assert chat == pytest.approx(got[:1])
    with pytest.raises(ValueError, match="mode"):
        scorer_reward_func(prm, mode="sum")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = TASK.tokenizer()
    path = tmp_path_factory.mktemp("policy")
    tiny_causal_lm(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("convention", list(ADAPTERS))
def test_adapter_drives_a_grpo_step(policy_dir, tmp_path, convention):
    """A public PRM as the frozen verifier of PAV-GRPO: its step values become the dense process term."""
    prm = ADAPTERS[convention](*tiny_public_prm(convention, seed=2), step_format=StepFormat())
    probs = TASK.sample_problems(8, seed=0)
    args = PAVGRPOConfig(
        output_dir=str(tmp_path / "rl"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        pav_alpha=2.0,
        prover_k=1,
        seed=0,
    )
    trainer = PAVGRPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=prm,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]}),
        processing_class=TASK.tokenizer(),
    )
    assert trainer.pav_step_format == StepFormat()  # the adapter's step format splits the completions
    # The process term of a hand-built completion is alpha times the adapter's value differences.
    tok = TASK.tokenizer()
    ids = tok("1+1=2\n2*3=6\n#", add_special_tokens=False)["input_ids"]
    out = trainer._pav_advantages(
        [{"prompt": "Q:1+1*0?\n"}],
        {
            "completion_ids": torch.tensor([ids]),
            "completion_mask": torch.ones(1, len(ids)),
            "advantages": torch.zeros(1),
        },
    )
    q = prm.score(["Q:1+1*0?\n"], [["1+1=2", "2*3=6"]])[0]
    assert out[0, 0].item() == pytest.approx(2.0 * (q[1] - q[0]), abs=1e-5)
    assert out[0, 6].item() == pytest.approx(2.0 * (q[2] - q[1]), abs=1e-5)
    assert out[0, -1].item() == 0.0  # the trailing piece is no step
    before = prm.verifier_tokens
    trainer.train()
    assert prm.verifier_tokens >= before
    logged = set().union(*(e.keys() for e in trainer.state.log_history))
    assert "pav/process_term_per_completion" in logged
    trainer.create_model_card()  # TRL's card, with the PAV paper and tags
    card = (tmp_path / "rl" / "README.md").read_text()
    assert "2410.08146" in card and "setlur2024rewarding" in card and "- pav" in card
