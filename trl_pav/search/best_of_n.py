"""Best-of-N baselines over N sampled complete traces: verifier argmax, majority vote, weighted majority, Pass@N.

Selection rule shared by every method here: only candidates that finished (not cut at the token limit) with a
readable final answer are ranked, scored or vote. Only when a prompt has no such candidate does a method fall back
to the best of its other non-empty candidates, and the result says so (`SearchResult.answered` is False).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from ..generation.base import Generation, Policy, group_generations, sample_requests
from ..grading import Grader
from ..modeling import StepScorer
from .base import (
    AnswerFn,
    Candidate,
    ComputeLedger,
    SearchResult,
    as_generation,
    counted_generate,
    counted_score,
    is_answered,
)

__all__ = ["best_of_n", "majority_vote", "pass_at_n", "sample_candidates", "selection_pools", "weighted_majority"]


def sample_candidates(
    policy: Policy,
    prompts: Sequence[str],
    n: int,
    seed: int = 0,
    ledger: ComputeLedger | None = None,
    prompt_ids: Sequence[int] | None = None,
) -> list[list[Generation]]:
    """N complete traces per prompt (all prompts in one batch), seeded per (prompt id, sample).

    Each candidate is the policy's `Generation` (steps, `finished`, `truncated`, tokens), so selection can tell a
    trace that answered from one cut at the token limit.
    """
    ledger = ledger if ledger is not None else ComputeLedger()
    requests = sample_requests(prompts, n, seed, stream=10_000, prompt_ids=prompt_ids)
    return group_generations(counted_generate(policy, requests, ledger, stop_at_step=False), n)


def selection_pools(
    candidates: Sequence[Sequence[Candidate]], answer_fn: AnswerFn | None = None
) -> list[tuple[list[Generation], bool]]:
    """Per prompt, the candidates a method may pick from and whether they answered.

    The pool is every finished, untruncated candidate with a readable answer (`answer_fn`; any finished one when it
    is None); if there is none, every non-empty candidate, flagged `False`.

    Example:
        >>> done, cut = Generation(["#### 3"], finished=True), Generation(["1+2="], truncated=True)
        >>> [(len(pool), answered) for pool, answered in selection_pools([[cut, done], [cut]])]
        [(1, True), (1, False)]
    """
    out = []
    for cands in candidates:
        gens = [as_generation(c) for c in cands]
        answered = [g for g in gens if is_answered(g, answer_fn)]
        out.append((answered, True) if answered else ([g for g in gens if g.steps], False))
    return out


def _score_pools(
    prompts: Sequence[str], pools: list[tuple[list[Generation], bool]], scorer: StepScorer, ledger: ComputeLedger
) -> list[list[float]]:
    """Final verifier value of every pool member, one scoring call for all prompts."""
    flat = [(i, g.steps) for i, (pool, _) in enumerate(pools) for g in pool]
    values = counted_score(scorer, [prompts[i] for i, _ in flat], [s for _, s in flat], ledger)
    finals: list[list[float]] = [[] for _ in pools]
    for (i, _), v in zip(flat, values):
        finals[i].append(v[-1])
    return finals


def best_of_n(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
    scorer: StepScorer,
    ledger: ComputeLedger | None = None,
    answer_fn: AnswerFn | None = None,
) -> list[SearchResult]:
    """Pick each prompt's candidate with the highest final verifier value (an ORM, or a PAV used as an ORM).

    Only finished candidates with a readable answer are scored and ranked (see `selection_pools`); ties go to the
    earlier sample.

    Example (the unfinished trace has the higher value but cannot be picked while a finished one exists):
        >>> from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
        >>> oracle = NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.5)
        >>> cut = Generation(["2*3=6"], truncated=True)  # on the right path: value 0.5
        >>> wrong = Generation(["2*3=6", "6+4=11", "#### 11"], finished=True)  # value 0
        >>> r = best_of_n(["Q:2*3+4?\\n"], [[cut, wrong]], oracle)[0]
        >>> r.steps, r.answered
        (['2*3=6', '6+4=11', '#### 11'], True)
    """
    ledger = ledger if ledger is not None else ComputeLedger()
    pools = selection_pools(candidates, answer_fn)
    finals = _score_pools(prompts, pools, scorer, ledger)
    out = []
    for (pool, answered), values in zip(pools, finals):
        if not pool:
            out.append(SearchResult([], float("-inf"), answered=False))
            continue
        k = max(range(len(pool)), key=lambda j: values[j])  # max keeps the first of equal values
        out.append(SearchResult(list(pool[k].steps), values[k], [list(g.steps) for g in pool], answered))
    return out


_THOUSANDS = re.compile(r"(?<=\d)(?:,|\\,|\{,\})(?=\d{3}(?!\d))")


def vote_key(answer: str) -> str:
    r"""The key under which majority votes count an answer: equal numbers written differently (`1,000`, `1000.0`,
    `$1000$`, `-0`) count as one, and spacing does not matter. Other answers are compared as written. Numbers are
    compared exactly (as decimals), so distinct long numbers never merge.

    Example:
        >>> [vote_key(a) for a in ["1,000", "1000.0", " $1000$ ", "1000.", "-0", "x + 1", "\\frac{1}{2}", "1.50"]]
        ['1000', '1000', '1000', '1000', '0', 'x+1', '\\frac{1}{2}', '1.5']
        >>> vote_key("1234567890123456789012345678901") == vote_key("1234567890123456789012345678902")
        False
    """
    text = "".join(str(answer).split()).strip("$").rstrip(".")
    whole, dot, fraction = text.partition(".")
    number = _THOUSANDS.sub("", whole) + dot + fraction  # thousands separators only in the integer part
    try:
        value = Decimal(number)
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if value == 0:
        return "0"
    return _plain_decimal(value) or text


_MAX_VOTE_DIGITS = 1000  # a number that needs more digits written out is compared as written


def _plain_decimal(value: Decimal) -> str | None:
    """`value` in plain notation without trailing zeros, exactly (no rounding to a context's precision); None when
    writing it out takes more than `_MAX_VOTE_DIGITS` digits (`1e999999999`)."""
    sign, digits, exponent = value.as_tuple()
    digits = list(digits)
    while digits[-1] == 0:  # value != 0, so a non-zero digit remains
        digits.pop()
        exponent += 1
    if max(len(digits), abs(exponent)) + abs(exponent) > _MAX_VOTE_DIGITS:
        return None
    body = "".join(map(str, digits))
    if exponent >= 0:
        body += "0" * exponent
    else:
        point = len(body) + exponent
        body = "0." + "0" * -point + body if point <= 0 else body[:point] + "." + body[point:]
    return ("-" if sign else "") + body


def majority_vote(candidates: Sequence[Sequence[Candidate]], answer_fn: AnswerFn) -> list[SearchResult]:
    """Pick the most frequent final answer (ties to the answer seen first) among finished candidates with an answer;
    answers count as one when `vote_key` makes them equal (the same number written differently).

    With no such candidate it falls back to the first non-empty one (`answered=False`).
    """
    out = []
    for pool, answered in selection_pools(candidates, answer_fn):
        if not answered:
            out.append(SearchResult(list(pool[0].steps) if pool else [], 0.0, answered=False))
            continue
        votes: dict[str, float] = defaultdict(float)
        first: dict[str, list[str]] = {}
        for g in pool:
            a = vote_key(answer_fn(list(g.steps)))
            votes[a] += 1
            first.setdefault(a, list(g.steps))
        top = max(votes, key=lambda a: votes[a])  # dicts keep insertion order: ties go to the first seen
        out.append(SearchResult(first[top], votes[top], [list(g.steps) for g in pool]))
    return out


def weighted_majority(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
    scorer: StepScorer,
    answer_fn: AnswerFn,
    ledger: ComputeLedger | None = None,
) -> list[SearchResult]:
    """Pick the final answer (by `vote_key`) with the largest sum of final verifier values over the finished traces
    that reach it.

    Only finished candidates with an answer are scored and vote; with none, the best-scored other candidate is
    returned (`answered=False`), as in `best_of_n`.
    """
    ledger = ledger if ledger is not None else ComputeLedger()
    pools = selection_pools(candidates, answer_fn)
    finals = _score_pools(prompts, pools, scorer, ledger)
    out = []
    for (pool, answered), values in zip(pools, finals):
        if not pool:
            out.append(SearchResult([], 0.0, answered=False))
            continue
        if not answered:
            k = max(range(len(pool)), key=lambda j: values[j])
            out.append(SearchResult(list(pool[k].steps), values[k], [list(g.steps) for g in pool], False))
            continue
        votes: dict[str, float] = defaultdict(float)
        first: dict[str, list[str]] = {}
        for g, v in zip(pool, values):
            a = vote_key(answer_fn(list(g.steps)))
            votes[a] += v
            first.setdefault(a, list(g.steps))
        top = max(votes, key=lambda a: votes[a])
        out.append(SearchResult(first[top], votes[top], [list(g.steps) for g in pool]))
    return out


def pass_at_n(
    candidates: Sequence[Sequence[Candidate]],
    golds: Sequence[str],
    grader: Grader,
    join: Callable[[list[str]], str],
) -> list[float]:
    """1.0 for each prompt where any non-empty candidate is correct (the oracle ceiling of best-of-N).

    Every candidate counts, finished or not, so it stays a ceiling for methods that fall back to unfinished ones.
    """
    return [
        max((grader.grade(join(list(g.steps)), gold) for g in map(as_generation, cands) if g.steps), default=0.0)
        for cands, gold in zip(candidates, golds)
    ]
