"""Options around the trainers: loading the RL verifier with init kwargs, closing trackers at the end of a stage."""

import sys
import types

import pytest
import torch
from datasets import Dataset

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.scripts.common import end_trackers
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward


def test_rl_verifier_init_kwargs(tmp_path):
    task = ArithmeticTask()
    tok = task.tokenizer()
    tiny_causal_lm(tok).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata()).save_pretrained(tmp_path / "pav")
    args = PAVGRPOConfig(
        output_dir=str(tmp_path / "rl"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        verifier_model_name_or_path=str(tmp_path / "pav"),
        verifier_model_init_kwargs={"dtype": "bfloat16"},
    )
    probs = task.sample_problems(4, seed=0)
    trainer = PAVGRPOTrainer(
        str(tmp_path / "policy"),
        [grader_reward(task.grader)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]}),
    )
    verifier_model = trainer.accelerator.unwrap_model(trainer.verifier.model)
    assert verifier_model.dtype == torch.bfloat16
    assert next(trainer.accelerator.unwrap_model(trainer.model).parameters()).dtype == torch.float32


def test_end_trackers_closes_open_runs(monkeypatch):
    calls = []
    fake_wandb = types.SimpleNamespace(run=object(), finish=lambda: calls.append("wandb"))
    closed_trackio = types.SimpleNamespace(run=None, finish=lambda: calls.append("trackio"))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    monkeypatch.setitem(sys.modules, "trackio", closed_trackio)
    tracker = types.SimpleNamespace(finish=lambda: calls.append("accelerate"))

    def end_training():  # would destroy the process group that the recipes tear down together
        raise AssertionError("end_trackers must not call accelerator.end_training()")

    trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(trackers=[tracker], end_training=end_training))
    end_trackers(trainer)
    assert calls == ["accelerate", "wandb"]  # a tracker without an open run is left alone


def test_rl_trainer_loads_a_public_prm_by_path(tmp_path):
    from trl_pav.prm_adapters import RLHFlowPRM
    from trl_pav.testing import tiny_public_prm

    task = ArithmeticTask()
    tok = task.tokenizer()
    tiny_causal_lm(tok).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prm, prm_tok = tiny_public_prm("rlhflow")
    prm.save_pretrained(tmp_path / "prm")
    prm_tok.save_pretrained(tmp_path / "prm")
    args = PAVGRPOConfig(
        output_dir=str(tmp_path / "rl"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        verifier_model_name_or_path=str(tmp_path / "prm"),
        verifier_type="rlhflow",
        verifier_batch_size=3,
        step_separator="\n",
    )
    probs = task.sample_problems(4, seed=0)
    trainer = PAVGRPOTrainer(
        str(tmp_path / "policy"),
        [grader_reward(task.grader)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]}),
    )
    assert isinstance(trainer.verifier, RLHFlowPRM) and trainer.verifier.batch_size == 3
    assert not any(p.requires_grad for p in trainer.verifier.model.parameters())
    with pytest.raises(ValueError, match="verifier_type"):
        PAVGRPOConfig(output_dir=str(tmp_path / "x"), verifier_type="nope")
