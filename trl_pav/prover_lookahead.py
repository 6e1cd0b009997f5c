"""Prover choice by lookahead (`lookahead_provers`): how often the base policy succeeds after it follows each
candidate prover's advantages.

Theorem 3.1 bounds from below the improvement of one natural-gradient step on the effective reward `Q^π + α A^μ`.
Its terms (`select_prover`) need `A^π`: at a base policy that (almost) never succeeds, `Q^π = 0` at every sampled
step, the alignment is 0 for every prover and the bound says nothing. This module measures the improvement itself
instead of bounding it. For a softmax policy with its own logits at each state, natural-gradient steps on the
process term compose to `π_c(a|s) ∝ π(a|s) exp(c · α A^μ(s, a))` (`trl_pav.values.tilted_choice_probs`), because
`A^μ` does not depend on π. The lookahead samples traces of `π_c`: at every state it draws `candidates_per_step`
steps from π and keeps one with those probabilities (sampling-importance resampling), until the trace ends. A
candidate's score is `π_c`'s success averaged over the step sizes `c` of the config, minus π's own: the analogue of
"success averaged over training" of RL with that prover, with RL's own progress replaced by the idealised steps.

What it leaves out: the outcome term `Q^π` of the effective reward (0 where the theorem's terms fail, and a common
shift of every candidate elsewhere), how far a parametric policy's update generalises across states, and the
sampling noise of RL. A Monte-Carlo candidate tilts by noisy values (at large step sizes it follows the noise), so
next to exact scorers it is at a disadvantage. A step cut at the token limit fails (its trace cannot go on);
rollouts are graded as written, as `select_prover` and the labeler grade them. The step sizes stand in for RL's
budget and learning rate; docs/prover_selection.md says how the default grid was chosen and how the lookahead's
choices compare with measured sweeps.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .generation.base import GenerationGroup, Policy, generate_groups, mix_seed
from .grading import SUCCESS_THRESHOLD, checked_grades
from .prover_selection import (
    ProverCandidate,
    _check_ranking_settings,
    _checked_inputs,
    _last_values,
    _RankedResult,
)
from .values import best_of_k_unbiased, tilted_choice_probs

__all__ = ["LookaheadSelection", "ProverLookahead", "ProverLookaheadConfig", "lookahead_provers"]

# Seed streams (mix_seed's second part), apart from select_prover's 0-3 and 99-100.
_CANDIDATES, _CHOICE, _ROLLOUTS, _BOOTSTRAP = 20, 21, 22, 23


@dataclass
class ProverLookaheadConfig:
    """How `lookahead_provers` samples the tilted policies and how it ranks.

    Args:
        step_sizes (`list[float]`, defaults to `[1.0, 3.0, 10.0, 30.0]`): total natural-gradient steps `c` on the
            process term (in units of `α A^μ`); the score averages the tilted policy's success over them. 0 is π.
        candidates_per_step (`int`, defaults to `8`): steps drawn from π at each state, among which one is kept
            (>= 2; more makes the tilted policy's samples closer to exact).
        alpha (`float`, defaults to `1.0`): weight of the process term in the effective reward `Q^π + α A^μ`.
        n_rollouts (`int`, defaults to `8`): rollouts per step for a candidate's Monte-Carlo `Q^μ` (Best-of-K of π
            from π's rollouts, `K <= n_rollouts`; a policy candidate from its own).
        max_steps (`int`, defaults to `64`): most steps per tilted trace (after `max_steps` steps one more draw may
            still end it); a trace that writes a step beyond them is cut and counts as failed.
        num_bootstrap (`int`, defaults to `1000`): bootstrap replicates over traces (every candidate on the same
            replicates, so differences are paired).
        confidence (`float`, defaults to `0.95`): coverage of the percentile intervals.
        seed (`int`, defaults to `0`): seed of every draw (candidates, choices, rollouts, bootstrap). Trace i's draws
            at a state depend only on (i, the state), so every prover and step size sees the same candidates wherever
            their traces agree (common random numbers).
    """

    step_sizes: list[float] = field(
        default_factory=lambda: [1.0, 3.0, 10.0, 30.0],
        metadata={"help": "Total natural-gradient steps c on the process term; the score averages over them."},
    )
    candidates_per_step: int = field(default=8, metadata={"help": "Steps drawn from the base policy per state."})
    alpha: float = field(default=1.0, metadata={"help": "Weight α of the process term."})
    n_rollouts: int = field(default=8, metadata={"help": "Rollouts per step for Monte-Carlo Q^μ."})
    max_steps: int = field(default=64, metadata={"help": "Most steps per tilted trace (longer: failed)."})
    num_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap replicates over traces."})
    confidence: float = field(default=0.95, metadata={"help": "Coverage of the bootstrap intervals."})
    seed: int = field(default=0, metadata={"help": "Seed of every draw."})

    def __post_init__(self) -> None:
        bad = [
            c
            for c in self.step_sizes
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < math.inf  # NaN fails too
        ]
        if bad or not self.step_sizes:
            raise ValueError(
                f"ProverLookaheadConfig.step_sizes must be finite numbers > 0, got {list(self.step_sizes)}"
            )
        if self.candidates_per_step < 2:
            raise ValueError(
                f"ProverLookaheadConfig.candidates_per_step must be >= 2 (a choice), got {self.candidates_per_step}"
            )
        if self.n_rollouts < 1:
            raise ValueError(f"ProverLookaheadConfig.n_rollouts must be >= 1, got {self.n_rollouts}")
        if self.max_steps < 1:
            raise ValueError(f"ProverLookaheadConfig.max_steps must be >= 1, got {self.max_steps}")
        _check_ranking_settings(self)


@dataclass
class ProverLookahead:
    """One ranked prover.

    Attributes:
        rank: 1 is the best score.
        name, kind: the candidate's name and kind (`"best_of_k"`, `"scorer"`, `"policy"`).
        score: success of the tilted policies averaged over the step sizes, minus the base policy's;
            `score_interval` its percentile bootstrap interval over traces.
        prob_best: share of bootstrap replicates in which this candidate has the highest score.
        success: the tilted policy's success at each step size (the config's order); `success_intervals` theirs.
    """

    rank: int
    name: str
    kind: str
    score: float
    score_interval: tuple[float, float]
    prob_best: float
    success: list[float]
    success_intervals: list[tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["score_interval"] = list(self.score_interval)
        out["success_intervals"] = [list(x) for x in self.success_intervals]
        return out


@dataclass
class LookaheadSelection(_RankedResult):
    """What `lookahead_provers` measured.

    Attributes:
        ranking: the `ProverLookahead` rows, best first.
        base_success: the base policy's success on the same draws (`base_success_interval`).
        step_sizes: the step sizes `c`.
        num_traces: traces per tilted policy (one per prompt).
        generated_tokens: tokens of every step drawn from π and of every rollout (a draw that several tilted
            policies share counts once); `rollouts` the Monte-Carlo rollouts among them.
        config: the `ProverLookaheadConfig` as a dict.
    """

    ranking: list[ProverLookahead]
    base_success: float
    base_success_interval: tuple[float, float]
    step_sizes: list[float]
    num_traces: int
    generated_tokens: int
    rollouts: int
    config: dict[str, Any]

    @property
    def best(self) -> ProverLookahead:
        """The top-ranked prover."""
        return self.ranking[0]


def _text_key(fmt, steps: tuple[str, ...]) -> int:
    """A stable integer of a trace's text (Python's `hash` of strings changes between processes)."""
    return zlib.crc32(fmt.separator.join(steps).encode("utf-8"))


class _Lookahead:
    """The draws one `lookahead_provers` call shares across provers and step sizes (cached by trace and state)."""

    def __init__(self, policy, prompts, golds, grader, cfg: ProverLookaheadConfig):
        self.policy, self.prompts, self.golds, self.grader, self.cfg = policy, prompts, golds, grader, cfg
        self.fmt = policy.step_format
        self.draws: dict[tuple[int, tuple[str, ...]], list[tuple[tuple[str, ...], float | None]]] = {}
        self.values: dict[tuple[str, int, tuple[str, ...]], float] = {}
        self.counts: dict[tuple, float] = {}
        self.tokens = 0
        self.rollouts = 0

    def _draw(self, states: list[tuple[int, tuple[str, ...]]]) -> None:
        """Draw the candidate steps of the states not drawn yet: `(steps after it, outcome if it ends the trace)`."""
        todo = [s for s in dict.fromkeys(states) if s not in self.draws]
        m = self.cfg.candidates_per_step
        groups = [
            GenerationGroup(self.prompts[i], prefix, seed=mix_seed(self.cfg.seed, _CANDIDATES, i, len(prefix)), n=m)
            for i, prefix in todo
        ]
        for (i, prefix), gens in zip(todo, generate_groups(self.policy, groups, stop_at_step=True)):
            row = []
            for g in gens:
                self.tokens += int(g.num_tokens)
                if len(g.steps) > 1:
                    raise ValueError(
                        f"lookahead_provers: policy {self.policy.name!r} returned {len(g.steps)} steps for a "
                        "stop_at_step request (one at most)"
                    )
                steps = (*prefix, *g.steps)
                done = (g.finished or not g.steps) and not g.truncated
                outcome = None
                if len(steps) > self.cfg.max_steps or (g.truncated and not done):
                    outcome = 0.0  # a trace cut at max_steps, or a step cut at the token limit: failed
                elif done:
                    outcome = self._success(self.fmt.separator.join(steps), i)
                row.append((steps, outcome))
            self.draws[(i, prefix)] = row

    def _success(self, completion: str, i: int) -> float:
        """1.0 if the grade of a completed trace counts as a success (`SUCCESS_THRESHOLD`), else 0.0."""
        grade = checked_grades([self.grader.grade(completion, self.golds[i])], [completion])[0]
        return float(grade >= SUCCESS_THRESHOLD)

    def _rollout_counts(self, policy, tag: tuple[str, ...], pairs: list[tuple[int, tuple[str, ...]]]) -> None:
        """Success counts of `n_rollouts` rollouts of `policy` from each pair not counted yet."""
        todo = [p for p in dict.fromkeys(pairs) if (*tag, *p) not in self.counts]
        n = self.cfg.n_rollouts
        groups = [
            GenerationGroup(
                self.prompts[i], steps, seed=mix_seed(self.cfg.seed, _ROLLOUTS, i, _text_key(self.fmt, steps)), n=n
            )
            for i, steps in todo
        ]
        self.rollouts += n * len(groups)
        for (i, steps), gens in zip(todo, generate_groups(policy, groups)):
            wins = 0.0
            for g in gens:  # graded as written, as select_prover and the labeler grade rollouts
                self.tokens += int(g.num_tokens)
                wins += self._success(self.fmt.separator.join([*steps, *g.steps]), i)
            self.counts[(*tag, i, steps)] = wins

    def _q_mu(self, cand: ProverCandidate, pairs: list[tuple[int, tuple[str, ...]]]) -> None:
        """Fill `values` with the candidate's `Q^μ` of each (trace, steps) pair that does not end the trace."""
        todo = [p for p in dict.fromkeys(pairs) if (cand.name, *p) not in self.values]
        if not todo:
            return
        if cand.scorer is not None:
            q = _last_values(
                cand.scorer,
                [self.prompts[i] for i, _ in todo],
                [s for _, s in todo],
                f"prover candidate {cand.name!r} scorer",
            )
        else:
            # Best-of-K candidates share π's rollouts; a policy candidate has its own (whatever its name)
            tag = ("base",) if cand.k is not None else ("policy", cand.name)
            self._rollout_counts(self.policy if cand.k is not None else cand.policy, tag, todo)
            counts = torch.tensor([self.counts[(*tag, *p)] for p in todo], dtype=torch.float64)
            q = best_of_k_unbiased(counts, self.cfg.n_rollouts, cand.k or 1).numpy()
        for p, v in zip(todo, q):
            self.values[(cand.name, *p)] = float(v)

    def outcomes(self, cand: ProverCandidate | None, scale: float) -> np.ndarray:
        """Outcome (1/0) of one trace of the tilted policy `π_scale` per prompt (`cand=None`: π itself)."""
        n = len(self.prompts)
        prefixes: list[tuple[str, ...]] = [()] * n
        out = np.zeros(n)
        active = list(range(n))
        while active:
            states = [(i, prefixes[i]) for i in active]
            self._draw(states)
            if cand is not None:
                self._q_mu(cand, [(i, s) for i, p in states for s, o in self.draws[(i, p)] if o is None])
            still = []
            for i, prefix in states:
                row = self.draws[(i, prefix)]
                if cand is None:
                    probs = np.full(len(row), 1.0 / len(row))
                else:
                    q = torch.tensor([o if o is not None else self.values[(cand.name, i, s)] for s, o in row])
                    probs = tilted_choice_probs(q, scale * self.cfg.alpha).numpy()
                u = np.random.default_rng(mix_seed(self.cfg.seed, _CHOICE, i, len(prefix))).random()
                j = min(int(np.searchsorted(np.cumsum(probs), u, side="right")), len(row) - 1)
                steps, outcome = row[j]
                if outcome is None:
                    prefixes[i] = steps
                    still.append(i)
                else:
                    out[i] = outcome
            active = still
        return out


