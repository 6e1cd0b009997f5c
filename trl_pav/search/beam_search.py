"""Step-level beam search scored by the effective reward `Q̂^π + α·Â^μ` (the paper's test-time search)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..generation.base import GenerationRequest, Policy, mix_seed
from ..modeling import StepScorer
from ..values import best_of_k, effective_reward
from .base import AnswerFn, ComputeLedger, SearchResult, counted_generate, counted_score

__all__ = ["TRUNCATED_STEP", "BeamSearchConfig", "beam_search", "check_search_numbers", "child_rewards"]

TRUNCATED_STEP = ("drop", "keep")


def check_search_numbers(
    alpha: float, prover_k: float, expansions: int, max_depth: int, truncated_step: str = "drop"
) -> None:
    """Raise `ValueError` naming a search setting that is not usable (NaN α would rank beams at random)."""
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    if not isinstance(prover_k, (int, float)) or not math.isfinite(prover_k) or prover_k < 1:
        raise ValueError(f"prover_k must be a finite number >= 1, got {prover_k!r}")
    if expansions < 1:
        raise ValueError(f"expansions must be >= 1, got {expansions}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    if truncated_step not in TRUNCATED_STEP:
        raise ValueError(f"truncated_step must be 'drop' or 'keep', got {truncated_step!r}")


@dataclass
class BeamSearchConfig:
    """Configuration of step-level beam search.

    Args:
        budget (`int`, defaults to `12`): N, the children sampled per step for one prompt. The first step samples N
            children from the prompt; afterwards N // C beams are kept and each is expanded C times.
        expansions (`int`, defaults to `3`): C, next steps sampled per beam (the paper's C = 3).
        alpha (`float`, defaults to `0.5`): weight of the prover advantage (paper: ~0.5 for small models). 0 gives
            the Q-only baseline.
        prover_k (`float`, defaults to `4`): K of the Best-of-K prover for advantages (1 when the scorer already
            predicts a separate prover's values).
        max_depth (`int`, defaults to `16`): most steps per trace; unfinished beams are dropped there.
        seed (`int`, defaults to `0`): sampling seed.
        merge_duplicates (`bool`, defaults to `False`): keep one beam per distinct child. The default, as in the
            paper, expands every kept child independently, so identical children may take several beams (each then
            expanded with its own seeds) and a state that many children reach is sampled more. Merging trades that
            for diversity; where correct steps coincide (a unique correct derivation) it leaves one beam on the
            correct path and fills the rest with wrong ones.
        truncated_step (`str`, defaults to `"drop"`): what a child cut at the policy's step token limit
            (`max_step_tokens`) becomes. `"drop"`: nothing (a fragment is not a step); `"keep"`: a step holding the cut
            text (its trailing part of a separator removed), so no sample is lost when real steps run longer than
            the limit. Either way the ledger counts them (`truncated_dropped`, `truncated_kept`).
    """

    budget: int = 12
    expansions: int = 3
    alpha: float = 0.5
    prover_k: float = 4
    max_depth: int = 16
    seed: int = 0
    merge_duplicates: bool = False
    truncated_step: str = "drop"

    def __post_init__(self) -> None:
        check_search_numbers(self.alpha, self.prover_k, self.expansions, self.max_depth, self.truncated_step)
        if self.expansions < 1 or self.budget < self.expansions:
            raise ValueError(f"need budget >= expansions >= 1, got budget={self.budget}, expansions={self.expansions}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")

    @property
    def beams(self) -> int:
        """B, beams kept per step."""
        return self.budget // self.expansions


@dataclass
class _Node:
    steps: tuple[str, ...]
    value: float  # Q̂^π after the last step (the root value for the empty trace)
    finished: bool = False


def child_rewards(parent_values: Sequence[float], child_values: Sequence[float], alpha: float, k: float) -> list[float]:
    """Effective reward of each child: `Q(child) + α·(f(Q(child)) - f(Q(parent)))`, `f` the Best-of-K transform.

    Example (the paper's Figure 2: a -0.05-progress child of a 0.80 state vs a +0.20-progress child of a 0.50 state):
        >>> [round(r, 3) for r in child_rewards([0.80, 0.50], [0.75, 0.70], alpha=0.5, k=1)]
        [0.725, 0.8]
    """
    if not parent_values:
        return []
    parents = torch.tensor(parent_values, dtype=torch.float64)
    children = torch.tensor(child_values, dtype=torch.float64)
    advantage = best_of_k(children, k) - best_of_k(parents, k)
    return effective_reward(children, advantage, alpha).tolist()


def _select(
    ranked: list[tuple[float, int, _Node]], slots: int, merge_duplicates: bool, answer_fn: AnswerFn | None
) -> tuple[list[_Node], list[_Node], list[_Node]]:
    """One prompt's survivors of a round, best reward first (ties to the earlier sample): the live beams, the
    finished traces that join the answer pool, and the finished traces without an answer (dead ends)."""
    seen, keep, pooled, dead = set(), [], [], []
    for _, _, child in sorted(ranked, key=lambda t: (-t[0], t[1])):
        if merge_duplicates and (child.steps, child.finished) in seen:
            continue
        seen.add((child.steps, child.finished))
        if child.finished and answer_fn is not None and answer_fn(list(child.steps)) is None:
            dead.append(child)
        elif slots > 0:
            slots -= 1
            (pooled if child.finished else keep).append(child)
    return keep, pooled, dead


def beam_search(
    policy: Policy,
    scorer: StepScorer,
    prompts: Sequence[str],
    config: BeamSearchConfig | None = None,
    ledger: ComputeLedger | None = None,
    prompt_ids: Sequence[int] | None = None,
    answer_fn: AnswerFn | None = None,
    round_log: list[bool] | None = None,
) -> list[SearchResult]:
    """Beam search over steps for every prompt at once (generation and scoring batched across prompts and beams).

    Samples are seeded by (config seed, prompt id, depth, beam rank, expansion), with prompt ids defaulting to
    positions: searching a prompt alone with its id gives the same result as searching it in a batch.

    Children are ranked by `Q̂^π(child) + α·(f(Q̂^π(child)) - f(Q̂^π(parent)))` with `f` the BoK transform, and the
    best B (duplicates removed, ties to the earlier sample) take the beam's slots. A child cut at the step token limit
    (`Generation.truncated`) is dropped, or with `truncated_step="keep"` its cut text is the step (`ledger` counts
    both). A finished child with a readable answer (`answer_fn`; any finished child when it is None) that wins a slot
    joins the answer pool and keeps its slot for good, so the pool holds at most B traces and the search ends when B
    traces have finished; a finished child without an answer is a dead end. The answer is the pooled trace with the
    highest `Q̂^π`. Only if nothing answered within `max_depth` does the search fall back to the highest-valued dead
    end or last live beam (`SearchResult.answered` is False).

    With `round_log` given, every round of every prompt appends whether the children kept under the effective
    reward differ from those the Q-only rule (α = 0) would keep from the same children (the regime pre-flight's
    rank disagreement, `trl_pav.regime`).

    Example:
        >>> from trl_pav.tasks import PlantedTask, PlantedProverPolicy, PlantedOracleScorer
        >>> task = PlantedTask()
        >>> out = beam_search(PlantedProverPolicy(task, 1.0), PlantedOracleScorer(task, 1.0), [">"],
        ...                   BeamSearchConfig(budget=6, expansions=3, alpha=0.0, prover_k=1))
        >>> len(out[0].steps), len(out[0].candidates) <= 2, out[0].answered
        (10, True, True)
    """
    cfg = config or BeamSearchConfig()
    ledger = ledger if ledger is not None else ComputeLedger()
    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt ids")
    cut_step = policy.step_format.cut_step
    roots = counted_score(scorer, prompts, [[] for _ in prompts], ledger)
    active: list[list[_Node]] = [[_Node((), r[0])] for r in roots]
    pools: list[list[_Node]] = [[] for _ in prompts]  # answered traces that won a beam slot (at most B)
    dead_ends: list[list[_Node]] = [[] for _ in prompts]  # finished without a readable answer: fallback only
    last_live: list[list[_Node]] = [[] for _ in prompts]  # the latest non-empty set of unfinished beams
    for depth in range(cfg.max_depth):
        requests, parents = [], []
        for i, beams in enumerate(active):
            per_beam = cfg.budget if depth == 0 else cfg.expansions
            for rank, node in enumerate(beams):
                for c in range(per_beam):
                    requests.append(
                        GenerationRequest(prompts[i], node.steps, mix_seed(cfg.seed, ids[i], depth, rank, c))
                    )
                    parents.append((i, node))
        if not requests:
            break
        gens = counted_generate(policy, requests, ledger, stop_at_step=True)
        new, ended = [], []
        for (i, parent), gen in zip(parents, gens):
            if gen.truncated:  # cut at the step token limit
                cut = cut_step(gen.steps[0]) if gen.steps and cfg.truncated_step == "keep" else None
                if cut is None:
                    ledger.truncated_dropped += 1
                else:
                    ledger.truncated_kept += 1
                    new.append((i, parent, _Node((*parent.steps, cut), 0.0)))
                continue
            if gen.steps:
                new.append((i, parent, _Node((*parent.steps, gen.steps[0]), 0.0, gen.finished)))
            elif gen.finished and parent.steps:  # the trace ended right after the parent's last step
                ended.append((i, parent, _Node(parent.steps, parent.value, True)))
        values = counted_score(scorer, [prompts[i] for i, _, _ in new], [n.steps for _, _, n in new], ledger)
        for (_, _, child), v in zip(new, values):
            child.value = v[-1]
        children = new + ended
        rewards = child_rewards(
            [parent.value for _, parent, _ in children],
            [child.value for _, _, child in children],
            cfg.alpha,
            cfg.prover_k,
        )
        ranked: list[list[tuple[float, int, _Node]]] = [[] for _ in prompts]
        for order, ((i, _, child), reward) in enumerate(zip(children, rewards)):
            ranked[i].append((reward, order, child))
        for i in range(len(prompts)):
            keep, pooled, dead = _select(ranked[i], cfg.beams - len(pools[i]), cfg.merge_duplicates, answer_fn)
            if round_log is not None and ranked[i]:
                # The Q-only rule on the same children: does the advantage term change what survives?
                by_q = [(child.value, order, child) for _, order, child in ranked[i]]
                q_keep, q_pooled, _ = _select(by_q, cfg.beams - len(pools[i]), cfg.merge_duplicates, answer_fn)
                round_log.append({id(n) for n in keep + pooled} != {id(n) for n in q_keep + q_pooled})
            pools[i].extend(pooled)
            dead_ends[i].extend(dead)  # they take no slot: they can neither continue nor answer
            active[i] = keep
            if keep:
                last_live[i] = keep
    results = []
    for i, pool in enumerate(pools):
        answered = bool(pool)
        if not answered:  # nothing answered within max_depth: fall back to the best trace without an answer
            ended = {n.steps for n in dead_ends[i]}
            pool = dead_ends[i] + [n for n in last_live[i] if n.steps not in ended] or [_Node((), roots[i][0])]
        best = max(pool, key=lambda n: n.value)  # max keeps the first of equal values
        results.append(SearchResult(list(best.steps), best.value, [list(n.steps) for n in pool], answered))
    return results
