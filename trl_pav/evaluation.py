"""Policy evaluation: sampled accuracy of a policy on graded problems, and its curve during training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from .generation.base import Policy, group_samples, sample_requests
from .grading import Grader, grade_batch

__all__ = ["AccuracyCurveCallback", "iterations_to_reach", "sample_traces", "sampled_accuracy"]


def sample_traces(
    policy: Policy, prompts: Sequence[str], samples_per_prompt: int = 1, seed: int = 0
) -> list[list[list[str]]]:
    """`samples_per_prompt` complete traces (as step lists) per prompt, seeded per (prompt, sample)."""
    gens = policy.generate(sample_requests(prompts, samples_per_prompt, seed))
    return group_samples(gens, samples_per_prompt)


def sampled_accuracy(
    policy: Policy,
    prompts: Sequence[str],
    golds: Sequence[str],
    grader: Grader,
    samples_per_prompt: int = 1,
    seed: int = 0,
) -> float:
    """Mean grade of sampled complete traces (at the policy's own temperature).

    Example:
        >>> from trl_pav.tasks import PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> acc = sampled_accuracy(PlantedProverPolicy(task, 10.0), [">"] * 50, [""] * 50, task.grader)
        >>> 0.0 <= acc <= 1.0
        True
    """
    if len(prompts) != len(golds):
        raise ValueError(f"sampled_accuracy: {len(prompts)} prompts but {len(golds)} gold answers")
    if not prompts:
        raise ValueError("sampled_accuracy: no prompts")
    traces = sample_traces(policy, prompts, samples_per_prompt, seed)
    fmt = policy.step_format
    texts = [fmt.join(t) if t else "" for ts in traces for t in ts]
    grades = grade_batch(grader, texts, [g for ts, g in zip(traces, golds) for _ in ts])
    return sum(grades) / len(grades)


class AccuracyCurveCallback(TrainerCallback):
    """Records `(global step, evaluate(model))` at the start of training, every `every` steps and at the end.

    Example:
        >>> cb = AccuracyCurveCallback(lambda model: 0.5, every=10)
        >>> cb.points
        []
    """

    def __init__(self, evaluate: Callable[[Any], float], every: int):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.evaluate, self.every = evaluate, every
        self.points: list[tuple[int, float]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.points.append((0, self.evaluate(model)))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.points.append((state.global_step, self.evaluate(model)))


def iterations_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first iteration of `curve` whose success is at least `target` (None if never).

    Example:
        >>> iterations_to_reach([(0, 0.2), (10, 0.85), (20, 0.93)], 0.9)
        20
    """
    return next((step for step, acc in curve if acc >= target - 1e-9), None)
