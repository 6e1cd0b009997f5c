"""`PAVGRPOTrainer`: TRL's GRPO with per-step prover advantages from a frozen verifier added to the outcome one."""

from __future__ import annotations

from typing import ClassVar

from trl import GRPOTrainer

from ..hub import pav_trainer_paper
from ..modeling import StepScorer
from .pav_grpo_config import PAVGRPOConfig
from .pav_rl import PAVRLMixin

__all__ = ["PAVGRPOTrainer"]


class PAVGRPOTrainer(PAVRLMixin, GRPOTrainer):
    """GRPO (clipped surrogate, several iterations per batch, per-token KL) with dense PAV advantages.

    For token t in step h of a completion, the advantage is GRPO's outcome advantage plus `α · Â^μ_h`, the frozen
    verifier's one-step Best-of-K prover advantage of that step (`combine_advantages`). GRPO's loss already takes
    `(B, T)` advantages. With `pav_alpha=0` the trainer is plain GRPO.

    Args:
        model: the policy (path, or model), as for `GRPOTrainer`.
        reward_funcs: outcome reward(s), e.g. `grader_reward(grader)`.
        verifier: a `PAVVerifier`, a folder/Hub id, or any `StepScorer` (for example a task's exact values).
            Defaults to `args.verifier_model_name_or_path`.
        args: a `PAVGRPOConfig`.
        **kwargs: everything else `GRPOTrainer` takes (datasets, processing class, PEFT config, callbacks...).
    """

    _tag_names: ClassVar[list[str]] = ["trl", "grpo", "pav", "trl-pav"]
    _name = "PAV-GRPO"
    _paper: ClassVar[dict[str, str]] = pav_trainer_paper(GRPOTrainer._paper)

    def __init__(
        self,
        model,
        reward_funcs=None,
        verifier: StepScorer | str | None = None,
        args: PAVGRPOConfig | None = None,
        **kwargs,
    ):
        if args is None:
            raise ValueError("PAVGRPOTrainer needs args=PAVGRPOConfig(...)")
        if not isinstance(args, PAVGRPOConfig):
            raise TypeError(f"args must be a PAVGRPOConfig, got {type(args).__name__}")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._init_pav(verifier)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["advantages"] = self._pav_advantages(inputs, output)
        return output
