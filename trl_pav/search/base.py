"""Shared pieces of the search algorithms: the compute ledger and the per-prompt result record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..generation.base import Generation, GenerationRequest, Policy
from ..modeling import StepScorer, checked_step_values

__all__ = [
    "AnswerFn",
    "Candidate",
    "ComputeLedger",
    "SearchResult",
    "as_generation",
    "counted_generate",
    "counted_score",
    "is_answered",
]

AnswerFn = Callable[[list[str]], "str | None"]
"""Reads a trace's final answer from its steps, or returns None when it has none."""

Candidate = Generation | list[str]
"""A complete trace to select from: a `Generation` (finish flags kept) or a bare step list (taken as finished)."""


@dataclass
class ComputeLedger:
    """Compute spent by a search method: one entry per generation or scoring call, totals derived from them.

    Attributes:
        calls: `(kind, generated_tokens, verifier_tokens, sampled_steps, seconds)` per call, kind being
            `"generate"` or `"score"`.
        truncated_dropped: sampled children cut at the step token limit and dropped (beam search,
            `truncated_step="drop"`, or a cut with no text to keep).
        truncated_kept: sampled children cut at the step token limit and kept as steps (`truncated_step="keep"`).
        beyond_verifier: scored traces longer than the verifier reads (`steps_that_fit`): their steps past what
            fits are valued 0, as failing.
    """

    calls: list[tuple[str, int, int, int, float]] = field(default_factory=list)
    truncated_dropped: int = 0
    truncated_kept: int = 0
    beyond_verifier: int = 0

    @classmethod
    def merged(cls, ledgers: Sequence[ComputeLedger]) -> ComputeLedger:
        """One ledger holding the calls and counts of all of `ledgers`."""
        return cls(
            [c for ledger in ledgers for c in ledger.calls],
            sum(ledger.truncated_dropped for ledger in ledgers),
            sum(ledger.truncated_kept for ledger in ledgers),
            sum(ledger.beyond_verifier for ledger in ledgers),
        )

    def add(
        self,
        kind: str,
        generated_tokens: int = 0,
        verifier_tokens: int = 0,
        sampled_steps: int = 0,
        seconds: float = 0.0,
    ):
        self.calls.append((kind, generated_tokens, verifier_tokens, sampled_steps, seconds))

    @property
    def generated_tokens(self) -> int:
        return sum(c[1] for c in self.calls)

    @property
    def verifier_tokens(self) -> int:
        return sum(c[2] for c in self.calls)

    @property
    def sampled_steps(self) -> int:
        return sum(c[3] for c in self.calls)

    @property
    def seconds(self) -> float:
        return sum(c[4] for c in self.calls)

    def totals(self) -> dict[str, float]:
        """Totals over every call, the counts of truncated children and of traces longer than the verifier reads."""
        return {
            "generated_tokens": self.generated_tokens,
            "verifier_tokens": self.verifier_tokens,
            "sampled_steps": self.sampled_steps,
            "seconds": round(self.seconds, 4),
            "calls": len(self.calls),
            "truncated_dropped": self.truncated_dropped,
            "truncated_kept": self.truncated_kept,
            "beyond_verifier": self.beyond_verifier,
        }


@dataclass
class SearchResult:
    """Outcome of a search for one prompt.

    Attributes:
        steps: the chosen trace.
        score: the value that chose it (final `Q̂` for verifier-based methods, votes for majority).
        candidates: the traces the choice was made among (for analysis).
        answered: whether the chosen trace finished with a readable final answer. False only when no candidate did
            and the method fell back to the best trace without one (or to an empty trace).
    """

    steps: list[str]
    score: float
    candidates: list[list[str]] = field(default_factory=list)
    answered: bool = True


def as_generation(candidate: Candidate) -> Generation:
    """A candidate as a `Generation`; a bare step list is taken as a finished, untruncated trace."""
    if isinstance(candidate, Generation):
        return candidate
    return Generation(steps=list(candidate), finished=True)


def is_answered(candidate: Generation, answer_fn: AnswerFn | None) -> bool:
    """Whether a trace may be selected as an answer: it has steps, finished, was not cut at the token limit, and
    `answer_fn` (when given) reads a final answer from it.

    Example:
        >>> from trl_pav.grading import extract_answer
        >>> is_answered(Generation(["1+1=2", "#### 2"], finished=True), lambda s: extract_answer("\\n".join(s)))
        True
        >>> is_answered(Generation(["1+1=2"], finished=True), lambda s: extract_answer("\\n".join(s)))
        False
        >>> is_answered(Generation(["1+1=2", "#### 2"], truncated=True), None)
        False
    """
    return (
        bool(candidate.steps)
        and candidate.finished
        and not candidate.truncated
        and (answer_fn is None or answer_fn(list(candidate.steps)) is not None)
    )


def counted_generate(
    policy: Policy, requests: Sequence[GenerationRequest], ledger: ComputeLedger, stop_at_step: bool
) -> list[Generation]:
    """`policy.generate` with its tokens, sampled steps and time recorded in `ledger`."""
    start = time.perf_counter()
    out = policy.generate(list(requests), stop_at_step=stop_at_step)
    if len(out) != len(requests):
        raise RuntimeError(f"policy {policy.name!r} returned {len(out)} results for {len(requests)} requests")
    ledger.add(
        "generate",
        generated_tokens=sum(g.num_tokens for g in out),
        sampled_steps=len(out),
        seconds=time.perf_counter() - start,
    )
    return out


def counted_score(
    scorer: StepScorer, prompts: Sequence, steps: Sequence[Sequence[str]], ledger: ComputeLedger
) -> list[list[float]]:
    """`scorer.score` with the verifier tokens it read (if it counts them) and its time recorded in `ledger`.

    A trace longer than the verifier reads (a scorer with `steps_that_fit`, e.g. `PAVVerifier`) is scored on the
    leading steps that fit; the steps past them are valued 0 (a trace the verifier cannot read counts as failing,
    as a trace cut at the length limit does) and counted in `ledger.beyond_verifier`. A prompt alone too long for
    the verifier still raises: that is a setting to fix, not a sample to rank.
    """
    start = time.perf_counter()
    before = getattr(scorer, "verifier_tokens", 0)
    steps = [list(s) for s in steps]
    fits = getattr(scorer, "steps_that_fit", None)
    try:
        out = checked_step_values(scorer.score(list(prompts), steps), steps, scorer) if prompts else []
    except ValueError:
        if not callable(fits):
            raise
        # Rare (a rambling sample): measure what fits only now, so the usual call tokenizes each trace once.
        kept = [fits(p, s) for p, s in zip(prompts, steps)]
        if all(k == len(s) for k, s in zip(kept, steps)):
            raise  # not a length problem
        scored = [s[:k] for s, k in zip(steps, kept)]
        out = checked_step_values(scorer.score(list(prompts), scored), scored, scorer)
        for values, trace, k in zip(out, steps, kept):
            if k < len(trace):
                values.extend([0.0] * (len(trace) - k))
                ledger.beyond_verifier += 1
    ledger.add(
        "score", verifier_tokens=getattr(scorer, "verifier_tokens", 0) - before, seconds=time.perf_counter() - start
    )
    return out
