"""Regime pre-flight: is a task and base policy in the regime where process advantages can matter?

Measured before any verifier is trained, from the base policy and exact values alone (docs/tasks.md):

- **pass gap**: Pass@N minus the policy's sampled accuracy. Without it no verifier has anything to find.
- **rank disagreement**: the share of beam rounds in which the effective reward `Q + α·A^μ` keeps other children
  than `Q` alone would. Zero means PAV beam and Q-only beam are the same search, whatever the verifier.
- **exact PAV vs Q-only beam**: the accuracy difference with exact values at equal N, with a paired bootstrap
  interval over problems.
- **RL signal**: the share of GRPO groups whose outcome rewards are all equal (no outcome gradient), and the variance
  of the prover advantage `A^μ` over the steps the policy takes (no process signal when it is 0).
- **stall incentive** (a warning, not a condition): the mean `A^μ` of the policy's own steps. With a Best-of-K
  prover (K > 1) and the exact values of the sampling policy it is negative in expectation
  (`expected_prover_advantage`), while a step that changes no value scores 0; where the task allows such steps, a
  process term pays stalling over the policy's average step.

Example:
    >>> from trl_pav.tasks import RewritePolicy, RewriteTask
    >>> task = RewriteTask()
    >>> pol = RewritePolicy(task, {"hard_product": 0.7, "product": 0.2, "split": 0.1, "sum": 0.15})
    >>> probs = task.sample_problems(4, seed=0)
    >>> cfg = RegimeConfig(budgets=[3], samples=4, group_size=4, bootstrap_samples=20)
    >>> pre = regime_preflight(pol, pol, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
    >>> pre["rank_disagreement"], pre["pass_at_n"] >= pre["sampled_accuracy"]  # N = 3: one beam, one parent
    (0.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .evaluation import sample_traces
from .generation.base import Policy
from .grading import Grader, grade_batch
from .modeling import StepScorer
from .values import expected_prover_advantage, prover_advantages

__all__ = [
    "RegimeConfig",
    "advantage_variance",
    "all_equal_group_share",
    "interval_side",
    "mean_step_advantage",
    "pass_gap",
    "regime_preflight",
    "regime_verdict",
]


def pass_gap(correct: np.ndarray) -> float:
    """Pass@N minus mean accuracy from a `(problems, N)` 0/1 array of sampled traces' grades.

    Example:
        >>> pass_gap(np.array([[1, 0, 0, 0], [0, 0, 0, 0]]))
        0.375
    """
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"pass_gap: need a non-empty (problems, samples) array, got shape {correct.shape}")
    return float(correct.max(axis=1).mean() - correct.mean())


def all_equal_group_share(rewards: Sequence[float] | np.ndarray, group_size: int) -> float:
    """Share of consecutive groups of `group_size` rewards that are all equal (GRPO gets no outcome gradient there).

    Example:
        >>> all_equal_group_share([0, 0, 0, 0, 1, 0, 1, 1], group_size=4)
        0.5
    """
    r = np.asarray(rewards, dtype=float)
    if group_size < 2 or r.size == 0 or r.size % group_size:
        raise ValueError(f"all_equal_group_share: {r.size} rewards do not split into groups of {group_size} (>= 2)")
    groups = r.reshape(-1, group_size)
    return float(np.mean(np.all(groups == groups[:, :1], axis=1)))


def advantage_variance(values: Sequence[Sequence[float]], prover_k: float) -> float:
    """Variance of the prover advantage `A^μ_h = f(Q_h) - f(Q_{h-1})` over every step of every trace.

    Args:
        values: per trace, `Q^π` of the root then after each step (H+1 values for H steps).
        prover_k: K of the Best-of-K prover.

    Example:
        >>> round(advantage_variance([[0.5, 1.0], [0.5, 0.0]], prover_k=1), 3)
        0.25
    """
    steps = [prover_advantages(torch.tensor(v, dtype=torch.float64), prover_k) for v in values if len(v) > 1]
    if not steps:
        raise ValueError("advantage_variance: no trace has a step")
    return float(torch.cat(steps).var(unbiased=False))


def mean_step_advantage(values: Sequence[Sequence[float]], prover_k: float) -> float:
    """Mean prover advantage `A^μ_h = f(Q_h) - f(Q_{h-1})` over every step of every trace (each step weighs the same).

    Args:
        values: per trace, `Q^π` of the root then after each step (H+1 values for H steps).
        prover_k: K of the Best-of-K prover.

    Returns:
        The mean over all steps (a no-progress step, which leaves the value unchanged, counts as 0).

    Example:
        >>> round(mean_step_advantage([[0.5, 1.0], [0.5, 0.5, 0.0]], prover_k=2), 4)
        -0.1667
    """
    sums, steps, _ = problem_advantage_sums(values, 1, prover_k)  # one "problem" per trace
    if not steps.sum():
        raise ValueError("mean_step_advantage: no trace has a step")
    return float(sums.sum() / steps.sum())


def interval_side(low: float | None, high: float | None, digits: int) -> str:
    """`"above"`, `"below"` or `"not resolved from"` 0 for an interval, judged on its ends as printed (`digits`
    decimals), so the word never contradicts the numbers beside it; an interval without ends (one seed) is not
    resolved.

    Example:
        >>> interval_side(-0.00001, -0.00002, 4), interval_side(-0.03, -0.01, 4), interval_side(0.01, 0.02, 3)
        ('not resolved from', 'below', 'above')
    """
    if low is None or high is None:
        return "not resolved from"
    low, high = round(low, digits), round(high, digits)
    return "above" if low > 0 else "below" if high < 0 else "not resolved from"


def problem_advantage_sums(
    values: Sequence[Sequence[float]], samples: int, prover_k: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem, the sum of its traces' prover advantages, its number of steps and its number of traces.

    Args:
        values: per trace, `Q^π` of the root then after each step; problem-major, `samples` traces per problem.
        samples: traces per problem.
        prover_k: K of the Best-of-K prover.

    Returns:
        `(P,)` advantage sums, `(P,)` step counts, `(P,)` trace counts (traces with at least one step).

    Example:
        >>> sums, steps, traces = problem_advantage_sums([[0.5, 1.0], [0.5, 0.0], [0.2], [0.2, 0.2]], 2, prover_k=1)
        >>> sums.tolist(), steps.tolist(), traces.tolist()
        ([0.0, 0.0], [2.0, 1.0], [2.0, 1.0])
    """
    if samples < 1 or len(values) % samples:
        raise ValueError(f"problem_advantage_sums: {len(values)} traces do not split into groups of {samples}")
    n = len(values) // samples
    sums, steps, traces = np.zeros(n), np.zeros(n), np.zeros(n)
    for j, v in enumerate(values):
        if len(v) > 1:
            adv = prover_advantages(torch.tensor(v, dtype=torch.float64), prover_k)
            sums[j // samples] += float(adv.sum())
            steps[j // samples] += len(adv)
            traces[j // samples] += 1
    return sums, steps, traces


@dataclass
class RegimeConfig:
    """Settings of the regime pre-flight.

    Args:
        budgets (`list[int]`, defaults to `[6, 12, 24]`): beam sizes N of the exact-value searches; the largest is the
            N of Pass@N.
        alpha (`float`, defaults to `0.5`): α of the effective reward (the demo's search α).
        prover_k (`float`, defaults to `4`): K of the Best-of-K prover (the paper's Bo4).
        max_depth (`int`, defaults to `24`): most steps per searched trace.
        samples (`int`, defaults to `24`): sampled traces per problem for Pass@N, the advantage variance and the stall
            incentive.
        group_size (`int`, defaults to `8`): GRPO group size for the all-equal share.
        bootstrap_samples (`int`, defaults to `1000`): resamples over problems for the intervals of the exact gain
            and of the stall incentive.
        seed (`int`, defaults to `0`): sampling and bootstrap seed.
    """

    budgets: list[int] = field(default_factory=lambda: [6, 12, 24])
    alpha: float = 0.5
    prover_k: float = 4
    max_depth: int = 24
    samples: int = 24
    group_size: int = 8
    bootstrap_samples: int = 1000
    seed: int = 0


def regime_preflight(
    policy: Policy,
    exact_scorer: StepScorer,
    prompts: Sequence[str],
    golds: Sequence[str],
    grader: Grader,
    config: RegimeConfig | None = None,
) -> dict:
    """Measure the regime of `policy` on `prompts` with exact values from `exact_scorer` (see the module docs).

    Returns a dict with `pass_gap`, `sampled_accuracy`, `pass_at_n`, `rank_disagreement`, `exact_pav_vs_q_gain`
    and `exact_pav_vs_q_interval` (at the largest N), `exact_curves` (per N: PAV and Q-only accuracy),
    `rl_all_equal_groups`, `advantage_variance`, `prover_k`, the stall incentive (`mean_step_advantage` with
    `mean_step_advantage_interval`, a bootstrap over problems), `trace_advantage_sum` (the mean per-trace sum of
    advantages) beside `expected_trace_advantage` (what that sum averages to if the scorer's values are the
    sampling policy's own and traces end at their outcome: `expected_prover_advantage` of the root values, averaged
    over problems; a gap means the scorer is not the policy's exact value), and `verdict` (`regime_verdict`).
    """
    from .search import BeamSearchConfig, beam_search

    cfg = config or RegimeConfig()
    if len(prompts) != len(golds) or not prompts:
        raise ValueError(
            f"regime_preflight: need as many gold answers as prompts (>0), got {len(prompts)}, {len(golds)}"
        )
    fmt = policy.step_format
    traces = sample_traces(policy, prompts, cfg.samples, seed=cfg.seed)
    flat = [t for ts in traces for t in ts]
    grades = grade_batch(grader, [fmt.join(t) for t in flat], [g for g in golds for _ in range(cfg.samples)])
    correct = np.array(grades, dtype=float).reshape(len(prompts), cfg.samples)
    groups = sample_traces(policy, prompts, cfg.group_size, seed=cfg.seed + 1)
    group_grades = grade_batch(
        grader, [fmt.join(t) for ts in groups for t in ts], [g for g in golds for _ in range(cfg.group_size)]
    )
    values = exact_scorer.score([p for p in prompts for _ in range(cfg.samples)], flat)

    per_budget, rounds = {}, []
    for n in cfg.budgets:
        accs = {}
        for name, alpha in (("pav_beam", cfg.alpha), ("q_beam", 0.0)):
            search_cfg = BeamSearchConfig(
                budget=n, alpha=alpha, prover_k=cfg.prover_k, max_depth=cfg.max_depth, seed=cfg.seed
            )
            log = rounds if alpha != 0.0 else None
            out = beam_search(policy, exact_scorer, prompts, search_cfg, round_log=log)
            texts = [fmt.join(r.steps) for r in out]
            accs[name] = np.array(grade_batch(grader, texts, list(golds)), dtype=float)
        per_budget[n] = accs
    top = per_budget[max(cfg.budgets)]
    diff = top["pav_beam"] - top["q_beam"]
    rng = np.random.default_rng(cfg.seed)
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(cfg.bootstrap_samples)]
    lo, hi = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
    # The stall incentive, resampled by problem (a problem's traces share its values): a resample's mean is a ratio
    # of sums, and so is the estimate.
    sums, steps, n_traces = problem_advantage_sums(values, cfg.samples, cfg.prover_k)
    if not steps.sum():
        raise ValueError("regime_preflight: no sampled trace has a step")
    stall = float(sums.sum() / steps.sum())
    picks = rng.integers(0, len(prompts), (cfg.bootstrap_samples, len(prompts)))
    drawn = steps[picks].sum(axis=1)
    stall_boots = sums[picks].sum(axis=1)[drawn > 0] / drawn[drawn > 0]
    stall_lo, stall_hi = (float(x) for x in np.quantile(stall_boots, [0.025, 0.975]))
    roots = torch.tensor([values[i * cfg.samples][0] for i in range(len(prompts))], dtype=torch.float64)
    out = {
        "budgets": list(cfg.budgets),
        "sampled_accuracy": float(correct.mean()),
        "pass_at_n": float(correct.max(axis=1).mean()),
        "pass_gap": pass_gap(correct),
        "rank_disagreement": float(np.mean(rounds)) if rounds else 0.0,
        "beam_rounds": len(rounds),
        "exact_curves": {str(n): {m: float(a.mean()) for m, a in accs.items()} for n, accs in per_budget.items()},
        "exact_pav_vs_q_gain": float(diff.mean()),
        "exact_pav_vs_q_interval": [lo, hi],
        "exact_pav_vs_q_identical": bool(np.array_equal(top["pav_beam"], top["q_beam"])),
        "rl_all_equal_groups": all_equal_group_share(group_grades, cfg.group_size),
        "advantage_variance": advantage_variance(values, cfg.prover_k),
        "prover_k": cfg.prover_k,
        "mean_step_advantage": stall,
        "mean_step_advantage_interval": [stall_lo, stall_hi],
        "trace_advantage_sum": float(sums.sum() / n_traces.sum()),
        "expected_trace_advantage": float(expected_prover_advantage(roots, cfg.prover_k).mean()),
    }
    out["verdict"] = regime_verdict(out)
    return out


def regime_verdict(pre: dict, min_pass_gap: float = 0.05, min_disagreement: float = 0.05) -> dict:
    """Whether the pre-flight's numbers meet the necessary conditions for search and RL gains, with every reason
    written from the numbers (a sentence per condition). Necessary, not sufficient: the exact-value gain says
    whether they sufficed.

    Search needs a pass gap (something for a verifier to find) and rank disagreement (PAV beam is another search
    than Q-only beam). RL needs outcome groups that are neither always informative nor almost never (0 < share of
    all-equal groups < 0.8) and a prover advantage that varies across steps. Warnings (`rl_warnings`) decide
    nothing: the stall incentive, when the pre-flight measured it.

    Example:
        >>> v = regime_verdict({"pass_gap": 0.4, "rank_disagreement": 0.0, "rl_all_equal_groups": 0.5,
        ...                     "advantage_variance": 0.01, "exact_pav_vs_q_gain": 0.0,
        ...                     "exact_pav_vs_q_interval": [0.0, 0.0]})
        >>> v["search"], v["rl"]
        (False, True)
    """
    search_reasons, rl_reasons, rl_warnings = [], [], []
    gap, dis = pre["pass_gap"], pre["rank_disagreement"]
    search_reasons.append(
        f"Pass@N exceeds sampled accuracy by {gap:.3f} ({'≥' if gap >= min_pass_gap else '<'} {min_pass_gap})"
    )
    search_reasons.append(
        f"the effective reward keeps other children than Q alone in {dis:.1%} of beam rounds "
        f"({'≥' if dis >= min_disagreement else '<'} {min_disagreement:.0%})"
    )
    lo, hi = pre["exact_pav_vs_q_interval"]
    side = {"above": "above 0", "below": "below 0"}.get(interval_side(lo, hi, 3), "includes 0")
    search_reasons.append(
        f"with exact values PAV beam minus Q-only beam is {pre['exact_pav_vs_q_gain']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
        f"(interval {side})"
    )
    share, var = pre["rl_all_equal_groups"], pre["advantage_variance"]
    rl_reasons.append(f"{share:.1%} of GRPO groups have all-equal outcome rewards (in (0, 80%): {0.0 < share < 0.8})")
    rl_reasons.append(f"the prover advantage's variance over taken steps is {var:.4f} (> 0: {var > 0})")
    if "mean_step_advantage" in pre:  # it matters only where a step can stall
        m = pre["mean_step_advantage"]
        m_lo, m_hi = pre["mean_step_advantage_interval"]
        side = interval_side(m_lo, m_hi, 4)
        rl_warnings.append(
            f"the policy's own steps average a prover advantage of {m:+.4f} [{m_lo:+.4f}, {m_hi:+.4f}], {side} the 0 "
            "of a step that changes no value"
            + ("; a process term pays such a step over the average one" if side == "below" else "")
        )
    if "trace_advantage_sum" in pre and "expected_trace_advantage" in pre:
        rl_warnings.append(
            f"per trace the prover advantages sum to {pre['trace_advantage_sum']:+.3f} on average, against "
            f"{pre['expected_trace_advantage']:+.3f} if these values were the sampling policy's own and every trace "
            "ended at its outcome"
        )
    return {
        "search": gap >= min_pass_gap and dis >= min_disagreement,
        "rl": 0.0 < share < 0.8 and var > 0,
        "search_reasons": search_reasons,
        "rl_reasons": rl_reasons,
        "rl_warnings": rl_warnings,
    }
