"""The likelihood head (`PAVRewardConfig.likelihood_head`, read rule `LIKELIHOOD_READ_RULE`)."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_pav import PAVMetadata, PAVRewardConfig, PAVRewardTrainer, PAVVerifier, StepFormat
from trl_pav.modeling import (
    LIKELIHOOD_READ_RULE,
    READ_POSITION_RULE,
    checkpoint_read_rule,
    likelihood_head_model,
    value_logits,
)
from trl_pav.steps import tokenize_trace
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier

PROMPTS = ["Q:1+2*3?\n", "Q:4-1?\n", "Q:2*2+5?\n"]
STEPS = [["2*3=6", "1+6=7", "#### 7"], ["4-1=3", "#### 3"], ["2*2=5", "5+5=10", "#### 10"]]


@pytest.fixture
def causal_dir(char_tok, tmp_path):
    folder = tmp_path / "causal"
    tiny_causal_lm(char_tok, seed=11).save_pretrained(folder)
    char_tok.save_pretrained(folder)
    return folder


def brute_force_values(logits, ids, mask, reads, starts):
    """The rule spelled out, one row and one read at a time."""
    vocab = logits.shape[-1] - 1
    out = torch.zeros(reads.shape, dtype=torch.float64)
    for b in range(ids.shape[0]):
        for k, r in enumerate(reads[b].tolist()):
            least = 0.0
            for t in range(int(starts[b]), r + 1):
                if mask[b, t]:
                    logp = torch.log_softmax(logits[b, t - 1, :vocab].double(), -1)[ids[b, t]]
                    least = min(least, float(logp))
            out[b, k] = float(logits[b, r, vocab]) + least
    return out


def test_value_logits_match_the_rule_spelled_out():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 6, generator=gen) * 3
    ids = torch.randint(0, 5, (3, 7), generator=gen)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 6 + [0]])
    reads = torch.tensor([[1, 3, 6], [2, 4, 4], [0, 2, 5]])
    starts = torch.tensor([2, 3, 1])
    got = value_logits(logits, ids, mask, reads, starts, LIKELIHOOD_READ_RULE)
    torch.testing.assert_close(got.double(), brute_force_values(logits, ids, mask, reads, starts), atol=1e-5, rtol=0)
    # A read before the completion starts is the value output alone; the scalar rule reads output 0.
    assert float(got[0, 0]) == pytest.approx(float(logits[0, 1, 5]))
    scalar = value_logits(logits[..., :1], ids, mask, reads, starts, READ_POSITION_RULE)
    torch.testing.assert_close(scalar, logits[..., 0].gather(1, reads))
    with pytest.raises(ValueError, match="unknown read rule"):
        value_logits(logits, ids, mask, reads, starts, "middle_token")
    with pytest.raises(ValueError, match="needs completion_start"):
        value_logits(logits, ids, mask, reads, None, LIKELIHOOD_READ_RULE)
    torch.testing.assert_close(value_logits(logits[..., :1], ids, mask, reads, None), scalar)


def test_fresh_likelihood_verifier_scores_the_least_token_probability(char_tok, causal_dir):
    """Before training (value output zero), Q-hat of a prefix is sigmoid(log p) of its least likely completion token
    under the causal LM it was built from: computed here from the causal LM itself."""
    lm = tiny_causal_lm(char_tok, seed=11).eval()
    verifier = PAVVerifier.from_causal_lm(causal_dir, metadata=PAVMetadata(read_position=LIKELIHOOD_READ_RULE))
    assert verifier.model.config.num_labels == len(char_tok) + 1
    values = verifier.score(PROMPTS, STEPS)
    for prompt, steps, got in zip(PROMPTS, STEPS, values):
        enc = tokenize_trace(char_tok, prompt, steps, StepFormat())
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=torch.tensor([enc.input_ids])).logits[0].double(), -1)
        token_logp = [float(logp[t - 1, enc.input_ids[t]]) for t in range(len(enc.input_ids))]
        want = [1 / (1 + np.exp(-min([0.0, *token_logp[enc.positions[0] + 1 : r + 1]]))) for r in enc.positions]
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert got[0] == pytest.approx(0.5)  # the root: no completion token yet, value output 0


def test_head_that_does_not_reproduce_the_lm_logits_is_refused(causal_dir, monkeypatch):
    """An architecture whose LM applies something after its head (a logit scale, soft-capping) that the
    token-classification head does not: the copied rows would not be the model's token probabilities."""
    import transformers

    assert likelihood_head_model(causal_dir).config.num_labels > 1  # Llama: the heads read the same hidden state
    real = transformers.AutoModelForCausalLM.from_pretrained

    def scaled_lm(*args, **kwargs):
        lm = real(*args, **kwargs)
        forward = lm.forward

        def capped(*a, **k):
            out = forward(*a, **k)
            out.logits = 2.0 * torch.tanh(out.logits / 2.0)
            return out

        lm.forward = capped
        return lm

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", scaled_lm)
    with pytest.raises(ValueError, match="does not reproduce the LM head"):
        likelihood_head_model(causal_dir)


