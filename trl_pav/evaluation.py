"""Policy evaluation: sampled accuracy of a policy on graded problems."""

from __future__ import annotations

from collections.abc import Sequence

from .generation.base import Policy, group_samples, sample_requests
from .grading import Grader, grade_batch

__all__ = ["sample_traces", "sampled_accuracy"]


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
