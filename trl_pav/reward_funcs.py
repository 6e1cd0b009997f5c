"""Step scorers as TRL reward functions: a PAV (or a public PRM) as one `reward_funcs` entry of any TRL trainer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .modeling import StepScorer, checked_step_values
from .steps import StepFormat
from .values import effective_reward, prover_advantages

__all__ = ["scorer_reward_func"]

REWARD_MODES = ("final", "effective")


def _text(item) -> str:
    """A prompt or completion as text: strings pass; chat messages give their last message's content."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item and isinstance(item[-1], dict) and "content" in item[-1]:
        return item[-1]["content"]
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


def scorer_reward_func(
    scorer: StepScorer,
    mode: str = "final",
    alpha: float = 0.5,
    prover_k: float = 4.0,
    step_format: StepFormat | None = None,
) -> Callable[..., list[float | None]]:
    """A TRL reward function `f(prompts, completions, **kwargs) -> [float]` from a step scorer.

    Each completion is split into steps with `step_format` (default: the scorer's own, else newline) and scored with
    its prompt. `mode="final"`: the value after the last step, `Q̂(s_H)` (the PAV used as an outcome verifier).
    `mode="effective"`: the mean over steps of the effective reward `Q̂^π + α·Â^μ` (prover: Best-of-`prover_k`).
    A completion with no step gets 0. A completion longer than the scorer reads (`steps_that_fit`, e.g. a
    `PAVVerifier`'s `max_length`) gets `None`, which TRL treats as "no reward from this function" (its other reward
    functions still count), rather than a value of a cut trace. Chat prompts are passed to the scorer as messages; a
    chat completion is read from its last message.

    Sequence-level rewards flatten the per-step signal the paper uses in RL; for dense per-step advantages use
    `PAVGRPOTrainer` / `PAVRLOOTrainer`.

    Example:
        >>> from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
        >>> oracle = NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.5)  # exact values as the scorer
        >>> reward = scorer_reward_func(oracle, mode="final")
        >>> reward(prompts=["Q:2*3+1?\\n"] * 2, completions=["2*3=6\\n6+1=7", "2*3=5"])
        [1.0, 0.0]
    """
    if mode not in REWARD_MODES:
        raise ValueError(f"scorer_reward_func: mode must be one of {REWARD_MODES}, got {mode!r}")
    fmt = step_format or getattr(scorer, "step_format", None) or StepFormat()

    fits = getattr(scorer, "steps_that_fit", None)

    def pav_reward(prompts, completions, **kwargs) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"pav_reward: {len(prompts)} prompts but {len(completions)} completions")
        steps = [fmt.split(_text(c)) for c in completions]
        rewards: list[float | None] = [0.0] * len(completions)
        scored = []
        for i, s in enumerate(steps):
            if s and callable(fits) and fits(prompts[i], s) < len(s):
                rewards[i] = None  # too long for the scorer: no value of the whole trace
            elif s:
                scored.append(i)
        values = scorer.score([prompts[i] for i in scored], [steps[i] for i in scored]) if scored else []
        values = checked_step_values(values, [steps[i] for i in scored], scorer)
        for i, v in zip(scored, values):
            if mode == "final":
                rewards[i] = float(v[-1])
            else:
                q = torch.tensor(v, dtype=torch.float64)
                rewards[i] = float(effective_reward(q[1:], prover_advantages(q, prover_k), alpha).mean())
        return rewards

    pav_reward.__name__ = f"pav_{mode}_{type(scorer).__name__}"
    return pav_reward