def likelihood_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        likelihood_head=True,
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    return PAVRewardConfig(**{**base, **kw})


def training_rows():
    outcomes = [1.0, 1.0, 0.0]
    return [
        {"prompt": p, "completions": s, "labels": [0.9] * (len(s) - 1) + [o], "root_value": 0.6, "seed_outcome": o}
        for p, s, o in zip(PROMPTS, STEPS, outcomes)
    ] * 4


@pytest.mark.parametrize("kind", ["pav", "orm"])
def test_trainer_trains_saves_and_reloads_a_likelihood_verifier(char_tok, causal_dir, tmp_path, kind):
    args = likelihood_args(tmp_path, kind=kind, max_steps=4, learning_rate=1e-3)
    trainer = PAVRewardTrainer(str(causal_dir), args, Dataset.from_list(training_rows()))
    assert trainer.pav_metadata.read_position == LIKELIHOOD_READ_RULE
    # What training reads is what scoring returns, position by position.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model.eval()
    with torch.no_grad():
        read, _, mask = trainer._reads(model, batch)
    scored = trainer.verifier().score(PROMPTS, STEPS)
    for b, values in enumerate(scored):
        wanted = values[-1:] if kind == "orm" else values
        np.testing.assert_allclose(torch.sigmoid(read[b][mask[b]]).tolist(), wanted, atol=1e-5)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert checkpoint_read_rule(tmp_path / "saved") == LIKELIHOOD_READ_RULE
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["pav"]
    assert saved["read_position"] == LIKELIHOOD_READ_RULE
    reloaded = PAVVerifier.from_pretrained(tmp_path / "saved")
    for a, b in zip(reloaded.score(PROMPTS, STEPS), trainer.verifier().score(PROMPTS, STEPS)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Training on from the saved verifier keeps its head; asking for the other head is an error.
    PAVRewardTrainer(str(tmp_path / "saved"), args, Dataset.from_list(training_rows()))
    args.likelihood_head = False
    with pytest.raises(ValueError, match="does not match"):
        PAVRewardTrainer(str(tmp_path / "saved"), args, Dataset.from_list(training_rows()))


def test_mismatched_model_and_rule_are_refused(char_tok, tmp_path):
    args = PAVRewardConfig(output_dir=str(tmp_path), likelihood_head=True, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="LM head kept"):
        PAVRewardTrainer(
            tiny_token_classifier(char_tok), args, Dataset.from_list(training_rows()), processing_class=char_tok
        )
    with pytest.raises(ValueError, match="LM head kept"):
        PAVVerifier(tiny_token_classifier(char_tok), char_tok, PAVMetadata(read_position=LIKELIHOOD_READ_RULE))
    with pytest.raises(ValueError, match="one-label head"):
        PAVVerifier(tiny_token_classifier(char_tok, num_labels=len(char_tok) + 1), char_tok, PAVMetadata())
    with pytest.raises(ValueError, match="read_position"):
        PAVMetadata(read_position="middle_token")
    # A checkpoint written with a rule this version does not know raises on load rather than misreading.
    with pytest.raises(ValueError, match="reads values by rule"):
        PAVMetadata.from_dict({"format_version": 2, "read_position": "future_rule"})


def test_lora_adapter_on_a_likelihood_verifier_reloads(char_tok, causal_dir, tmp_path):
    from peft import LoraConfig

    args = likelihood_args(tmp_path, max_steps=3, learning_rate=1e-2)
    peft_config = LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(str(causal_dir), args, Dataset.from_list(training_rows()), peft_config=peft_config)
    trainer.train()
    trained = trainer.verifier().score(PROMPTS, STEPS)
    trainer.save_model(str(tmp_path / "adapter"))
    merged = PAVVerifier.from_pretrained(tmp_path / "adapter")
    assert merged.metadata.likelihood_head
    for a, b in zip(merged.score(PROMPTS, STEPS), trained):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_model_card_snippet_scores_like_trl_pav(causal_dir, tmp_path):
    from huggingface_hub import ModelCard

    verifier = PAVVerifier.from_causal_lm(causal_dir, metadata=PAVMetadata(read_position=LIKELIHOOD_READ_RULE))
    with torch.no_grad():
        verifier.model.score.weight[-1].normal_()  # a value output that is not zero
    verifier.save_pretrained(tmp_path / "pav")
    content = ModelCard.load(tmp_path / "pav" / "README.md").content
    code = content.split("## Use with plain transformers")[1].split("```python")[1].split("```")[0]
    namespace = {}
    exec(code.replace("<this repo or folder>", str(tmp_path / "pav")), namespace)
    # The card's own example (task-neutral), scored by trl_pav.
    expected = verifier.score([namespace["prompt"]], [namespace["steps"]])[0]
    assert namespace["q"] == pytest.approx(expected, abs=1e-5)
    assert "LM head kept" in content
