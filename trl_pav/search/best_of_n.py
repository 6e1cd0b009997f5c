"""Best-of-N baselines over N sampled complete traces: verifier argmax, majority vote, weighted majority, Pass@N."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from ..generation.base import Policy, group_samples, sample_requests
from ..grading import Grader
from ..modeling import StepScorer
from .base import ComputeLedger, SearchResult, counted_generate, counted_score

__all__ = ["best_of_n", "majority_vote", "pass_at_n", "sample_candidates", "weighted_majority"]

AnswerFn = Callable[[list[str]], str | None]


def sample_candidates(
    policy: Policy,
    prompts: Sequence[str],
    n: int,
    seed: int = 0,
    ledger: ComputeLedger | None = None,
    prompt_ids: Sequence[int] | None = None,
) -> list[list[list[str]]]:
    """N complete traces per prompt (all prompts in one batch), seeded per (prompt id, sample)."""
    ledger = ledger if ledger is not None else ComputeLedger()
    requests = sample_requests(prompts, n, seed, stream=10_000, prompt_ids=prompt_ids)
    return group_samples(counted_generate(policy, requests, ledger, stop_at_step=False), n)


def best_of_n(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[list[str]]],
    scorer: StepScorer,
    ledger: ComputeLedger | None = None,
) -> list[SearchResult]:
    """Pick each prompt's candidate with the highest final verifier value (an ORM, or a PAV used as an ORM)."""
    ledger = ledger if ledger is not None else ComputeLedger()
    flat = [(i, c) for i, cands in enumerate(candidates) for c in cands if c]
    values = counted_score(scorer, [prompts[i] for i, _ in flat], [c for _, c in flat], ledger)
    best: list[SearchResult | None] = [None] * len(prompts)
    for (i, cand), v in zip(flat, values):
        if best[i] is None or v[-1] > best[i].score:
            best[i] = SearchResult(list(cand), v[-1])
    return [b or SearchResult([], float("-inf")) for b in best]


def majority_vote(candidates: Sequence[Sequence[list[str]]], answer_fn: AnswerFn) -> list[SearchResult]:
    """Pick the most frequent final answer (ties to the answer seen first); traces without an answer do not vote."""
    out = []
    for cands in candidates:
        votes: dict[str, float] = defaultdict(float)
        first: dict[str, list[str]] = {}
        for c in cands:
            a = answer_fn(c) if c else None
            if a is not None:
                votes[a] += 1
                first.setdefault(a, c)
        if not votes:
            out.append(SearchResult([], 0.0))
            continue
        top = max(votes, key=lambda a: votes[a])  # dicts keep insertion order: ties go to the first seen
        out.append(SearchResult(first[top], votes[top]))
    return out


def weighted_majority(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[list[str]]],
    scorer: StepScorer,
    answer_fn: AnswerFn,
    ledger: ComputeLedger | None = None,
) -> list[SearchResult]:
    """Pick the final answer with the largest sum of final verifier values over the traces that reach it."""
    ledger = ledger if ledger is not None else ComputeLedger()
    flat = [(i, c) for i, cands in enumerate(candidates) for c in cands if c]
    values = counted_score(scorer, [prompts[i] for i, _ in flat], [c for _, c in flat], ledger)
    votes: list[dict[str, float]] = [defaultdict(float) for _ in prompts]
    first: list[dict[str, list[str]]] = [{} for _ in prompts]
    for (i, c), v in zip(flat, values):
        a = answer_fn(c)
        if a is not None:
            votes[i][a] += v[-1]
            first[i].setdefault(a, c)
    out = []
    for i in range(len(prompts)):
        if not votes[i]:
            out.append(SearchResult([], 0.0))
            continue
        top = max(votes[i], key=lambda a: votes[i][a])
        out.append(SearchResult(first[i][top], votes[i][top]))
    return out


def pass_at_n(
    candidates: Sequence[Sequence[list[str]]], golds: Sequence[str], grader: Grader, join: Callable[[list[str]], str]
) -> list[float]:
    """1.0 for each prompt where any candidate is correct (the oracle ceiling of best-of-N)."""
    return [max((grader.grade(join(c), g) for c in cands if c), default=0.0) for cands, g in zip(candidates, golds)]
