"""`PAVRLOOTrainer`: TRL's RLOO with per-step prover advantages and a per-token surrogate loss."""

from __future__ import annotations

from typing import ClassVar

import torch
from trl import RLOOTrainer

from ..hub import pav_trainer_paper
from ..modeling import StepScorer
from .pav_rl import PAVRLMixin
from .pav_rloo_config import PAVRLOOConfig

__all__ = ["PAVRLOOTrainer"]


class PAVRLOOTrainer(PAVRLMixin, RLOOTrainer):
    """RLOO with dense PAV advantages: leave-one-out outcome advantage (KL folded into the reward) plus `α · Â^μ_h`.

    RLOO's own loss is per sequence; this trainer's loss is per token: for each completion the clipped surrogate
    `min(r_t A_t, clip(r_t) A_t)` with per-token ratios is summed over its tokens and averaged over completions, so
    with `pav_alpha=0` its gradient equals RLOO's (at ratio 1).

    Args:
        model, reward_funcs, **kwargs: as for `RLOOTrainer`.
        verifier: a `PAVVerifier`, a folder/Hub id, or any `StepScorer`.
        args: a `PAVRLOOConfig`.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "rloo", "pav", "trl-pav"]
    _name = "PAV-RLOO"
    _paper: ClassVar[dict[str, str]] = pav_trainer_paper(RLOOTrainer._paper)

    def __init__(
        self,
        model,
        reward_funcs=None,
        verifier: StepScorer | str | None = None,
        args: PAVRLOOConfig | None = None,
        **kwargs,
    ):
        if args is None:
            raise ValueError("PAVRLOOTrainer needs args=PAVRLOOConfig(...)")
        if not isinstance(args, PAVRLOOConfig):
            raise TypeError(f"args must be a PAVRLOOConfig, got {type(args).__name__}")
        self._captured_logps: list[torch.Tensor] | None = None
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._init_pav(verifier)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        if self._captured_logps is not None:
            self._captured_logps.append(out[0])
        return out

    def _generate_and_score_completions(self, inputs):
        # The parent's first log-prob pass is the current policy's: keep its per-token values as the old log-probs.
        self._captured_logps = []
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            captured, self._captured_logps = self._captured_logps, None
        output["old_per_token_logps"] = captured[0].detach()
        output["advantages"] = self._pav_advantages(inputs, output)
        return output

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        mask = completion_mask.to(per_token_logps.dtype)
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        ratio = torch.exp(per_token_logps - inputs["old_per_token_logps"])
        clipped = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        per_token_loss = -torch.min(ratio * advantages, clipped * advantages)
        loss = (per_token_loss * mask).sum(1).mean()
        mode = "train" if self.model.training else "eval"
        stats = self.accelerator.reduce(torch.stack([(entropies * mask).sum(), mask.sum()]), reduction="sum")
        self._metrics[mode]["entropy"].append((stats[0] / stats[1].clamp(min=1.0)).item())
        clip = ((ratio < 1 - self.epsilon_low) & (advantages < 0)) | (
            (ratio > 1 + self.epsilon_high) & (advantages > 0)
        )
        self._metrics[mode]["clip_ratio/region_mean"].append(
            self.accelerator.gather((clip.float() * mask).sum() / mask.sum().clamp(min=1)).mean().item()
        )
        return loss
