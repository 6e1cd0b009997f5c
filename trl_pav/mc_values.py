"""Step values from Monte-Carlo rollouts, online: a `StepScorer` that needs no trained verifier.

The paper trains a verifier to predict `Q^π` and turns it into Best-of-K prover advantages (its Sec. 5); its Sec. 7
leaves open estimating those advantages directly by rollouts during RL, which removes the verifier's fitting error at
the price of generation. `MCStepScorer` does that: for every step boundary of every trace it is asked to score (the
root included) it samples `n_rollouts` completions from a rollout policy, grades them, and returns the prover's value
`Q^μ` at each boundary, so the RL trainers turn them into one-step advantages `A^μ_h = Q^μ_{h+1} - Q^μ_h` exactly as
they do a verifier's values.

- The prover is Best-of-K of the rollout policy: `Q^μ = 1 - C(n - c, K) / C(n, K)` from `c` successes in `n`
  rollouts (`values.best_of_k_unbiased`, unbiased for K <= n). With `prover_k=1` it is the rollout policy's own
  success rate (for a procedural prover such as the planted task's μ_γ, whose rollouts are the prover itself).
- The rollout policy is any `Policy`: in the RL trainers, `policy=None` means the policy being trained (its current
  weights) and `"frozen"` a copy of its weights when training starts.
- Identical prefixes of one problem (the root of a GRPO group, shared opening steps) share their rollouts, so a batch
  pays once per distinct state.
- Rollout `j` from a prefix is seeded by (seed, call index, problem and prefix text, j): a call's values do not
  depend on how traces are batched or ordered, and successive RL steps draw fresh rollouts.

Cost per scoring call: `n_rollouts` × (distinct prefixes) rollouts; `rollout_tokens` counts what they generated, the
compute a user pays for this arm instead of verifier tokens (docs/mc_advantages.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .generation.base import GenerationRequest, Policy, mix_seed
from .grading import SUCCESS_THRESHOLD, Grader, checked_grades, grade_batch
from .steps import StepFormat
from .values import best_of_k_unbiased

__all__ = ["MCScoringStats", "MCStepScorer"]


@dataclass
class MCScoringStats:
    """What `MCStepScorer` has spent so far (cumulative over calls).

    Attributes:
        calls: scoring calls.
        states: distinct (problem, prefix) states valued.
        rollouts: rollouts sampled (`states × n_rollouts`).
        rollout_tokens: tokens those rollouts generated.
        last_call: the same counts for the latest call alone.
    """

    calls: int = 0
    states: int = 0
    rollouts: int = 0
    rollout_tokens: int = 0
    last_call: dict[str, int] = field(default_factory=dict)


class MCStepScorer:
    """Prover values `Q^μ` at every step boundary from `n_rollouts` rollouts per state (a `StepScorer`).

    Args:
        policy: the rollout policy (a `Policy`), or `None` / `"frozen"` to let an RL trainer bind the policy it
            trains (current weights / a frozen copy of the initial weights).
        grader: grades a completed trace against the problem's gold answer.
        n_rollouts (`int`, defaults to `4`): rollouts per state (must be >= `prover_k`).
        prover_k (`int`, defaults to `1`): K of the Best-of-K prover over the rollout policy (1: the rollout policy's
            own values).
        seed (`int`, defaults to `0`): base seed of every rollout.
        step_format: how steps are joined for grading (defaults to the rollout policy's).
        gold_column (`str` or `None`, defaults to `"gold"`): the dataset column an RL trainer reads gold answers
            from; `None`: the trainer passes each whole row (a grader that reads rows, e.g. its reward functions).
        refresh_every (`int` or `None`, defaults to `None`): with `policy="frozen"`, an RL trainer copies the
            trained policy's current weights into the frozen prover every this many optimizer steps (prover refresh).

    Example:
        >>> from trl_pav.tasks import PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> scorer = MCStepScorer(PlantedProverPolicy(task, 10.0), task.grader, n_rollouts=8)
        >>> values = scorer.score([task.prompt], [["d", "g"]], golds=[""])[0]
        >>> len(values), all(0.0 <= v <= 1.0 for v in values), scorer.stats.rollouts  # 3 states x 8 rollouts
        (3, True, 24)
    """

    needs_gold = True  # RL trainers pass each problem's gold answer (`score(..., golds=...)`)
    value_target = "q_mu"  # already the prover's values: trainers apply no Best-of-K transform on top

    def __init__(
        self,
        policy: Policy | str | None,
        grader: Grader,
        n_rollouts: int = 4,
        prover_k: int = 1,
        seed: int = 0,
        step_format: StepFormat | None = None,
        gold_column: str | None = "gold",
        refresh_every: int | None = None,
    ):
        if isinstance(policy, str) and policy != "frozen":
            raise ValueError(f"MCStepScorer: policy must be a Policy, None (current) or 'frozen', got {policy!r}")
        if policy is not None and not isinstance(policy, str) and not isinstance(policy, Policy):
            raise TypeError(f"MCStepScorer: policy must implement generate(requests), got {type(policy).__name__}")
        if not isinstance(n_rollouts, int) or n_rollouts < 1:
            raise ValueError(f"MCStepScorer: n_rollouts must be an integer >= 1, got {n_rollouts!r}")
        if not isinstance(prover_k, int) or prover_k < 1:
            raise ValueError(f"MCStepScorer: prover_k must be an integer >= 1, got {prover_k!r}")
        if prover_k > n_rollouts:
            raise ValueError(
                f"MCStepScorer: prover_k={prover_k} needs at least that many rollouts per state (the unbiased "
                f"Best-of-K estimator is defined for K <= n), got n_rollouts={n_rollouts}"
            )
        if refresh_every is not None and (not isinstance(refresh_every, int) or refresh_every < 1):
            raise ValueError(f"MCStepScorer: refresh_every must be an integer >= 1 or None, got {refresh_every!r}")
        if refresh_every is not None and policy != "frozen":
            raise ValueError(
                "MCStepScorer: refresh_every refreshes a frozen copy of the trained policy: set policy='frozen'"
            )
        self.refresh_every = refresh_every
        self.frozen = policy == "frozen"
        self.policy, self.grader = policy, grader
        self.n_rollouts, self.prover_k, self.seed = n_rollouts, prover_k, seed
        self._step_format = step_format
        self.gold_column = gold_column
        self.stats = MCScoringStats()

    @property
    def step_format(self) -> StepFormat | None:
        """How steps are joined and split: the given one, else the rollout policy's (None before one is bound)."""
        if self._step_format is not None:
            return self._step_format
        return getattr(self.policy, "step_format", None)

    def bind(self, policy: Policy) -> None:
        """Set the rollout policy (RL trainers bind the policy they train when `policy` was None or `"frozen"`)."""
        if not isinstance(policy, Policy):
            raise TypeError(f"MCStepScorer.bind: not a Policy: {type(policy).__name__}")
        self.policy = policy

    def score(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]], golds: Sequence[Any] | None = None
    ) -> list[list[float]]:
        """`Q^μ` at the root and after each step of each trace: `[[root, after step 1, ...], ...]`.

        Args:
            prompts: `B` rendered prompts.
            steps: `B` step lists (complete steps only).
            golds: `B` gold answers (required; a grader that ignores them may get empty strings).

        Returns:
            `B` lists of `len(steps[b]) + 1` values in [0, 1].
        """
        if self.policy is None or isinstance(self.policy, str):
            raise RuntimeError(
                "MCStepScorer: no rollout policy bound (policy=None/'frozen' is bound by a PAV RL trainer; outside "
                "one, pass a Policy)"
            )
        if len(prompts) != len(steps):
            raise ValueError(f"MCStepScorer.score: {len(prompts)} prompts but {len(steps)} step lists")
        if golds is None:
            raise ValueError("MCStepScorer.score: gold answers are needed to grade rollouts (golds=None)")
        if len(golds) != len(prompts):
            raise ValueError(f"MCStepScorer.score: {len(prompts)} prompts but {len(golds)} gold answers")
        for b, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"MCStepScorer.score: prompt {b} is a {type(prompt).__name__}, not rendered text")
        fmt = self.step_format
        call = self.stats.calls
        # Distinct states in first-seen order; the key includes the gold (one prompt text may carry two problems).
        states: dict[tuple[str, str, tuple[str, ...]], int] = {}
        state_golds: list[Any] = []  # each state's gold as given (a grader may take a row, not a string)
        for prompt, trace, gold in zip(prompts, steps, golds):
            for h in range(len(trace) + 1):
                if states.setdefault((prompt, str(gold), tuple(trace[:h])), len(states)) == len(state_golds):
                    state_golds.append(gold)
        keys = list(states)
        requests = [
            GenerationRequest(prompt, prefix, seed=mix_seed(self.seed, call, _text_hash(prompt, gold, prefix), j))
            for prompt, gold, prefix in keys
            for j in range(self.n_rollouts)
        ]
        generations = self.policy.generate(requests)
        if len(generations) != len(requests):
            raise RuntimeError(
                f"MCStepScorer: the rollout policy returned {len(generations)} results for {len(requests)} requests"
            )
        # A plain join, as the labeler's: the last step of a finished completion may end in part of the separator
        # ("b\n" before "\n\n"), which `StepFormat.join` refuses for a step with more after it.
        texts = [fmt.separator.join([*req.steps, *gen.steps]) for req, gen in zip(requests, generations)]
        gold_of = [gold for gold in state_golds for _ in range(self.n_rollouts)]
        rewards = torch.tensor(checked_grades(grade_batch(self.grader, texts, gold_of), texts), dtype=torch.float64)
        successes = (rewards.reshape(len(keys), self.n_rollouts) >= SUCCESS_THRESHOLD).sum(1)
        q_mu = best_of_k_unbiased(successes, self.n_rollouts, self.prover_k).tolist()
        tokens = sum(g.num_tokens for g in generations)
        self.stats.calls += 1
        self.stats.states += len(keys)
        self.stats.rollouts += len(requests)
        self.stats.rollout_tokens += tokens
        self.stats.last_call = {"states": len(keys), "rollouts": len(requests), "rollout_tokens": tokens}
        return [
            [q_mu[states[(prompt, str(gold), tuple(trace[:h]))]] for h in range(len(trace) + 1)]
            for prompt, trace, gold in zip(prompts, steps, golds)
        ]


def _text_hash(prompt: str, gold: Any, prefix: Sequence[str]) -> int:
    # Stable across processes and runs (Python's hash() is salted per process).
    return zlib.crc32("\x1e".join([prompt, str(gold), *prefix]).encode())
