"""Stage 2: Monte-Carlo labels of a base policy's seed traces under a Best-of-K prover (`recipes/label.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import (
    GenerationArguments,
    ProblemArguments,
    StepArguments,
    chat_prompts,
    check_model_source,
    load_stage_policy,
    load_stage_problems,
)

__all__ = ["LabelScriptArguments", "main", "make_parser"]


@dataclass
class LabelScriptArguments(ProblemArguments, GenerationArguments, StepArguments):
    """Arguments of the labeling recipe, besides `MCLabelConfig` and the base policy's `ModelConfig`; the step
    format (`separator`) is `StepArguments`'.

    Args:
        output_dir (`str`, defaults to `"outputs/labels"`):
            Shards, the assembled dataset and `metadata.json` (the budget) go here; a re-run resumes.
        prover_model_name_or_path (`str` or `None`, defaults to `None`):
            A separate rollout policy (set `prover: policy` in the labeling config); `None`: Best-of-K of the base.
        push_to_hub (`str` or `None`, defaults to `None`):
            A Hub dataset id to push the labels to (main process).
    """

    output_dir: str = field(default="outputs/labels", metadata={"help": "Output folder (resumable)."})
    prover_model_name_or_path: str | None = field(default=None, metadata={"help": "Separate prover policy."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset id to push the labels to."})


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` of this stage (`argv` is unused: one set of dataclasses whatever the arguments)."""
    from trl import ModelConfig, TrlParser

    from ..labeling import MCLabelConfig

    return TrlParser((LabelScriptArguments, MCLabelConfig, ModelConfig))


def main(script_args: LabelScriptArguments, label_config, model_args) -> dict:
    """Label the problems; every process takes a share of the shards, the main one assembles the dataset."""

    from ..distributed import process_state
    from ..labeling import MCLabeler, load_labels, validate_problems
    from ..tokenization import load_tokenizer

    if not model_args.model_name_or_path:
        raise ValueError("label: set model_name_or_path (the base policy)")
    if label_config.prover == "policy" and not script_args.prover_model_name_or_path:
        raise ValueError("label: prover='policy' needs prover_model_name_or_path")
    check_model_source(model_args.model_name_or_path, "label: model_name_or_path")
    check_model_source(script_args.prover_model_name_or_path, "label: prover_model_name_or_path")
    problems, grader, step_format = load_stage_problems(
        script_args, script_args.dataset_train_split, script_args.separator
    )
    # Bad problems fail now, not after loading a large model.
    validate_problems(
        problems, label_config.prompt_column, label_config.gold_column, getattr(grader, "needs_gold", True)
    )
    step_tokens = script_args.max_step_tokens
    policy = load_stage_policy(model_args.model_name_or_path, model_args, script_args, step_format, step_tokens)
    if script_args.use_chat_template:
        tokenizer = load_tokenizer(model_args.model_name_or_path)
        problems = chat_prompts(problems, tokenizer, label_config.prompt_column)
    prover = None
    if script_args.prover_model_name_or_path:
        prover = load_stage_policy(
            script_args.prover_model_name_or_path, model_args, script_args, step_format, step_tokens
        )
    MCLabeler(policy, grader, label_config, prover_policy=prover).label(problems, script_args.output_dir)
    state = process_state()
    state.wait_for_everyone()
    dataset, metadata = load_labels(script_args.output_dir)
    if state.is_main_process:
        from pathlib import Path

        from ..hub import labels_dataset_card, push_labels_to_hub

        # The dataset card (configuration, budget, fingerprint) beside the labels, and with them on the Hub.
        labels_dataset_card(metadata, script_args.push_to_hub).save(str(Path(script_args.output_dir) / "README.md"))
        if script_args.push_to_hub:
            push_labels_to_hub(dataset, metadata, script_args.push_to_hub)
    keys = ("num_traces", "num_labels", "rollouts", "num_processes")
    return {"output_dir": script_args.output_dir, **{k: metadata.get(k) for k in keys}}
