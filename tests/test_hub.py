"""Hub round trip: the PAV model card survives save and push, metadata versioning, PEFT adapters by Hub id, cards."""

import json
import re
import shutil
from pathlib import Path

import pytest
import transformers.trainer
from datasets import Dataset
from huggingface_hub import ModelCard

from trl_pav import PAVMetadata, PAVRewardConfig, PAVRewardTrainer, PAVVerifier, StepFormat
from trl_pav.hub import SETLUR_2024_BIBTEX, is_hub_id, labels_dataset_card, pav_model_card
from trl_pav.testing import tiny_token_classifier

ROWS = [
    {"prompt": "Q:1+2*3?\n", "completions": ["2*3=6", "1+6=7", "#### 7"], "labels": [0.8, 0.9, 1.0], "root_value": 0.5},
    {"prompt": "Q:4-1?\n", "completions": ["4-1=2", "#### 2"], "labels": [0.0, 0.0], "root_value": 0.6},
] * 4


def to_hub_cache(folder, cache, repo_id):
    """Copy a saved folder into the Hub cache layout, as a download of `repo_id` would leave it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)


def card_code(card_text, heading):
    """The first python code block after `heading`."""
    section = card_text[card_text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_model_card_metadata_and_plain_transformers_snippet(char_tok, tmp_path):
    meta = PAVMetadata(prover_k=8, base_model=str(tmp_path), metrics={"eval_auc": 0.75, "eval_brier": 0.125})
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=2), char_tok, meta)
    verifier.save_pretrained(tmp_path / "pav")
    card = ModelCard.load(tmp_path / "pav" / "README.md")
    assert card.data.library_name == "transformers" and card.data.base_model is None  # a local path is not listed
    assert {"trl", "trl-pav", "process-reward-model", "pav"} <= set(card.data.tags)
    assert {(r.metric_name, r.metric_value) for r in card.data.eval_results} == {
        ("eval_auc", 0.75),
        ("eval_brier", 0.125),
    }
    assert "Best-of-8" in card.text and "2410.08146" in card.text and SETLUR_2024_BIBTEX in card.text
    # The card's plain-transformers code scores exactly like trl_pav.
    code = card_code(card.content, "## Use with plain transformers").replace(
        "<this repo or folder>", str(tmp_path / "pav")
    )
    namespace = {}
    exec(code, namespace)
    expected = verifier.score([namespace["prompt"]], [namespace["steps"]])[0]
    assert namespace["q"] == pytest.approx(expected, abs=1e-6)
    # A Hub base model and dataset are listed.
    hub_card = pav_model_card(PAVMetadata(base_model="Qwen/Qwen2.5-0.5B"), repo_id="me/pav", dataset="me/labels")
    assert hub_card.data.base_model == "Qwen/Qwen2.5-0.5B" and hub_card.data.datasets == ["me/labels"]
    assert 'PAVVerifier.from_pretrained("me/pav")' in hub_card.text
    assert is_hub_id("me/pav") and not is_hub_id(str(tmp_path)) and not is_hub_id("outputs/policy")


def test_metadata_versions_and_step_format(char_tok, tmp_path):
    verifier = PAVVerifier(tiny_token_classifier(char_tok), char_tok, PAVMetadata())
    verifier.save_pretrained(tmp_path / "v2")
    stored = json.loads((tmp_path / "v2" / "config.json").read_text())["pav"]
    assert stored["format_version"] == 2 and stored["read_position"] == "segment_last_token"
    assert stored["trl_pav_version"]
    assert PAVVerifier.from_pretrained(tmp_path / "v2", step_format=StepFormat()).step_format == StepFormat()
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        PAVVerifier.from_pretrained(tmp_path / "v2", step_format=StepFormat.blank_line())
    # A version-1 checkpoint (no version fields) still loads; a newer layout raises.
    old = {k: v for k, v in stored.items() if k not in ("format_version", "read_position", "trl_pav_version")}
    assert PAVMetadata.from_dict(old).format_version == 1
    with pytest.raises(ValueError, match="format_version 3"):
        PAVMetadata.from_dict({**stored, "format_version": 3})
    with pytest.raises(ValueError, match="reads values by rule"):
        PAVMetadata.from_dict({**stored, "read_position": "eos_token"})


def reward_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        max_steps=2,
        max_length=64,
    )
    return PAVRewardConfig(**{**base, **kw})


def test_trainer_card_survives_push_path(char_tok, tmp_path, monkeypatch):
    """`push_to_hub` runs `save_model` then `create_model_card`: both must leave the PAV card with the metrics."""
    data = Dataset.from_list(ROWS)
    trainer = PAVRewardTrainer(
        tiny_token_classifier(char_tok), reward_args(tmp_path), data, eval_dataset=data, processing_class=char_tok
    )
    trainer.train()
    trainer.evaluate()
    trainer.save_model()
    saved = (tmp_path / "out" / "README.md").read_text()
    trainer.hub_model_id = "me/tiny-pav"  # what init_hf_repo sets before a push
    # Trainer.push_to_hub itself (save_model, create_model_card, upload), with the upload caught here.
    uploaded = {}

    class FakeApi:
        def upload_folder(self, folder_path, **kwargs):
            uploaded["readme"] = (Path(folder_path) / "README.md").read_text()
            uploaded["repo_id"] = kwargs["repo_id"]

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    trainer.push_to_hub(dataset_name="me/labels", tags="extra")
    assert uploaded["repo_id"] == "me/tiny-pav"
    assert uploaded["readme"] == (tmp_path / "out" / "README.md").read_text()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "## Use with plain transformers" in saved and "## Use with plain transformers" in card.content
    assert {"trl-pav", "process-reward-model", "extra"} <= set(card.data.tags)
    assert card.data.datasets == ["me/labels"]
    assert {r.metric_name for r in card.data.eval_results} >= {"eval_auc", "eval_brier", "eval_loss"}
    assert 'from_pretrained("me/tiny-pav")' in card.content
    pav = json.loads((tmp_path / "out" / "pav_config.json").read_text())
    assert pav["max_length"] == 64 and pav["format_version"] == 2
    assert trainer.model_accepts_loss_kwargs is False and trainer.loss_is_scaled_for_ga is False


def test_lora_adapter_loads_by_hub_id(char_tok, tmp_path):
    from peft import LoraConfig

    base_dir = tmp_path / "base"
    tiny_token_classifier(char_tok, seed=5).save_pretrained(base_dir)
    char_tok.save_pretrained(base_dir)
    peft_config = LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(
        str(base_dir), reward_args(tmp_path, learning_rate=1e-2), Dataset.from_list(ROWS), peft_config=peft_config
    )
    trainer.train()
    prompts, steps = [r["prompt"] for r in ROWS[:2]], [r["completions"] for r in ROWS[:2]]
    trained = trainer.verifier().score(prompts, steps)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    to_hub_cache(tmp_path / "adapter", tmp_path / "hub", "someone/lora-pav")
    loaded = PAVVerifier.from_pretrained("someone/lora-pav", cache_dir=str(tmp_path / "hub"))
    for a, b in zip(loaded.score(prompts, steps), trained):
        assert a == pytest.approx(b, abs=1e-5)
    assert loaded.metadata.max_length == 64
    # The base can be overridden (the training machine's path is gone on the user's).
    shutil.move(base_dir, tmp_path / "moved")
    with pytest.raises(ValueError, match="base model"):
        PAVVerifier.from_pretrained("someone/lora-pav", cache_dir=str(tmp_path / "hub"))
    again = PAVVerifier.from_pretrained(
        "someone/lora-pav", cache_dir=str(tmp_path / "hub"), base_model_name_or_path=str(tmp_path / "moved")
    )
    assert again.score(prompts, steps)[0] == pytest.approx(trained[0], abs=1e-5)


def test_labels_dataset_card():
    metadata = {"config": {"n_mc": 20, "strategy": "first_pit"}, "rollouts": 1234, "fingerprint": "0123abcd"}
    card = labels_dataset_card(metadata, "me/labels")
    assert "0123abcd" in card.text and "| n_mc | 20 |" in card.text and "| rollouts | 1234 |" in card.text
    assert {"trl-pav", "process-reward-model"} <= set(card.data.tags) and card.data.pretty_name == "labels"


def test_rl_trainer_cards_cite_the_paper():
    from trl_pav.trainers import PAVGRPOTrainer, PAVRLOOTrainer

    for cls in (PAVGRPOTrainer, PAVRLOOTrainer):
        assert cls._paper["id"] == "2410.08146" and "setlur2024rewarding" in cls._paper["citation"]
        assert "pav" in cls._tag_names and "trl-pav" in cls._tag_names
    assert "shao2024deepseekmath" in PAVGRPOTrainer._paper["citation"]
