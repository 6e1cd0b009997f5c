"""Stage 2: Monte-Carlo labels of a base policy's seed traces under a Best-of-K prover (`recipes/label.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import (
    GenerationArguments,
    ProblemArguments,
    StepArguments,
    TrackingArguments,
    chat_prompts,
    check_model_source,
    load_stage_policy,
    load_stage_problems,
)

__all__ = ["LabelScriptArguments", "main", "make_parser"]


@dataclass
class LabelScriptArguments(ProblemArguments, GenerationArguments, StepArguments, TrackingArguments):
    """Arguments of the labeling recipe, besides `MCLabelConfig` and the base policy's `ModelConfig`; the step
    format (`separator`) is `StepArguments`', the trackers the labeling summary is logged to (`report_to`,
    `run_name`) `TrackingArguments`'.

    Args:
        output_dir (`str`, defaults to `"outputs/labels"`):
            Shards, the assembled dataset and `metadata.json` (the budget) go here; a re-run resumes.
        prover_model_name_or_path (`str` or `None`, defaults to `None`):
            A separate rollout policy (set `prover: policy` in the labeling config); `None`: Best-of-K of the base.
        push_to_hub (`bool`, defaults to `False`):
            Push the labels and their dataset card to the Hub dataset `hub_model_id` (main process), as TRL's
            `TrainingArguments.push_to_hub`.
        hub_model_id (`str` or `None`, defaults to `None`):
            The Hub dataset id to push to (`owner/name`, or `name` in your namespace). `None`: the name of
            `output_dir`, as TRL does.
        hub_private_repo (`bool` or `None`, defaults to `None`):
            Make the dataset private (`None`: the Hub's default for your organization).
    """

    output_dir: str = field(default="outputs/labels", metadata={"help": "Output folder (resumable)."})
    prover_model_name_or_path: str | None = field(default=None, metadata={"help": "Separate prover policy."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the labels to the Hub dataset hub_model_id."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub dataset id to push to (default: the name of output_dir)."}
    )
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Make the pushed dataset private."})

    def __post_init__(self) -> None:
        super().__post_init__()
        TrackingArguments.__post_init__(self)  # StepArguments' does not chain on
        self.push_to_hub = _check_push_to_hub(self.push_to_hub)
        if self.push_to_hub and self.hub_model_id is None:
            from pathlib import Path

            self.hub_model_id = Path(self.output_dir).name

    @property
    def hub_dataset_id(self) -> str | None:
        """The dataset id the labels go to, `None` when nothing is pushed."""
        return self.hub_model_id if self.push_to_hub else None


def _check_push_to_hub(value) -> bool:
    """`push_to_hub` as a boolean; the old string form (a dataset id) raises, saying what to write instead.

    Example:
        >>> _check_push_to_hub("true"), _check_push_to_hub(False)
        (True, False)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "t", "y", "1", "no", "false", "f", "n", "0"):
        return value.strip().lower() in ("yes", "true", "t", "y", "1")
    raise ValueError(
        f"label: push_to_hub is a boolean now (as in TRL), got {value!r}: give the dataset id with hub_model_id, "
        f"e.g. --push_to_hub --hub_model_id {value}"
    )


def _push_to_hub_type(value: str) -> bool:
    """argparse type of `--push_to_hub` (also applied to a YAML config's value): `_check_push_to_hub`'s message."""
    import argparse

    try:
        return _check_push_to_hub(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` of this stage (`argv` is unused: one set of dataclasses whatever the arguments)."""
    from trl import ModelConfig, TrlParser

    from ..labeling import MCLabelConfig

    parser = TrlParser((LabelScriptArguments, MCLabelConfig, ModelConfig))
    for action in parser._actions:
        if action.dest == "push_to_hub":  # a clear error for the old `--push_to_hub <dataset id>` form
            action.type = _push_to_hub_type
    return parser


def main(script_args: LabelScriptArguments, label_config, model_args) -> dict:
    """Label the problems; every process takes a share of the shards, the main one assembles the dataset."""

    from dataclasses import asdict

    from ..distributed import process_state
    from ..labeling import MCLabeler, load_labels, validate_problems
    from ..tokenization import load_tokenizer
    from .common import close_trackers, log_to_trackers, open_trackers

    if not model_args.model_name_or_path:
        raise ValueError("label: set model_name_or_path (the base policy)")
    if label_config.prover == "policy" and not script_args.prover_model_name_or_path:
        raise ValueError("label: prover='policy' needs prover_model_name_or_path")
    check_model_source(model_args.model_name_or_path, "label: model_name_or_path")
    check_model_source(script_args.prover_model_name_or_path, "label: prover_model_name_or_path")
    problems, grader, step_format = load_stage_problems(
        script_args, script_args.dataset_train_split, script_args.separator
    )
    if script_args.use_chat_template:  # rendered first: conversational prompts are validated as the text sampled from
        tokenizer = load_tokenizer(model_args.model_name_or_path)
        problems = chat_prompts(problems, tokenizer, label_config.prompt_column)
    # Bad problems fail now, not after loading a large model.
    validate_problems(
        problems, label_config.prompt_column, label_config.gold_column, getattr(grader, "needs_gold", True)
    )
    step_tokens = script_args.max_step_tokens
    policy = load_stage_policy(model_args.model_name_or_path, model_args, script_args, step_format, step_tokens)
    prover = None
    if script_args.prover_model_name_or_path:
        prover = load_stage_policy(
            script_args.prover_model_name_or_path, model_args, script_args, step_format, step_tokens
        )
    MCLabeler(policy, grader, label_config, prover_policy=prover).label(problems, script_args.output_dir)
    state = process_state()
    state.wait_for_everyone()
    dataset, metadata = load_labels(script_args.output_dir)
    # The labeling summary (traces, labels, rollouts, tokens, seconds) to the trackers TRL's stages report to.
    trackers = open_trackers(
        script_args, "label", script_args.output_dir, {**asdict(script_args), **asdict(label_config)}
    )
    labels = [x for row in dataset["labels"] for x in row if x is not None]
    summary = {**metadata, "mean_label": sum(labels) / len(labels) if labels else None}
    log_to_trackers(trackers, {f"label/{k}": v for k, v in summary.items()})
    close_trackers(trackers)
    if state.is_main_process:
        from pathlib import Path

        from ..hub import labels_dataset_card, push_labels_to_hub

        # The dataset card (configuration, budget, fingerprint) beside the labels, and with them on the Hub.
        repo_id = script_args.hub_dataset_id
        labels_dataset_card(metadata, repo_id).save(str(Path(script_args.output_dir) / "README.md"))
        if repo_id:
            push_labels_to_hub(dataset, metadata, repo_id, private=script_args.hub_private_repo)
    keys = ("num_traces", "num_labels", "rollouts", "num_processes")
    return {"output_dir": script_args.output_dir, **{k: metadata.get(k) for k in keys}}