def lookahead_provers(
    policy: Policy,
    prompts: Sequence[str],
    grader,
    candidates: Sequence[int | ProverCandidate],
    config: ProverLookaheadConfig | None = None,
    golds: Sequence[str] | None = None,
) -> LookaheadSelection:
    """Rank candidate provers by the base policy's success after natural-gradient steps on their advantages.

    For each candidate and each step size `c`, one trace per prompt of `π_c ∝ π exp(c α A^μ)` is sampled (module
    docstring); the score is their success averaged over the step sizes minus π's, with paired bootstrap intervals
    over traces. Unlike `select_prover` it needs no `Q^π`, so it ranks provers for a base policy that never
    succeeds, where Theorem 3.1's alignment term is 0 for every prover. See docs/prover_selection.md.

    Args:
        policy: the base policy π.
        prompts: rendered prompts, one tilted trace each per candidate and step size (repeat a prompt for more).
        grader: `grade(completion, gold) -> float`.
        candidates: ints (K of Best-of-K of π, valued by π's rollouts) or `ProverCandidate`s (exact scorers, or
            policies valued by their rollouts).
        config: `ProverLookaheadConfig` (defaults when `None`).
        golds: gold answers per prompt (`""` for all when `None`).

    Returns:
        A `LookaheadSelection`: the ranking (best first), π's success, the sample sizes and the tokens generated.

    Example:
        >>> from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> gammas = [ProverCandidate(f"gamma{g:g}", scorer=PlantedOracleScorer(task, g)) for g in (1.0, 30.0)]
        >>> out = lookahead_provers(
        ...     PlantedProverPolicy(task, 1.0), [task.prompt] * 64, task.grader, gammas,
        ...     ProverLookaheadConfig(step_sizes=[10.0], num_bootstrap=100),
        ... )
        >>> out.best.score > 0, len(out.ranking)  # following either prover's advantages beats π
        (True, 2)
    """
    cfg = config or ProverLookaheadConfig()
    cands, prompts, golds = _checked_inputs("lookahead_provers", policy, candidates, prompts, golds)
    for c in cands:
        if c.k is not None and c.k > cfg.n_rollouts:
            raise ValueError(
                f"lookahead_provers: candidate {c.name!r} has K = {c.k} but Q^π has {cfg.n_rollouts} rollouts per "
                f"step; the unbiased Best-of-K estimator needs K <= n_rollouts: raise n_rollouts to >= {c.k}"
            )
    look = _Lookahead(policy, prompts, golds, grader, cfg)
    base = look.outcomes(None, 0.0)
    tilted = np.stack([np.stack([look.outcomes(c, s) for s in cfg.step_sizes]) for c in cands])  # (C, S, N)
    n = len(prompts)
    rng = np.random.default_rng(mix_seed(cfg.seed, _BOOTSTRAP))
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=cfg.num_bootstrap).astype(float) / n
    weights = np.vstack([np.full(n, 1.0 / n), weights])  # row 0: the sample itself (the point estimate)
    base_reps = weights @ base  # (R+1,)
    success_reps = np.einsum("rn,csn->csr", weights, tilted)  # (C, S, R+1)
    score_reps = success_reps.mean(1) - base_reps  # (C, R+1)
    lo_q, hi_q = (1 - cfg.confidence) / 2, 1 - (1 - cfg.confidence) / 2

    def interval(reps: np.ndarray) -> tuple[float, float]:
        return float(np.quantile(reps[1:], lo_q)), float(np.quantile(reps[1:], hi_q))

    top = score_reps[:, 1:] == score_reps[:, 1:].max(0)  # ties share a replicate's win
    wins = (top / top.sum(0)).sum(1) / cfg.num_bootstrap
    order = sorted(range(len(cands)), key=lambda c: -float(score_reps[c, 0]))  # stable: ties keep input order
    ranking = [
        ProverLookahead(
            rank=r + 1,
            name=cands[c].name,
            kind=cands[c].kind,
            score=float(score_reps[c, 0]),
            score_interval=interval(score_reps[c]),
            prob_best=float(wins[c]),
            success=[float(x) for x in success_reps[c, :, 0]],
            success_intervals=[interval(success_reps[c, s]) for s in range(len(cfg.step_sizes))],
        )
        for r, c in enumerate(order)
    ]
    return LookaheadSelection(
        ranking=ranking,
        base_success=float(base_reps[0]),
        base_success_interval=interval(base_reps),
        step_sizes=[float(s) for s in cfg.step_sizes],
        num_traces=n,
        generated_tokens=look.tokens,
        rollouts=look.rollouts,
        config=asdict(cfg),
    )
