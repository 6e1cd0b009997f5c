import json
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_pav import MCLabelConfig, MCLabeler, PAVMetadata, PAVRewardConfig, PAVRewardTrainer, PAVVerifier, StepFormat
from trl_pav.data import StepwiseDataError
from trl_pav.metrics import auc
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_token_classifier
from trl_pav.trainers import tokenize_stepwise_row


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
    return PAVRewardConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("tok_name", "fmt", "steps"),
    [
        ("char_tok", StepFormat(), ["29*14=406", "25-406=-381", "#### -381"]),
        ("bpe_tok", StepFormat(), ["First, 29*14=406.", "Then 25-406=-381.", "The answer is -381."]),
        # With a space separator, natural BPE merges " answer": the boundary would fall inside a token.
        ("bpe_tok", StepFormat(" "), ["The", "answer", "is", "19."]),
    ],
)
def test_one_forward_equals_prefix_scoring(request, tok_name, fmt, steps):
    tok = request.getfixturevalue(tok_name)
    model = tiny_token_classifier(tok, seed=3)
    verifier = PAVVerifier(model, tok, PAVMetadata(step_format=fmt.to_dict()))
    prompt = "Q: 25-29*14?\n"
    full = verifier.score([prompt], [steps])[0]
    prefixes = verifier.score([prompt] * (len(steps) + 1), [steps[:h] for h in range(len(steps) + 1)])
    for h in range(len(steps) + 1):
        assert prefixes[h][-1] == pytest.approx(full[h], abs=1e-5)
        assert prefixes[h] == pytest.approx(full[: h + 1], abs=1e-5)
    # Batched with other traces (padding) gives the same values.
    batch = verifier.score([prompt, "x", prompt], [["a"], steps, steps])
    assert batch[2] == pytest.approx(full, abs=1e-5)


def test_save_load_bit_identical_and_hub_layout(char_tok, tmp_path):
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=4), char_tok, PAVMetadata(prover_k=8, kind="pav"))
    prompts, steps = ["Q:1+2*3?\n", "Q:4-1?\n"], [["2*3=6", "1+6=7", "#### 7"], ["4-1=3"]]
    before = verifier.score(prompts, steps)
    verifier.save_pretrained(tmp_path / "folder")
    again = PAVVerifier.from_pretrained(tmp_path / "folder")
    assert again.score(prompts, steps) == before
    assert again.metadata.prover_k == 8 and again.step_format == StepFormat()
    assert "Best-of-8" in (tmp_path / "folder" / "README.md").read_text()
    # The Hub code path: a repo id resolved from the local cache layout (HF_HUB_OFFLINE=1 in tests).
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-pav" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in (tmp_path / "folder").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--tiny-pav" / "refs").mkdir()
    (cache / "models--someone--tiny-pav" / "refs" / "main").write_text("a" * 40)
    hub = PAVVerifier.from_pretrained("someone/tiny-pav", cache_dir=str(cache))
    assert hub.score(prompts, steps) == before
    # Advantages go through the shared math: K=8 by default, K=1 on request.
    q = torch.tensor(before[0], dtype=torch.float64)
    adv = hub.advantages(prompts[:1], steps[:1])[0]
    assert adv == pytest.approx((1 - (1 - q[1:]) ** 8 - (1 - (1 - q[:-1]) ** 8)).tolist())
    assert hub.advantages(prompts[:1], steps[:1], k=1)[0] == pytest.approx((q[1:] - q[:-1]).tolist())
    eff = hub.effective_rewards(prompts[:1], steps[:1], alpha=0.5)[0]
    assert eff == pytest.approx((q[1:] + 0.5 * torch.tensor(adv)).tolist())


def test_checkpoint_without_metadata(char_tok, tmp_path):
    model = tiny_token_classifier(char_tok)
    model.save_pretrained(tmp_path)
    char_tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no trl_pav step metadata"):
        PAVVerifier.from_pretrained(tmp_path)
    v = PAVVerifier.from_pretrained(tmp_path, step_format=StepFormat.blank_line())
    assert v.step_format == StepFormat.blank_line()


def test_too_long_traces(char_tok):
    verifier = PAVVerifier(tiny_token_classifier(char_tok), char_tok, PAVMetadata(), max_length=20)
    with pytest.raises(ValueError, match="trace 1: 27 tokens exceed the verifier's max_length 20"):
        verifier.score(["Q", "Q:"], [["1"], ["1+1=2", "2+2=4", "4+4=8", "#### 8"]])
    # Training keeps only whole steps that fit, with their own labels.
    row = {"prompt": "Q:", "completions": ["1+1=2", "2+2=4", "4+4=8"], "labels": [0.1, 0.2, 0.3], "root_value": 0.05}
    out = tokenize_stepwise_row(row, char_tok, StepFormat(), max_length=14)
    assert out["read_labels"] == [0.05, 0.1, 0.2] and out["dropped_steps"] == 1
    assert len(out["input_ids"]) == out["read_positions"][-1] + 1 <= 14
    assert char_tok.decode(out["input_ids"], skip_special_tokens=True) == "Q:1+1=2\n2+2=4"
    assert tokenize_stepwise_row(row, char_tok, StepFormat(), max_length=4)["input_ids"] == []
    orm = tokenize_stepwise_row({**row, "seed_outcome": 1.0}, char_tok, StepFormat(), kind="orm")
    assert orm["read_labels"] == [1.0] and orm["read_positions"] == [len(orm["input_ids"]) - 1]


