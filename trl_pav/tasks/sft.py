"""Train a tiny base policy from scratch with TRL's `SFTTrainer` and save it as an ordinary transformers checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback

from .._compat import activation_checkpointing_off

__all__ = ["TinyPolicyConfig", "tiny_policy_model", "train_sft_policy"]


@dataclass
class TinyPolicyConfig:
    """Size and training budget of a tiny Llama policy trained from scratch.

    Llama (not Qwen2) so that `AutoTokenizer` reloads the saved character tokenizer unchanged.

    Args:
        hidden_size (`int`, defaults to `128`): model width.
        num_layers (`int`, defaults to `4`): transformer blocks.
        num_heads (`int`, defaults to `4`): attention heads.
        intermediate_size (`int`, defaults to `512`): MLP width.
        max_positions (`int`, defaults to `128`): longest sequence.
        max_steps (`int`, defaults to `1000`): optimizer steps.
        batch_size (`int`, defaults to `64`): sequences per step.
        learning_rate (`float`, defaults to `3e-3`): peak AdamW learning rate (cosine decay, 5% warm-up).
        seed (`int`, defaults to `0`): initialisation and data-order seed.
        bf16 (`bool`, defaults to `False`): bfloat16 autocast (faster on CPUs with bf16 support).
        group_by_length (`bool`, defaults to `False`): batch sequences of similar length together (transformers'
            length-grouped sampler), so a batch is padded to less; worth it where trace lengths vary a lot.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 128
    max_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    bf16: bool = False
    group_by_length: bool = False


def tiny_policy_model(tokenizer, config: TinyPolicyConfig | None = None):
    """A freshly initialised tiny Llama sized by `config` for `tokenizer` (seeded by `config.seed`).

    Example:
        >>> from trl_pav.testing import char_tokenizer
        >>> model = tiny_policy_model(char_tokenizer(), TinyPolicyConfig(hidden_size=32, num_layers=1, num_heads=2))
        >>> model.config.num_hidden_layers
        1
    """
    config = config or TinyPolicyConfig()
    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(model_config)


class _Snapshots(TrainerCallback):
    """Saves the model (and tokenizer) at given optimizer steps."""

    def __init__(self, steps: dict[int, str | os.PathLike], tokenizer):
        self.steps, self.tokenizer = {int(k): str(v) for k, v in steps.items()}, tokenizer

    def on_step_end(self, args, state, control, model=None, **kwargs):
        folder = self.steps.get(state.global_step)
        if folder is not None:
            model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)


def train_sft_policy(
    tokenizer,
    train_dataset: Dataset,
    output_dir: str | os.PathLike,
    config: TinyPolicyConfig | None = None,
    snapshots: dict[int, str | os.PathLike] | None = None,
) -> str:
    """Train a tiny causal LM on prompt-completion rows (loss on completion tokens) and save model + tokenizer.

    Deterministic under `config.seed` on a given machine. `snapshots` maps optimizer steps (1..max_steps) to
    folders that receive the model at that step as well.

    Returns:
        `output_dir`, loadable with `AutoModelForCausalLM.from_pretrained` and `trl_pav.load_tokenizer`.
    """
    from trl import SFTConfig, SFTTrainer

    config = config or TinyPolicyConfig()
    model = tiny_policy_model(tokenizer, config)
    args = SFTConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, config.max_steps // 20),
        weight_decay=0.0,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_positions,
        completion_only_loss=True,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, config.max_steps // 10),
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        **activation_checkpointing_off(SFTConfig),
    )
    bad = [k for k in (snapshots or {}) if not 1 <= int(k) <= config.max_steps]
    if bad:
        raise ValueError(f"snapshot steps must lie in 1..{config.max_steps}, got {bad}")
    callbacks = [_Snapshots(snapshots, tokenizer)] if snapshots else None
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer, callbacks=callbacks
    )
    _bar_without_printed_logs(trainer)
    trainer.train()
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return str(output_dir)


def _bar_without_printed_logs(trainer) -> None:
    """Keep a trainer's progress bar (stderr) but not the log dicts transformers prints to stdout, under the bar or,
    with the bar off, by `PrinterCallback`: library code prints nothing."""
    from transformers import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    if any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarOnly())
