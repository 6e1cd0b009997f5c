"""Stages 3 and 3b: train a PAV (`recipes/train_pav.py`) or the ORM baseline (`recipes/train_orm.py`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import ScriptArguments

__all__ = ["VerifierScriptArguments", "load_stepwise", "main", "make_parser", "split_by_prompt"]


@dataclass
class VerifierScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` for verifier training.

    Args:
        dataset_name (`str` or `None`, defaults to `None`):
            Stepwise labels: a folder written by the labeling recipe, a `.json`/`.jsonl`/`.parquet` file, or a Hub
            id, with `prompt`, `completions`, `labels` (soft in [0, 1], or TRL's bool stepwise labels).
        eval_fraction (`float`, defaults to `0.0`):
            Share of the prompts held out for evaluation when the data (a folder, a file, or a Hub id such as labels
            pushed by `trl-pav label`) has no `dataset_test_split` (all traces of a prompt go to the same side, so
            evaluation never sees a training problem).
    """

    eval_fraction: float = field(default=0.0, metadata={"help": "Share of prompts held out for evaluation."})


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` of this stage (`argv` is unused: one set of dataclasses whatever the arguments)."""
    from trl import ModelConfig, TrlParser

    from ..trainers import PAVRewardConfig

    return TrlParser((VerifierScriptArguments, PAVRewardConfig, ModelConfig))


def load_stepwise(args: VerifierScriptArguments):
    """`(train, eval or None)` stepwise datasets from a labeling folder, a file or a Hub id."""
    from datasets import DatasetDict, load_dataset

    from ..datasets_io import check_nonempty_file
    from ..labeling import load_labels

    source = args.dataset_name
    if not source:
        raise ValueError("train_pav: set dataset_name (a labeling folder, a stepwise file or a Hub id)")
    if os.path.isdir(source) and os.path.exists(os.path.join(source, "metadata.json")):
        data = load_labels(source)[0]
    elif os.path.isfile(source):
        kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(os.path.splitext(source)[1].lower())
        if kind is None:
            raise ValueError(f"cannot read stepwise labels from {source!r}: use .json, .jsonl or .parquet")
        check_nonempty_file(source)
        data = load_dataset(kind, data_files=source, split="train")
    else:
        loaded = load_dataset(source, args.dataset_config)
        if not isinstance(loaded, DatasetDict) or args.dataset_train_split not in loaded:
            splits = sorted(loaded) if isinstance(loaded, DatasetDict) else []
            raise ValueError(f"{source!r} has no split {args.dataset_train_split!r} (splits: {splits})")
        test = loaded.get(args.dataset_test_split)
        if test is not None:
            return loaded[args.dataset_train_split], test
        # Labels pushed by `trl-pav label` have only a train split: hold prompts out of it, as for a folder.
        data = loaded[args.dataset_train_split]
    return split_by_prompt(data, args.eval_fraction)


def split_by_prompt(data, eval_fraction: float, seed: int = 0):
    """Hold out `eval_fraction` of the distinct prompts (with all their traces); `(train, eval or None)`.

    Example:
        >>> from datasets import Dataset
        >>> rows = [{"prompt": p, "completions": ["a"], "labels": [1.0]} for p in "aabbccdd"]
        >>> train, held = split_by_prompt(Dataset.from_list(rows), 0.25)
        >>> len(train), len(held), set(train["prompt"]) & set(held["prompt"])
        (6, 2, set())
    """
    import random

    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0:
        return data, None
    prompts = sorted(set(data["prompt"]))
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(eval_fraction * len(prompts)))])
    if len(held) == len(prompts):
        raise ValueError(f"eval_fraction={eval_fraction} leaves no training prompt out of {len(prompts)}")
    is_held = [p in held for p in data["prompt"]]
    train = data.select([i for i, h in enumerate(is_held) if not h])
    return train, data.select([i for i, h in enumerate(is_held) if h])


def main(script_args: VerifierScriptArguments, training_args, model_args, kind: str | None = None) -> dict:
    """Train and save the verifier (`kind` overrides `training_args.kind`: the ORM recipe passes `"orm"`)."""
    from trl import get_peft_config

    from ..data import validate_stepwise
    from ..steps import StepFormat
    from ..trainers import PAVRewardTrainer
    from .common import check_model_source, end_trackers, model_init_kwargs

    if not model_args.model_name_or_path:
        raise ValueError("train_pav: set model_name_or_path (the backbone: usually the base policy)")
    check_model_source(model_args.model_name_or_path, "train_pav: model_name_or_path")
    if kind is not None:
        training_args.kind = kind
    train, held = load_stepwise(script_args)
    # Bad rows fail now, naming them, not after loading the backbone (the trainer checks them again).
    step_format = StepFormat(training_args.step_separator) if training_args.step_separator is not None else None
    validate_stepwise(train, step_format)
    if held is not None:
        validate_stepwise(held, step_format)
    if held is None and training_args.eval_strategy != "no":
        raise ValueError("eval_strategy is set but there is no evaluation data: set eval_fraction or a test split")
    kwargs = model_init_kwargs(model_args, keep_full_precision=("score", "classifier"))
    training_args.model_init_kwargs = {**kwargs, **(training_args.model_init_kwargs or {})}
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "TOKEN_CLS"  # the verifier is a token classifier: its head must train and save
    trainer = PAVRewardTrainer(model_args.model_name_or_path, training_args, train, held, peft_config=peft_config)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate() if held is not None else {}
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    end_trackers(trainer)
    return {
        "output_dir": training_args.output_dir,
        "kind": training_args.kind,
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        **metrics,
    }