def test_trainer_rejects_bad_rows(char_tok, tmp_path):
    rows = [{"prompt": "Q", "completions": ["a"], "labels": [1.5]}]
    with pytest.raises(StepwiseDataError, match=r"row 0: labels\[0\] = 1.5 is outside"):
        PAVRewardTrainer(
            tiny_token_classifier(char_tok), args(tmp_path), Dataset.from_list(rows), processing_class=char_tok
        )
    with pytest.raises(ValueError, match="kind must be 'pav' or 'orm'"):
        args(tmp_path, kind="prm")


def test_trainer_takes_rows_as_a_list_and_reads_a_none_target_as_absent(char_tok, tmp_path):
    row = {"prompt": "Q", "completions": ["a"], "labels": [1.0]}
    trainer = PAVRewardTrainer(
        tiny_token_classifier(char_tok), args(tmp_path), [row, {**row, "target": None}], processing_class=char_tok
    )
    assert len(trainer.train_dataset) == 2 and trainer.pav_metadata.target == "q_pi"
    trainer = PAVRewardTrainer(
        tiny_token_classifier(char_tok), args(tmp_path), [{**row, "target": "q_mu"}] * 2, processing_class=char_tok
    )
    assert trainer.pav_metadata.target == "q_mu"
    with pytest.raises(ValueError, match="mixes label targets"):  # an undeclared row is q_pi, beside a q_mu row
        PAVRewardTrainer(
            tiny_token_classifier(char_tok), args(tmp_path), [row, {**row, "target": "q_mu"}], processing_class=char_tok
        )


@pytest.fixture(scope="module")
def easy_arithmetic_labels():
    # A small fact table (sums of operands <= 5): a tiny verifier trained from scratch must learn to check the
    # arithmetic itself, which it can only do in seconds when there are few facts to learn.
    task = ArithmeticTask(max_operand=5, operators="+", min_ops=2, max_ops=2)
    policy = NoisyArithmeticPolicy(task, error_rate=0.3)
    labeler = MCLabeler(policy, task.grader, MCLabelConfig(n_cov=4, n_mc=6, strategy="all", show_progress=False))
    train = labeler.label(task.problems_dataset(1200, seed=0))
    held_out = labeler.label(task.problems_dataset(80, seed=99))
    return task, train, held_out


def test_trained_verifier_ranks_correct_steps_above_wrong(char_tok, tmp_path, easy_arithmetic_labels):
    task, train, held_out = easy_arithmetic_labels
    model = tiny_token_classifier(char_tok, hidden_size=64, num_layers=2, seed=0)
    trainer = PAVRewardTrainer(
        model,
        args(
            tmp_path,
            max_steps=600,
            per_device_train_batch_size=32,
            learning_rate=3e-3,
            lr_scheduler_type="cosine",
            warmup_steps=20,
            per_device_eval_batch_size=64,
            eval_strategy="no",
        ),
        train,
        eval_dataset=held_out,
        processing_class=char_tok,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_brier", "eval_auc", "eval_ece", "eval_loss"} <= set(metrics)
    verifier = trainer.verifier()
    values = verifier.score(held_out["prompt"], held_out["completions"])
    scores, truth = [], []
    for row, v in zip(held_out, values):
        correct = task.step_labels(row["expression"], row["completions"])
        scores += v[1:]
        truth += correct
    step_auc = auc(np.array(scores), np.array(truth))
    print(f"held-out step AUC against the exact checker: {step_auc:.3f}; eval metrics {metrics}")
    assert step_auc > 0.65
    trainer.save_model(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "pav_config.json").read_text())
    assert saved["kind"] == "pav" and "eval_auc" in saved["metrics"]
    reloaded = PAVVerifier.from_pretrained(tmp_path / "saved")
    again = reloaded.score(held_out["prompt"][:5], held_out["completions"][:5])
    for a, b in zip(again, values[:5]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_orm_trains_on_final_position(char_tok, tmp_path, easy_arithmetic_labels):
    _, train, _ = easy_arithmetic_labels
    trainer = PAVRewardTrainer(
        tiny_token_classifier(char_tok), args(tmp_path, kind="orm", max_steps=3), train, processing_class=char_tok
    )
    first = trainer.train_dataset[0]
    assert len(first["read_positions"]) == 1 and first["read_positions"][0] == len(first["input_ids"]) - 1
    assert first["read_labels"][0] in (0.0, 1.0)
    trainer.train()
    assert trainer.verifier().metadata.kind == "orm"


def test_lora_adapter_saves_reloads_and_merges(char_tok, tmp_path, easy_arithmetic_labels):
    from peft import LoraConfig

    _, train, _ = easy_arithmetic_labels
    base_dir = tmp_path / "base"
    tiny_token_classifier(char_tok, seed=5).save_pretrained(base_dir)
    char_tok.save_pretrained(base_dir)
    peft_config = LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(
        str(base_dir), args(tmp_path, max_steps=5, learning_rate=1e-2), train.select(range(40)), peft_config=peft_config
    )
    head_before = trainer.model.base_model.model.score.modules_to_save["default"].weight.detach().clone()
    trainer.train()
    head_after = trainer.model.base_model.model.score.modules_to_save["default"].weight
    assert not torch.equal(head_before, head_after)  # the head is trained
    trained = trainer.verifier().score(train["prompt"][:4], train["completions"][:4])
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged = PAVVerifier.from_pretrained(tmp_path / "adapter")
    for a, b in zip(merged.score(train["prompt"][:4], train["completions"][:4]), trained):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_four_bit_verifier_trains_a_step(char_tok, tmp_path, easy_arithmetic_labels):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import AutoModelForTokenClassification, BitsAndBytesConfig

    _, train, _ = easy_arithmetic_labels
    base_dir = tmp_path / "base"
    tiny_token_classifier(char_tok, hidden_size=64, seed=6).save_pretrained(base_dir)
    char_tok.save_pretrained(base_dir)
    quant = BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=["score"], bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=1, quantization_config=quant)
    peft_config = LoraConfig(task_type="TOKEN_CLS", r=4, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(
        model, args(tmp_path, max_steps=2), train.select(range(16)), processing_class=char_tok, peft_config=peft_config
    )
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)


