"""Stage 4: online RL with per-step PAV rewards, GRPO, RLOO or PPO with a critic (`recipes/rl_pav.py`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from .common import ProblemArguments

__all__ = ["ALGORITHMS", "RLScriptArguments", "algorithm_from_argv", "main", "make_parser"]

ALGORITHMS = ("grpo", "rloo", "ppo")


@dataclass
class RLScriptArguments(ProblemArguments):
    """Arguments of the RL recipe, besides `PAVGRPOConfig` / `PAVRLOOConfig` / `PAVPPOConfig` and the policy's
    `ModelConfig`.

    Args:
        algorithm (`str`, defaults to `"grpo"`): `"grpo"` (`PAVGRPOTrainer`), `"rloo"` (`PAVRLOOTrainer`) or `"ppo"`
            (`PAVPPOTrainer`, with a learned critic). Without a verifier and with `pav_alpha: 0`, the recipe trains
            the outcome-only baseline on the same data (TRL's own trainer for GRPO/RLOO; plain PPO for PPO, which TRL
            no longer ships).
    """

    algorithm: str = field(default="grpo", metadata={"help": "grpo, rloo or ppo."})


def algorithm_from_argv(argv: list[str]) -> str:
    """The `algorithm` named on the command line (`--algorithm x`) or in the `--config` YAML, else `"grpo"`."""
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algorithm", default=None)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    algorithm = known.algorithm
    if algorithm is None and known.config:
        with open(known.config) as f:
            algorithm = (yaml.safe_load(f) or {}).get("algorithm")
    algorithm = algorithm or "grpo"
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}; use one of {ALGORITHMS}")
    return algorithm


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` for the algorithm `argv` names (default: the command line): its config class depends on it."""
    from trl import ModelConfig, TrlParser

    algorithm = algorithm_from_argv(sys.argv[1:] if argv is None else argv)
    return TrlParser((RLScriptArguments, _config_class(algorithm), ModelConfig))


def _config_class(algorithm: str):
    from ..trainers import PAVGRPOConfig, PAVPPOConfig, PAVRLOOConfig

    return {"grpo": PAVGRPOConfig, "rloo": PAVRLOOConfig, "ppo": PAVPPOConfig}[algorithm]


def main(script_args: RLScriptArguments, training_args, model_args) -> dict:
    """Train the policy against the outcome grader plus the verifier's per-step advantages; save it."""
    from trl import GRPOTrainer, RLOOTrainer, get_peft_config

    from ..labeling import validate_problems
    from ..tokenization import load_tokenizer
    from ..trainers import PAVGRPOTrainer, PAVPPOTrainer, PAVRLOOTrainer, grader_reward
    from .common import chat_prompts, check_model_source, end_trackers, load_stage_problems, model_init_kwargs

    if not model_args.model_name_or_path:
        raise ValueError("rl_pav: set model_name_or_path (the policy to train)")
    algorithm = script_args.algorithm
    if algorithm not in ALGORITHMS or type(training_args) is not _config_class(algorithm):
        raise ValueError(f"rl_pav: algorithm {algorithm!r} but a {type(training_args).__name__}")
    check_model_source(model_args.model_name_or_path, "rl: model_name_or_path")
    check_model_source(training_args.verifier_model_name_or_path, "rl: verifier_model_name_or_path")
    problems, grader, _ = load_stage_problems(script_args, script_args.dataset_train_split)
    # Before loading any model; a conversational prompt is checked as the text its chat template renders.
    rendered = problems
    if script_args.use_chat_template:
        rendered = chat_prompts(problems, load_tokenizer(model_args.model_name_or_path))
    validate_problems(rendered, needs_gold=getattr(grader, "needs_gold", True))
    if script_args.use_chat_template:
        problems = chat_prompts(problems)  # conversational: TRL renders the policy's template, the verifier its own
    training_args.model_init_kwargs = {**model_init_kwargs(model_args), **(training_args.model_init_kwargs or {})}
    common = {
        "model": model_args.model_name_or_path,
        "reward_funcs": [grader_reward(grader, "gold")],
        "args": training_args,
        "train_dataset": problems,
        "processing_class": load_tokenizer(model_args.model_name_or_path),
        "peft_config": get_peft_config(model_args),
    }
    outcome_only = training_args.verifier_model_name_or_path is None and training_args.pav_alpha == 0
    if outcome_only and algorithm == "ppo":
        trainer = PAVPPOTrainer(**common)  # plain PPO: TRL 1.16 has none
    elif outcome_only:
        trainer = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[algorithm](**common)
    elif training_args.verifier_model_name_or_path is None:
        raise ValueError("rl_pav: set verifier_model_name_or_path (or pav_alpha: 0 for the outcome-only baseline)")
    else:
        trainer = {"grpo": PAVGRPOTrainer, "rloo": PAVRLOOTrainer, "ppo": PAVPPOTrainer}[algorithm](**common)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        common["processing_class"].save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    end_trackers(trainer)
    return {
        "output_dir": training_args.output_dir,
        "algorithm": script_args.algorithm,
        "outcome_only": outcome_only,
        "train_loss": result.training_loss,
        "global_step": result.global_step,
    }
