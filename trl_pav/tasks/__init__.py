"""Synthetic reasoning tasks whose base policies train in minutes on a CPU, with exact ground truth."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from datasets import Dataset

from .arithmetic import (
    ArithmeticGrader,
    ArithmeticProblem,
    ArithmeticTask,
    NoisyArithmeticPolicy,
    evaluate,
    reference_steps,
)
from .planted import PlantedGrader, PlantedOracleScorer, PlantedProverPolicy, PlantedTask
from .rewrite import RewriteGrader, RewritePolicy, RewriteProblem, RewriteTask
from .sft import TinyPolicyConfig, tiny_policy_model, train_sft_policy

__all__ = [
    "TASKS",
    "ArithmeticGrader",
    "ArithmeticProblem",
    "ArithmeticTask",
    "NoisyArithmeticPolicy",
    "PlantedGrader",
    "PlantedOracleScorer",
    "PlantedProverPolicy",
    "PlantedTask",
    "RewriteGrader",
    "RewritePolicy",
    "RewriteProblem",
    "RewriteTask",
    "TinyPolicyConfig",
    "default_policy_config",
    "evaluate",
    "get_task",
    "reference_steps",
    "tiny_policy_model",
    "train_base_policy",
    "train_sft_policy",
]

TASKS = {"arithmetic": ArithmeticTask, "planted": PlantedTask, "rewrite": RewriteTask}

# Policy sizes and budgets that reach the targets on 2 CPU cores (measured; see docs/tasks.md).
DEFAULT_POLICY = {
    "arithmetic": TinyPolicyConfig(max_steps=700),
    # 300 steps (6 epochs of the paper's 3,200 samples): fewer leave the policy unable to write 10-symbol traces.
    "planted": TinyPolicyConfig(hidden_size=64, num_layers=2, intermediate_size=256, max_steps=300, max_positions=32),
    # Whole expressions per step: traces up to ~260 characters (99th percentile), of very uneven length.
    "rewrite": TinyPolicyConfig(max_steps=600, max_positions=256, group_by_length=True),
}


def default_policy_config(task: ArithmeticTask | PlantedTask | RewriteTask) -> TinyPolicyConfig:
    """`DEFAULT_POLICY` for a task's name, with a position table that holds its longest trace (a planted task longer
    than the paper's needs more than 32 positions: the prompt, `length` letters and separators, and the EOS).

    Example:
        >>> [default_policy_config(PlantedTask(length=n)).max_positions for n in (10, 20)]
        [32, 48]
    """
    from dataclasses import replace

    config = DEFAULT_POLICY[task.name]
    if isinstance(task, PlantedTask):
        config = replace(config, max_positions=max(config.max_positions, 2 * task.length + 8))
    return config


def get_task(name: str, options: str | dict | None = None, **kwargs) -> ArithmeticTask | PlantedTask | RewriteTask:
    """A task by name (`"arithmetic"`, `"planted"` or `"rewrite"`) with its settings: `options` (a dict, or a JSON
    object as the command line's `--task_options` gives it) and keyword arguments.

    Example:
        >>> get_task("planted", '{"vocab_size": 4, "length": 6, "planted": [0, 0, 1]}').planted
        (0, 0, 1)
    """
    import dataclasses
    import json

    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as err:
            raise ValueError(f"task_options is not JSON ({err.msg} at character {err.pos}): {options!r}") from None
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"task_options must be a JSON object of the task's settings, got {options!r}")
    options = {**(options or {}), **kwargs}
    # Plain settings only: a step format or grader is an object, not something a JSON option can give.
    known = {f.name for f in dataclasses.fields(TASKS[name]) if f.init and f.name not in ("step_format", "grader")}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"task {name!r} has no setting {unknown}; its settings: {sorted(known)}")
    return TASKS[name](**options)


def train_base_policy(
    task: ArithmeticTask | PlantedTask | RewriteTask,
    output_dir: str | os.PathLike,
    config: TinyPolicyConfig | None = None,
    problems: Sequence[ArithmeticProblem | RewriteProblem] | None = None,
    snapshots: dict[int, str | os.PathLike] | None = None,
) -> str:
    """Train a task's base policy with TRL's `SFTTrainer` and save it (model + tokenizer) to `output_dir`.

    Arithmetic and rewrite: correct traces of `problems`, or else of fresh problems, one per sequence in the budget
    (pass `problems` from `trl_pav.evaluation.ProblemPools` to keep them out of evaluation). Planted: the paper's
    initialisation, SFT on 3,200 samples of the procedural prover with γ = 5. `snapshots` maps optimizer steps to
    folders where the model at that step is saved too (an earlier, weaker policy of the same run).
    """
    config = config or DEFAULT_POLICY[task.name]
    if problems is not None and isinstance(task, PlantedTask):
        raise ValueError(f"train_base_policy: problems are for the arithmetic and rewrite tasks, not {task.name!r}")
    if problems is not None:
        if not problems:
            raise ValueError("train_base_policy: problems is empty")
        if isinstance(task, RewriteTask):
            data = task.sft_rows(problems, seed=config.seed + 1)
        else:
            data = Dataset.from_dict(
                {
                    "prompt": [p.prompt for p in problems],
                    "completion": [task.step_format.join(reference_steps(p.expression)) for p in problems],
                }
            )
    elif isinstance(task, (ArithmeticTask, RewriteTask)):
        data = task.sft_dataset(config.batch_size * config.max_steps, seed=config.seed + 1)
    else:
        data = task.sft_dataset(gamma=5.0, n=3200, seed=config.seed + 1)
    return train_sft_policy(task.tokenizer(), data, output_dir, replace(config), snapshots=snapshots)