def test_truncation_warning_is_logged(char_tok, tmp_path, caplog):
    rows = [{"prompt": "Q:", "completions": ["1+1=2", "2+2=4", "4+4=8"], "labels": [0.1, 0.2, 0.3]}] * 2
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        trainer = PAVRewardTrainer(
            tiny_token_classifier(char_tok),
            args(tmp_path, max_length=14),
            Dataset.from_list(rows),
            processing_class=char_tok,
        )
    assert "2 trailing step(s) did not fit in max_length=14" in caplog.text
    assert trainer.train_dataset[0]["read_labels"] == [0.1, 0.2]


def test_masked_steps_are_not_read_and_get_no_loss(char_tok, tmp_path):
    """A `None` label (a step never measured, e.g. after a first pit) is left out: no read position, no loss, and a
    trainer on rows with masked steps gives the same loss as on rows where those steps have any other label masked
    out by hand."""
    row = {"prompt": "Q:1+2*3?\n", "completions": ["2*3=6", "1+6=8", "#### 8"], "labels": [0.5, None, 0.0]}
    full = tokenize_stepwise_row({**row, "labels": [0.5, 0.25, 0.0]}, char_tok, StepFormat())
    masked = tokenize_stepwise_row(row, char_tok, StepFormat())
    assert masked["input_ids"] == full["input_ids"]
    assert masked["read_positions"] == [full["read_positions"][0], full["read_positions"][2]]
    assert masked["read_labels"] == [0.5, 0.0]
    args = PAVRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, class_balanced=False)
    losses = []
    for labels in ([0.5, None, 0.0], [0.5, 0.99, 0.0]):
        trainer = PAVRewardTrainer(
            tiny_token_classifier(char_tok),
            args,
            Dataset.from_list([{**row, "labels": labels}]),
            processing_class=char_tok,
        )
        batch = trainer.data_collator([trainer.train_dataset[0]])
        losses.append(float(trainer.compute_loss(trainer.model.eval(), batch).detach()))
    assert losses[0] != losses[1]
    # With the middle label masked, the loss is the mean BCE over the two other read positions.
    model = tiny_token_classifier(char_tok).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full["input_ids"]])).logits[0, :, 0]
    reads = logits[[full["read_positions"][0], full["read_positions"][2]]]
    want = torch.nn.functional.binary_cross_entropy_with_logits(reads, torch.tensor([0.5, 0.0]))
    assert losses[0] == pytest.approx(float(want), rel=1e-5)


def test_reward_function_gives_none_for_a_completion_the_verifier_cannot_read_whole(char_tok):
    """TRL reads None as "no reward from this function": better than the value of a cut trace or a crashed step."""
    verifier = PAVVerifier(tiny_token_classifier(char_tok), char_tok, PAVMetadata(), max_length=20)
    reward = verifier.as_reward_func(mode="final")
    out = reward(prompts=["Q:"] * 3, completions=["1+1=2", "1+1=2\n2+2=4\n4+4=8\n#### 8", ""])
    assert out[0] == pytest.approx(verifier.score(["Q:"], [["1+1=2"]])[0][-1])
    assert out[1] is None and out[2] == 0.0
