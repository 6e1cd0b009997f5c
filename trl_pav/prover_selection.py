"""Automatic prover choice from the paper's Theorem 3.1 (`select_prover`).

From states of the base policy π (prefixes of traces sampled from it) and next steps sampled from π at each state,
measure for every candidate prover μ the theorem's two terms, distinguishability `E_s Var_{a~π} A^μ(s, a)` and
alignment `E_s Cov_{a~π}(A^μ, A^π)`, with bootstrap intervals over traces, and rank the candidates by
`trl_pav.values.prover_score` (the derivation and the ranking rule: docs/prover_selection.md).

Values come from the best source available: an exact `StepScorer` for `Q^π` when given, else Monte-Carlo rollouts of
π (`n_rollouts` per next step, seeded with `mix_seed`, batched through `policy.generate`). Candidates are Best-of-K
of π (`Q^μ = 1 - (1 - Q^π)^K`: exact from exact `Q^π`, else the unbiased estimator from the rollouts' success
counts), any exact `StepScorer` of `Q^μ` (the planted task's γ prover, `PlantedOracleScorer`), or any `Policy`
whose `Q^μ` is estimated by its own rollouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .generation.base import GenerationRequest, Policy, mix_seed
from .values import best_of_k, best_of_k_unbiased, cross_fit_terms, new_direction, prover_score, prover_update_angle

__all__ = [
    "ProverCandidate",
    "ProverRanking",
    "ProverSelection",
    "ProverSelectionConfig",
    "SelectProverArguments",
    "measure_provers",
    "run_select_prover",
    "select_prover",
]

# Seed streams (mix_seed's second part): one per kind of sample, so adding a candidate changes no other sample.
_TRACES, _NEXT, _BASE_ROLLOUTS, _PROVER_ROLLOUTS = 0, 1, 2, 3


@dataclass
class ProverSelectionConfig:
    """How `select_prover` samples states and values and how it ranks.

    Args:
        next_steps (`int`, defaults to `4`): next steps `M` sampled from π at each state (>= 2: the terms are
            unbiased sample moments over them).
        n_rollouts (`int`, defaults to `8`): rollouts per next step for each Monte-Carlo value (π's `Q^π` without an
            exact scorer, and each rollout-estimated prover). With `cross_fit` they are split into two halves.
        states_per_trace (`int` or `None`, defaults to `None`): states kept per sampled trace (a seeded random
            subset of its prefixes); `None` keeps every prefix (the root and every step but the last).
        alpha (`float`, defaults to `1.0`): weight of the process term in the effective reward `Q^π + α A^μ` the
            prover is for (the paper: about 1 on the planted task, 3-5 in RL, 0.5 in search); the score depends on it.
        cross_fit (`bool`, defaults to `True`): Monte-Carlo values from two independent halves of the rollouts, so
            their noise does not inflate the variances (`trl_pav.values.cross_fit_terms`); Best-of-K from counts
            then needs `K <= n_rollouts // 2`. `False`: all rollouts in both (biased up by the noise, `K <= n`).
        num_bootstrap (`int`, defaults to `1000`): bootstrap replicates (traces resampled with replacement; every
            candidate is measured on the same replicates, so their differences are paired).
        confidence (`float`, defaults to `0.95`): coverage of the percentile intervals.
        seed (`int`, defaults to `0`): seed of every sample (traces, next steps, rollouts, bootstrap).
    """

    next_steps: int = field(default=4, metadata={"help": "Next steps sampled from the base policy per state (>= 2)."})
    n_rollouts: int = field(default=8, metadata={"help": "Rollouts per next step for Monte-Carlo values."})
    states_per_trace: int | None = field(
        default=None, metadata={"help": "States kept per trace (random subset; None: every prefix)."}
    )
    alpha: float = field(default=1.0, metadata={"help": "Weight α of the process term the prover is chosen for."})
    cross_fit: bool = field(
        default=True, metadata={"help": "Monte-Carlo values from two independent halves (unbiased variances)."}
    )
    num_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap replicates over traces."})
    confidence: float = field(default=0.95, metadata={"help": "Coverage of the bootstrap intervals."})
    seed: int = field(default=0, metadata={"help": "Seed of traces, next steps, rollouts and the bootstrap."})

    def __post_init__(self) -> None:
        if self.next_steps < 2:
            raise ValueError(
                f"ProverSelectionConfig.next_steps must be >= 2 (a variance over steps), got {self.next_steps}"
            )
        if self.n_rollouts < (2 if self.cross_fit else 1):
            raise ValueError(
                f"ProverSelectionConfig.n_rollouts must be >= {2 if self.cross_fit else 1}"
                f"{' (two halves with cross_fit)' if self.cross_fit else ''}, got {self.n_rollouts}"
            )
        if self.states_per_trace is not None and self.states_per_trace < 1:
            raise ValueError(
                f"ProverSelectionConfig.states_per_trace must be >= 1 or None, got {self.states_per_trace}"
            )
        _check_ranking_settings(self)


def _check_ranking_settings(cfg) -> None:
    """The settings every prover ranking shares (`alpha`, `num_bootstrap`, `confidence`), named by config class."""
    owner = type(cfg).__name__
    if not cfg.alpha > 0:
        raise ValueError(f"{owner}.alpha must be > 0, got {cfg.alpha}")
    if cfg.num_bootstrap < 1:
        raise ValueError(f"{owner}.num_bootstrap must be >= 1, got {cfg.num_bootstrap}")
    if not 0 < cfg.confidence < 1:
        raise ValueError(f"{owner}.confidence must be in (0, 1), got {cfg.confidence}")


@dataclass
class ProverCandidate:
    """One candidate prover: exactly one of `k` (Best-of-K of the base policy), `scorer` (exact `Q^μ`: a
    `StepScorer` returning `[root, after step 1, ...]` per trace) or `policy` (`Q^μ` from its rollouts).

    Example:
        >>> ProverCandidate.best_of(4).name
        'Bo4'
    """

    name: str
    k: int | None = None
    scorer: Any = None
    policy: Any = None

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.k, self.scorer, self.policy)]
        if sum(given) != 1:
            raise ValueError(f"prover candidate {self.name!r}: give exactly one of k, scorer and policy")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"prover candidate {self.name!r}: K must be an integer >= 1, got {self.k!r}")
        if self.scorer is not None and not callable(getattr(self.scorer, "score", None)):
            raise ValueError(f"prover candidate {self.name!r}: scorer has no score(prompts, steps) method")
        if self.policy is not None and not isinstance(self.policy, Policy):
            raise ValueError(
                f"prover candidate {self.name!r}: policy does not implement Policy (name, step_format, generate)"
            )

    @classmethod
    def best_of(cls, k: int) -> ProverCandidate:
        """Best-of-K of the base policy, named `BoK`."""
        return cls(name=f"Bo{k}", k=k)

    @property
    def kind(self) -> str:
        """`"best_of_k"`, `"scorer"` or `"policy"`."""
        return "best_of_k" if self.k is not None else "scorer" if self.scorer is not None else "policy"


@dataclass
class ProverRanking:
    """One ranked prover. Intervals are bootstrap percentile intervals over traces at the config's confidence.

    Attributes:
        rank: 1 is the best score.
        name, kind: the candidate's name and kind (`"best_of_k"`, `"scorer"`, `"policy"`).
        score: `prover_score` (`sin φ cos φ`), the ranking key; `score_interval` its interval.
        prob_best: share of bootstrap replicates in which this candidate has the highest score.
        distinguishability: `E_s Var_{a~π} A^μ(s, a)`; `distinguishability_interval`.
        alignment: `E_s Cov_{a~π}(A^μ, A^π)`; `alignment_interval`.
        new_direction: `D - Al²/V`, the distinguishability beyond `A^π`'s direction; `new_direction_interval`.
        base_distinguishability: `V = E_s Var_{a~π} A^π` (the same for every candidate).
        angle_degrees: φ between the effective reward's update and outcome-only RL's (`prover_update_angle`).
        num_states: states measured.
    """

    rank: int
    name: str
    kind: str
    score: float
    score_interval: tuple[float, float]
    prob_best: float
    distinguishability: float
    distinguishability_interval: tuple[float, float]
    alignment: float
    alignment_interval: tuple[float, float]
    new_direction: float
    new_direction_interval: tuple[float, float]
    base_distinguishability: float
    angle_degrees: float
    num_states: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _RankedResult:
    """`to_dict` of a dataclass holding `ranking` rows (each with `name` and `to_dict`), best first."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (`best` is the top row's name)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "ranking"}
        return {"best": self.ranking[0].name, **out, "ranking": [r.to_dict() for r in self.ranking]}


@dataclass
class ProverSelection(_RankedResult):
    """What `measure_provers` measured: the ranking and what it cost.

    Attributes:
        ranking: the `ProverRanking` rows, best first.
        num_traces, num_states: sampled traces and the states measured on them.
        q_pi_source: `"exact"` (a scorer) or `"monte_carlo"`.
        rollouts: rollouts generated (π's and the rollout-estimated provers'); `generated_tokens` their tokens plus
            those of the traces and next steps.
        config: the `ProverSelectionConfig` as a dict.
    """

    ranking: list[ProverRanking]
    num_traces: int
    num_states: int
    q_pi_source: str
    rollouts: int
    generated_tokens: int
    config: dict[str, Any]

    @property
    def best(self) -> ProverRanking:
        """The top-ranked prover."""
        return self.ranking[0]


def _as_candidates(candidates: Sequence[int | ProverCandidate], what: str = "select_prover") -> list[ProverCandidate]:
    out = [ProverCandidate.best_of(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in candidates]
    if not out:
        raise ValueError(f"{what}: no candidate provers given")
    for i, c in enumerate(out):
        if not isinstance(c, ProverCandidate):
            raise ValueError(f"{what}: candidate {i} must be an int K or a ProverCandidate, got {c!r:.80}")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: candidate names must be distinct, got {names}")
    return out


def _checked_inputs(
    what: str, policy, candidates, prompts: Sequence[str], golds: Sequence[str] | None
) -> tuple[list[ProverCandidate], list[str], list[str]]:
    """The candidates, prompts and gold answers of a prover ranking (`what`), checked; golds default to `""`."""
    cands = _as_candidates(candidates, what)
    prompts = list(prompts)
    golds = [""] * len(prompts) if golds is None else list(golds)
    if not prompts:
        raise ValueError(f"{what}: no prompts")
    if len(golds) != len(prompts):
        raise ValueError(f"{what}: {len(prompts)} prompts but {len(golds)} gold answers")
    if not isinstance(policy, Policy):
        raise ValueError(f"{what}: policy does not implement Policy (name, step_format, generate)")
    return cands, prompts, golds


def _last_values(scorer, prompts: list[str], steps: list[tuple[str, ...]], what: str) -> np.ndarray:
    rows = scorer.score(prompts, [list(s) for s in steps])
    if len(rows) != len(steps):
        raise ValueError(f"{what}: score returned {len(rows)} rows for {len(steps)} traces")
    out = np.empty(len(rows))
    for i, (row, s) in enumerate(zip(rows, steps)):
        if len(row) != len(s) + 1:
            raise ValueError(f"{what}: row {i} has {len(row)} values for {len(s)} steps (expected root + one per step)")
        v = float(row[-1])
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{what}: row {i} value {v} is not a probability in [0, 1]")
        out[i] = v
    return out


def _rollout_counts(policy, grader, step_format, pairs, terminal_values, golds, n, seed, stream):
    """Success counts of n rollouts per (prompt, steps) pair, split into the first and second half of the seeds.

    Pairs whose last step ended the trace are not rolled out: their outcome is already known (n identical)."""
    half = n // 2
    counts = np.zeros((len(pairs), 2))
    requests, owners = [], []
    for i, (prompt, steps) in enumerate(pairs):
        if terminal_values[i] is not None:
            counts[i] = [terminal_values[i] * half, terminal_values[i] * (n - half)]
            continue
        for r in range(n):
            requests.append(GenerationRequest(prompt, steps, seed=mix_seed(seed, stream, i, r)))
            owners.append((i, 0 if r < half else 1))
    gens = policy.generate(requests) if requests else []
    tokens = 0
    for req, gen, (i, h) in zip(requests, gens, owners):
        tokens += int(gen.num_tokens)
        counts[i, h] += float(grader.grade(step_format.separator.join([*req.steps, *gen.steps]), golds[i]))
    return counts, len(requests), tokens


def measure_provers(
    policy: Policy,
    prompts: Sequence[str],
    grader,
    candidates: Sequence[int | ProverCandidate],
    config: ProverSelectionConfig | None = None,
    golds: Sequence[str] | None = None,
    scorer=None,
) -> ProverSelection:
    """`select_prover` with its costs and sample sizes (a `ProverSelection`). Arguments as `select_prover`'s."""
    cfg = config or ProverSelectionConfig()
    cands, prompts, golds = _checked_inputs("select_prover", policy, candidates, prompts, golds)
    if scorer is None:
        half = cfg.n_rollouts // 2 if cfg.cross_fit else cfg.n_rollouts
        for c in cands:
            if c.k is not None and c.k > half:
                raise ValueError(
                    f"select_prover: candidate {c.name!r} has K = {c.k} but Monte-Carlo Q^π has {half} rollouts per "
                    f"{'half' if cfg.cross_fit else 'next step'}; the unbiased Best-of-K estimator needs K <= that: "
                    f"raise n_rollouts to >= {2 * c.k if cfg.cross_fit else c.k}, or pass an exact scorer"
                )
    fmt = policy.step_format
    seed = cfg.seed
    # 1. Traces of π; their prefixes are the states.
    trace_requests = [GenerationRequest(p, seed=mix_seed(seed, _TRACES, i)) for i, p in enumerate(prompts)]
    traces = policy.generate(trace_requests)
    tokens = sum(int(g.num_tokens) for g in traces)
    rng = np.random.default_rng(mix_seed(seed, 99))
    states: list[tuple[int, tuple[str, ...]]] = []  # (trace index, prefix)
    for i, g in enumerate(traces):
        hs = list(range(len(g.steps)))  # prefix lengths 0..H-1: states at which π took another step
        if cfg.states_per_trace is not None and len(hs) > cfg.states_per_trace:
            hs = sorted(rng.choice(hs, size=cfg.states_per_trace, replace=False).tolist())
        states.extend((i, tuple(g.steps[:h])) for h in hs)
    if not states:
        raise ValueError(f"select_prover: none of the {len(prompts)} sampled traces has a step (no state to measure)")
    # 2. M next steps per state, sampled from π.
    m = cfg.next_steps
    next_requests = [
        GenerationRequest(prompts[i], prefix, seed=mix_seed(seed, _NEXT, s, j))
        for s, (i, prefix) in enumerate(states)
        for j in range(m)
    ]
    nexts = policy.generate(next_requests, stop_at_step=True)
    tokens += sum(int(g.num_tokens) for g in nexts)
    pair_prompts, pair_steps, pair_golds, terminal = [], [], [], []
    for req, g in zip(next_requests, nexts):
        i = states[len(pair_steps) // m][0]
        steps = (*req.steps, *g.steps[:1])
        pair_prompts.append(req.prompt)
        pair_steps.append(steps)
        pair_golds.append(golds[i])
        ended = g.finished or not g.steps  # the trace ends with this step: its outcome is known
        terminal.append(float(grader.grade(fmt.separator.join(steps), golds[i])) if ended else None)
    pairs = list(zip(pair_prompts, pair_steps))
    num_pairs, rollouts = len(pairs), 0
    # 3. Q^π of every (state, next step): exact, or two Monte-Carlo halves.
    counts = None
    if scorer is not None:
        q = _last_values(scorer, pair_prompts, pair_steps, "select_prover scorer (Q^π)")
        q_pi = (q, q)
        q_pi_source = "exact"
    else:
        counts, r, t = _rollout_counts(
            policy, grader, fmt, pairs, terminal, pair_golds, cfg.n_rollouts, seed, _BASE_ROLLOUTS
        )
        rollouts, tokens = rollouts + r, tokens + t
        q_pi = _halves(counts, cfg)
        q_pi_source = "monte_carlo"
    # 4. Q^μ of every candidate on the same pairs.
    q_mus = []
    for c in cands:
        if c.k is not None:
            if counts is None:
                q = best_of_k(torch.as_tensor(q_pi[0], dtype=torch.float64), c.k).numpy()
                q_mus.append((q, q))
            else:
                q_mus.append(_halves(counts, cfg, k=c.k))
        elif c.scorer is not None:
            q = _last_values(c.scorer, pair_prompts, pair_steps, f"prover candidate {c.name!r} scorer")
            q_mus.append((q, q))
        else:
            c_counts, r, t = _rollout_counts(
                c.policy, grader, fmt, pairs, terminal, pair_golds, cfg.n_rollouts, seed, _PROVER_ROLLOUTS
            )
            rollouts, tokens = rollouts + r, tokens + t
            q_mus.append(_halves(c_counts, cfg))
    # 5. Per-state terms, then the bootstrap over traces (clusters: a trace's states are not independent).
    num_states = len(states)
    shape = (num_states, m)
    pa, pb = (torch.as_tensor(x.reshape(shape)) for x in q_pi)
    per_state = [
        cross_fit_terms(torch.as_tensor(a.reshape(shape)), torch.as_tensor(b.reshape(shape)), pa, pb) for a, b in q_mus
    ]
    owner = np.array([i for i, _ in states])
    traces_used = np.unique(owner)
    index = np.searchsorted(traces_used, owner)
    n_traces = len(traces_used)
    state_counts = np.bincount(index, minlength=n_traces).astype(float)
    boot_rng = np.random.default_rng(mix_seed(seed, 100))
    weights = boot_rng.multinomial(n_traces, np.full(n_traces, 1.0 / n_traces), size=cfg.num_bootstrap).astype(float)
    weights = np.vstack([np.ones(n_traces), weights])  # row 0: the sample itself (the point estimate)
    denom = weights @ state_counts

    def aggregate(x: torch.Tensor) -> torch.Tensor:
        sums = np.bincount(index, weights=x.numpy(), minlength=n_traces)
        return torch.as_tensor(weights @ sums / denom)

    v = aggregate(per_state[0][2])
    if float(v[0]) <= 0:
        raise ValueError(
            f"select_prover: the base policy's values do not vary across its sampled next steps (E_s Var Q^π = "
            f"{float(v[0]):.3g} over {num_states} states): there is no outcome direction to compare provers with. "
            "Sample more traces or next steps, or use a base policy that sometimes succeeds"
        )
    measured = []
    for terms in per_state:
        d, al = aggregate(terms[0]), aggregate(terms[1])
        measured.append(
            {
                "d": d,
                "al": al,
                "new": new_direction(d, al, v),
                "score": prover_score(d, al, v, cfg.alpha),
                "angle": prover_update_angle(d, al, v, cfg.alpha),
            }
        )
    scores = torch.stack([x["score"][1:] for x in measured])  # (C, R)
    wins = np.bincount(scores.argmax(0).numpy(), minlength=len(cands)) / cfg.num_bootstrap
    lo_q, hi_q = (1 - cfg.confidence) / 2, 1 - (1 - cfg.confidence) / 2

    def interval(x: torch.Tensor) -> tuple[float, float]:
        reps = x[1:].numpy()
        return float(np.quantile(reps, lo_q)), float(np.quantile(reps, hi_q))

    order = sorted(range(len(cands)), key=lambda c: -float(measured[c]["score"][0]))  # stable: ties keep input order
    ranking = [
        ProverRanking(
            rank=r + 1,
            name=cands[c].name,
            kind=cands[c].kind,
            score=float(measured[c]["score"][0]),
            score_interval=interval(measured[c]["score"]),
            prob_best=float(wins[c]),
            distinguishability=float(measured[c]["d"][0]),
            distinguishability_interval=interval(measured[c]["d"]),
            alignment=float(measured[c]["al"][0]),
            alignment_interval=interval(measured[c]["al"]),
            new_direction=float(measured[c]["new"][0]),
            new_direction_interval=interval(measured[c]["new"]),
            base_distinguishability=float(v[0]),
            angle_degrees=float(measured[c]["angle"][0]),
            num_states=num_states,
        )
        for r, c in enumerate(order)
    ]
    del num_pairs
    return ProverSelection(
        ranking=ranking,
        num_traces=len(prompts),
        num_states=num_states,
        q_pi_source=q_pi_source,
        rollouts=rollouts,
        generated_tokens=tokens,
        config=asdict(cfg),
    )


def _halves(counts: np.ndarray, cfg: ProverSelectionConfig, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair value estimates (Best-of-K when k > 1) from success counts: two halves, or all rollouts twice."""
    n = cfg.n_rollouts
    if cfg.cross_fit:
        sizes = (n // 2, n - n // 2)
        return tuple(best_of_k_unbiased(torch.as_tensor(counts[:, h]), sizes[h], k).numpy() for h in range(2))
    q = best_of_k_unbiased(torch.as_tensor(counts.sum(1)), n, k).numpy()
    return q, q


def select_prover(
    policy: Policy,
    prompts: Sequence[str],
    grader,
    candidates: Sequence[int | ProverCandidate],
    config: ProverSelectionConfig | None = None,
    golds: Sequence[str] | None = None,
    scorer=None,
) -> list[ProverRanking]:
    """Rank candidate provers for a base policy by Theorem 3.1's terms, measured on the policy's own states.

    One trace of `policy` is sampled per prompt (repeat a prompt for more); every prefix of it (the root and each
    step but the last) is a state, and `config.next_steps` next steps are sampled there. For each candidate the
    theorem's distinguishability `E_s Var_{a~π} A^μ` and alignment `E_s Cov_{a~π}(A^μ, A^π)` are measured on those
    steps, with bootstrap intervals over traces, and the rows come back ranked by `prover_score` (`sin φ cos φ` of
    the angle between the effective reward's update and outcome-only RL's; 0 for K = 1, which only rescales the
    outcome direction; low for provers that are too weak or too strong). See docs/prover_selection.md.

    Args:
        policy: the base policy π.
        prompts: rendered prompts, one trace each.
        grader: `grade(completion, gold) -> float`, for outcomes of rollouts and of steps that end a trace.
        candidates: ints (K of Best-of-K of π) or `ProverCandidate`s.
        config: `ProverSelectionConfig` (defaults when `None`).
        golds: gold answers per prompt (`""` for all when `None`).
        scorer: an exact `StepScorer` of `Q^π` (`None`: Monte-Carlo rollouts of `policy`).

    Returns:
        `ProverRanking` rows, best first.

    Example:
        >>> from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> gammas = [ProverCandidate(f"gamma{g:g}", scorer=PlantedOracleScorer(task, g)) for g in (1.0, 30.0)]
        >>> rows = select_prover(
        ...     PlantedProverPolicy(task, 5.0), [task.prompt] * 32, task.grader, [1, *gammas],
        ...     ProverSelectionConfig(num_bootstrap=100), scorer=PlantedOracleScorer(task, 5.0),
        ... )
        >>> [r.name for r in rows], rows[-1].score  # Bo1 is π itself: nothing new
        (['gamma30', 'gamma1', 'Bo1'], 0.0)
    """
    return measure_provers(policy, prompts, grader, candidates, config, golds, scorer).ranking


# ---- `trl-pav select-prover` ----------------------------------------------------------------------------------------
@dataclass
class SelectProverArguments:
    """Arguments of `trl-pav select-prover` besides `ProverSelectionConfig`: problems (one trace of the base policy
    per problem), the base policy and the candidates.

    Args:
        task (`str` or `None`, defaults to `None`): a built-in task (`"planted"`, `"arithmetic"`, `"rewrite"`).
        task_options (`str` or `None`, defaults to `None`): the task's settings as a JSON object (e.g. another
            planted string: `'{"planted": [0, 0, 1], "length": 6}'`).
        dataset_name (`str` or `None`, defaults to `None`): or problems from a file or Hub id (MATH / GSM8K /
            `prompt`-`gold` layouts, as `trl-pav label`); needs `policy_model_name_or_path`.
        dataset_config (`str` or `None`, defaults to `None`): the dataset's configuration name.
        dataset_split (`str`, defaults to `"train"`): the dataset split.
        dataset_prompt_column (`str` or `None`, defaults to `None`): the problem column (None: prompt/problem/question).
        dataset_answer_column (`str` or `None`, defaults to `None`): the answer column (None: gold/answer/solution).
        num_problems (`int`, defaults to `64`): problems, one trace each (their prefixes are the states).
        problems_seed (`int`, defaults to `0`): seed of a task's problem generator.
        separator (`str` or `None`, defaults to `None`): a dataset's step separator (escapes read; None: newline).
        policy_model_name_or_path (`str` or `None`, defaults to `None`):
            The base policy: an HF model folder or Hub id (`Q^π` from Monte-Carlo rollouts). `None`: the task's
            procedural policy with exact values (planted: the γ prover `base_gamma`; arithmetic:
            `NoisyArithmeticPolicy(error_rate)`; rewrite: `RewritePolicy` with `error_rate` for every kind).
        ks (`list[int]`, defaults to `[1, 2, 4, 8, 16, 32]`): Best-of-K candidates.
        gammas (`list[float]`, defaults to `[]`): planted task only: γ procedural provers (exact DP values).
        prover_model_name_or_path (`list[str]`, defaults to `[]`): further candidates: HF policies whose `Q^μ` is
            estimated by their rollouts.
        base_gamma (`float`, defaults to `5.0`): γ of the procedural planted base policy (the paper's SFT prover).
        error_rate (`float`, defaults to `0.2`): per-step error rate of the procedural arithmetic / rewrite policy.
        temperature (`float`, defaults to `1.0`): sampling temperature of HF policies.
        max_new_tokens (`int`, defaults to `256`): token limit per trace or rollout of HF policies.
        generation_batch_size (`int`, defaults to `64`): sequences per `generate` call of HF policies.
        method (`str`, defaults to `"theorem"`): `"theorem"` ranks by Theorem 3.1's terms (`select_prover`);
            `"lookahead"` by the base policy's success after idealised natural-gradient steps on each prover's
            advantages (`trl_pav.lookahead_provers`: no `Q^π` needed, so it also ranks for a policy that never
            succeeds; it uses the config's `alpha`, `n_rollouts`, `num_bootstrap`, `confidence` and `seed`).
        lookahead_step_sizes (`list[float]`, defaults to `[1.0, 3.0, 10.0, 30.0]`): with `"lookahead"`, the step
            sizes c the score averages over.
        lookahead_candidates (`int`, defaults to `8`): with `"lookahead"`, steps drawn from the base policy per state.
    """

    task: str | None = field(default=None, metadata={"help": "Built-in task: planted, arithmetic or rewrite."})
    task_options: str | None = field(default=None, metadata={"help": "The task's settings as a JSON object."})
    dataset_name: str | None = field(default=None, metadata={"help": "Or problems from a file or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Dataset split."})
    dataset_prompt_column: str | None = field(default=None, metadata={"help": "Problem column of the dataset."})
    dataset_answer_column: str | None = field(default=None, metadata={"help": "Answer column of the dataset."})
    num_problems: int = field(default=64, metadata={"help": "Problems, one base-policy trace each."})
    problems_seed: int = field(default=0, metadata={"help": "Seed of a task's problem generator."})
    separator: str | None = field(default=None, metadata={"help": "A dataset's step separator (escapes read)."})
    policy_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base policy folder or Hub id (None: the task's procedural policy)."}
    )
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32], metadata={"help": "Best-of-K candidates."})
    gammas: list[float] = field(default_factory=list, metadata={"help": "Planted γ prover candidates (exact values)."})
    prover_model_name_or_path: list[str] = field(
        default_factory=list, metadata={"help": "HF prover policies (values from their rollouts)."}
    )
    base_gamma: float = field(default=5.0, metadata={"help": "γ of the procedural planted base policy."})
    error_rate: float = field(default=0.2, metadata={"help": "Error rate of the procedural arithmetic/rewrite policy."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of HF policies."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token limit per trace or rollout (HF policies)."})
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generate call (HF policies)."})
    method: str = field(
        default="theorem",
        metadata={
            "help": "theorem (Theorem 3.1's terms) or lookahead (tilted policies' success).",
            "choices": ["theorem", "lookahead"],
        },
    )
    lookahead_step_sizes: list[float] = field(
        default_factory=lambda: [1.0, 3.0, 10.0, 30.0],
        metadata={"help": "Lookahead: natural-gradient step sizes c the score averages over."},
    )
    lookahead_candidates: int = field(default=8, metadata={"help": "Lookahead: base-policy steps drawn per state."})


def run_select_prover(args: SelectProverArguments, config: ProverSelectionConfig) -> dict[str, Any]:
    """What `trl-pav select-prover` prints: `ProverSelection.to_dict()` plus the task and the base policy's name.

    Example:
        >>> args = SelectProverArguments(task="planted", num_problems=16, ks=[1, 8], gammas=[30.0])
        >>> out = run_select_prover(args, ProverSelectionConfig(num_bootstrap=50))
        >>> out["best"] != "Bo1", [r["name"] for r in out["ranking"]][-1]
        (True, 'Bo1')
    """
    from .scripts.common import GenerationArguments, ProblemArguments, load_stage_problems
    from .steps import parse_separator
    from .tasks import (
        ArithmeticTask,
        NoisyArithmeticPolicy,
        PlantedOracleScorer,
        PlantedProverPolicy,
        PlantedTask,
        RewritePolicy,
        RewriteTask,
    )
    from .tasks.rewrite import MOVE_KINDS

    if args.method not in ("theorem", "lookahead"):  # before any problem or policy is loaded
        raise ValueError(f"select-prover: method must be 'theorem' or 'lookahead', got {args.method!r}")
    if args.num_problems is None or args.num_problems < 1:
        raise ValueError(f"select-prover: num_problems must be >= 1 (one trace per problem), got {args.num_problems}")
    if args.dataset_name is not None and args.policy_model_name_or_path is None:
        raise ValueError("select-prover: a dataset needs policy_model_name_or_path (no procedural policy for it)")
    problem_args = ProblemArguments(
        dataset_name=args.dataset_name,
        dataset_config=args.dataset_config,
        task=args.task,
        task_options=args.task_options,
        num_problems=args.num_problems,
        problems_seed=args.problems_seed,
        dataset_prompt_column=args.dataset_prompt_column,
        dataset_answer_column=args.dataset_answer_column,
    )
    separator = None if args.separator is None else parse_separator(args.separator)
    problems, grader, step_format = load_stage_problems(problem_args, args.dataset_split, separator)
    gen_args = GenerationArguments(
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        generation_batch_size=args.generation_batch_size,
    )
    task = None
    if args.task is not None:
        from .tasks import get_task

        task = get_task(args.task, args.task_options)
        grader = task.grader
    if args.gammas and not isinstance(task, PlantedTask):
        raise ValueError(f"select-prover: gammas are planted-task provers; task is {args.task!r}")
    candidates: list[int | ProverCandidate] = list(args.ks)
    candidates += [ProverCandidate(f"gamma{g:g}", scorer=PlantedOracleScorer(task, g)) for g in args.gammas]
    scorer = None
    if args.policy_model_name_or_path is not None:
        from trl import ModelConfig

        from .scripts.common import load_stage_policy

        gen_model = ModelConfig()
        policy = load_stage_policy(args.policy_model_name_or_path, gen_model, gen_args, step_format)
        for path in args.prover_model_name_or_path:
            prover = load_stage_policy(path, gen_model, gen_args, step_format)
            candidates.append(ProverCandidate(path, policy=prover))
    else:
        if args.prover_model_name_or_path:
            raise ValueError("select-prover: prover_model_name_or_path needs policy_model_name_or_path (an HF base)")
        if isinstance(task, PlantedTask):
            policy, scorer = PlantedProverPolicy(task, args.base_gamma), PlantedOracleScorer(task, args.base_gamma)
        elif isinstance(task, ArithmeticTask):
            policy = scorer = NoisyArithmeticPolicy(task, args.error_rate)
        elif isinstance(task, RewriteTask):
            policy = scorer = RewritePolicy(task, dict.fromkeys(MOVE_KINDS, args.error_rate))
        else:
            raise ValueError("select-prover: a dataset needs policy_model_name_or_path (no procedural policy for it)")
    name = {"task": args.task or args.dataset_name, "policy": policy.name}
    if args.method == "lookahead":
        from .prover_lookahead import ProverLookaheadConfig, lookahead_provers

        look = ProverLookaheadConfig(
            step_sizes=list(args.lookahead_step_sizes),
            candidates_per_step=args.lookahead_candidates,
            alpha=config.alpha,
            n_rollouts=config.n_rollouts,
            num_bootstrap=config.num_bootstrap,
            confidence=config.confidence,
            seed=config.seed,
        )
        result = lookahead_provers(policy, problems["prompt"], grader, candidates, look, golds=problems["gold"])
        return {**name, "method": "lookahead", **result.to_dict()}
    selection = measure_provers(
        policy, problems["prompt"], grader, candidates, config, golds=problems["gold"], scorer=scorer
    )
    return {**name, "method": "theorem", **selection.to_dict()}
