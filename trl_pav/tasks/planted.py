"""Planted subsequence: the paper's didactic task (section 3.3, appendix B), with exact values by dynamic programming.

A trace is a sequence of at most `length` symbols over a vocabulary of `vocab_size`; each symbol is one step. The
reward is 1 iff an unknown planted string appears contiguously. The procedural prover μ_γ puts weight γ on the next
planted symbol (given the longest suffix of the sequence that is a prefix of the planted string) and weight 1 on every
other symbol, so its success probabilities follow exactly from a DP over (position, match state).

Symbols are written as letters (`a` is 0, `b` is 1, ...) separated by spaces, so traces are plain text like any other.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
from datasets import Dataset

from ..generation.base import Generation, GenerationRequest
from ..steps import StepFormat
from ..tokenization import build_char_tokenizer

__all__ = ["PlantedGrader", "PlantedOracleScorer", "PlantedProverPolicy", "PlantedTask"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class PlantedTask:
    """The planted-subsequence task.

    Args:
        vocab_size (`int`, defaults to `15`): number of symbols (at most 26).
        length (`int`, defaults to `10`): symbols per trace.
        planted (`tuple[int, ...]`, defaults to `(3, 6, 0, 3, 5)`): the hidden string.

    Example:
        >>> task = PlantedTask()
        >>> task.grader.grade("a d g a d f b b b b", "")
        1.0
        >>> round(task.exact_values(gamma=1.0, steps=[])[0], 6) == round(task.success_probability(1.0), 6)
        True
    """

    vocab_size: int = 15
    length: int = 10
    planted: tuple[int, ...] = (3, 6, 0, 3, 5)
    step_format: StepFormat = field(default_factory=lambda: StepFormat(" "))

    name = "planted"
    prompt = ">"

    def __post_init__(self) -> None:
        # Frozen: the transition and value tables are cached on first use and must not go stale.
        for name in ("vocab_size", "length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"PlantedTask.{name} must be an int, got {value!r}")
        if not 2 <= self.vocab_size <= len(_LETTERS):
            raise ValueError(f"vocab_size must be in [2, 26], got {self.vocab_size}")
        if isinstance(self.planted, str) or not isinstance(self.planted, Sequence):
            raise TypeError(
                f"planted must be a sequence of symbol indices (ints, `a` is 0), got {self.planted!r}; for letters "
                "use PlantedTask.from_letters"
            )
        bad = [s for s in self.planted if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
        if bad:
            raise TypeError(f"planted must hold ints (symbol indices), got {bad[0]!r} in {tuple(self.planted)}")
        if not self.planted or any(not 0 <= s < self.vocab_size for s in self.planted):
            raise ValueError(
                f"planted must be a non-empty string of symbols in [0, {self.vocab_size}), got {tuple(self.planted)}"
            )
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if len(self.planted) > self.length:
            raise ValueError(f"planted string ({len(self.planted)}) is longer than a trace ({self.length})")
        object.__setattr__(self, "vocab_size", int(self.vocab_size))
        object.__setattr__(self, "length", int(self.length))
        object.__setattr__(self, "planted", tuple(int(s) for s in self.planted))

    @classmethod
    def from_letters(cls, planted: str, vocab_size: int = 15, length: int = 10) -> PlantedTask:
        """A task whose planted string is written in the traces' letters (`"dga"` is `(3, 6, 0)`).

        Example:
            >>> PlantedTask.from_letters("dgadf").planted
            (3, 6, 0, 3, 5)
        """
        unknown = sorted({c for c in planted if c not in _LETTERS[:vocab_size]})
        if unknown:
            raise ValueError(f"planted {planted!r} has letters outside the first {vocab_size}: {unknown}")
        return cls(vocab_size=vocab_size, length=length, planted=tuple(_LETTERS.index(c) for c in planted))

    @property
    def symbols(self) -> str:
        """The letters standing for symbols 0..vocab_size-1."""
        return _LETTERS[: self.vocab_size]

    @property
    def grader(self) -> PlantedGrader:
        """Outcome grader (the gold answer is ignored: success is a property of the trace)."""
        return PlantedGrader(self)

    def tokenizer(self):
        """A character tokenizer over the symbols, the space separator and the prompt."""
        return build_char_tokenizer(self.symbols + " " + self.prompt)

    def encode(self, steps: Sequence[str]) -> list[int] | None:
        """Symbols of a trace's steps, or None if a step is not a single known symbol."""
        out = []
        for s in steps:
            if len(s) != 1 or s not in self.symbols:
                return None
            out.append(self.symbols.index(s))
        return out

    def decode(self, symbols: Sequence[int]) -> list[str]:
        """Steps (letters) of a symbol sequence."""
        return [self.symbols[s] for s in symbols]

    def is_success(self, symbols: Sequence[int]) -> bool:
        """Whether a complete sequence of at most `length` symbols contains the planted string contiguously.

        A sequence that stops early (EOS) succeeds if the planted string is in it: in the paper, tokens after the
        end of sequence are masked, so "planted string, then stop" is a success. The procedural prover always
        writes `length` symbols, so its exact values do not depend on this.
        """
        p = self.planted
        return len(symbols) <= self.length and any(
            tuple(symbols[i : i + len(p)]) == p for i in range(len(symbols) - len(p) + 1)
        )

    # ---- match automaton and exact values -------------------------------------------------------------------------
    @cached_property
    def transitions(self) -> np.ndarray:
        """`(P+1, V)` int: next match state after a symbol; state P (found) is absorbing (KMP automaton)."""
        p, n = self.planted, len(self.planted)
        table = np.zeros((n + 1, self.vocab_size), dtype=np.int64)
        for k in range(n + 1):
            for a in range(self.vocab_size):
                if k == n:
                    table[k, a] = n
                    continue
                seq = (*p[:k], a)
                # Longest suffix of seq that is a prefix of the planted string.
                table[k, a] = next(j for j in range(len(seq), -1, -1) if seq[len(seq) - j :] == p[:j])
        return table

    def match_state(self, symbols: Sequence[int]) -> int:
        """Automaton state after a symbol sequence (P once the planted string has appeared)."""
        k = 0
        for a in symbols:
            k = int(self.transitions[k, a])
        return k

    def prover_probs(self, gamma: float) -> np.ndarray:
        """`(P+1, V)` next-symbol probabilities of μ_γ in each match state (uniform once found)."""
        n = len(self.planted)
        w = np.ones((n + 1, self.vocab_size))
        for k in range(n):
            w[k, self.planted[k]] = gamma
        return w / w.sum(1, keepdims=True)

    @cached_property
    def _value_tables(self) -> dict[float, np.ndarray]:
        return {}  # by γ: search and RL ask for the same table thousands of times

    def value_table(self, gamma: float) -> np.ndarray:
        """`(L+1, P+1)` exact success probability under μ_γ from (symbols so far, match state); read-only."""
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if gamma in self._value_tables:
            return self._value_tables[gamma]
        n, probs = len(self.planted), self.prover_probs(gamma)
        v = np.zeros((self.length + 1, n + 1))
        v[:, n] = 1.0
        for t in range(self.length - 1, -1, -1):
            for k in range(n):
                v[t, k] = float(probs[k] @ v[t + 1, self.transitions[k]])
        v.setflags(write=False)
        self._value_tables[gamma] = v
        return v

    def success_probability(self, gamma: float) -> float:
        """Probability that μ_γ succeeds from the empty sequence."""
        return float(self.value_table(gamma)[0, 0])

    def exact_values(self, gamma: float, steps: Sequence[str]) -> list[float]:
        """Exact `Q^{μ_γ}` of the root and after each step of a trace (0 after an invalid or over-long step)."""
        table = self.value_table(gamma)
        out = [float(table[0, 0])]
        k, valid = 0, True
        for t, step in enumerate(steps, start=1):
            sym = self.encode([step])
            if sym is None or t > self.length or not valid:
                valid = False
                out.append(0.0)
                continue
            k = int(self.transitions[k, sym[0]])
            out.append(float(table[t, k]))
        return out

    # ---- data ------------------------------------------------------------------------------------------------------
    def sample_sequences(self, gamma: float, n: int, seed: int = 0) -> list[list[int]]:
        """`n` sequences sampled from μ_γ."""
        rng = np.random.default_rng(seed)
        probs = self.prover_probs(gamma)
        out = []
        for _ in range(n):
            k, seq = 0, []
            for _ in range(self.length):
                a = int(rng.choice(self.vocab_size, p=probs[k]))
                seq.append(a)
                k = int(self.transitions[k, a])
            out.append(seq)
        return out

    def sft_dataset(self, gamma: float = 5.0, n: int = 3200, seed: int = 0) -> Dataset:
        """Prompt-completion rows sampled from μ_γ (the paper initialises the base policy with γ = 5, 3,200 samples)."""
        seqs = self.sample_sequences(gamma, n, seed)
        return Dataset.from_dict(
            {"prompt": [self.prompt] * n, "completion": [self.step_format.join(self.decode(s)) for s in seqs]}
        )

    def problems_dataset(self, n: int) -> Dataset:
        """`n` copies of the single prompt (the task has one start state), for labeling, search and RL."""
        return Dataset.from_dict({"prompt": [self.prompt] * n, "gold": [""] * n})


@dataclass
class PlantedGrader:
    """1.0 iff the trace has at most `length` valid symbols and contains the planted string."""

    task: PlantedTask
    needs_gold: ClassVar[bool] = False  # problems carry an empty gold answer

    def grade(self, completion: str, gold: str = "") -> float:
        """Reward of a completed trace (`gold` is unused)."""
        if not isinstance(completion, str):
            return 0.0
        symbols = self.task.encode(self.task.step_format.split(completion))
        return 1.0 if symbols is not None and self.task.is_success(symbols) else 0.0


class PlantedProverPolicy:
    """The procedural prover μ_γ as a `Policy` (per-request seeds; one symbol per step). `num_tokens` counts what a
    model writing the same text with the task's character tokenizer would generate (symbols, separators and the end of
    sequence), so its rollouts are charged in the policy's units.

    Example:
        >>> pol = PlantedProverPolicy(PlantedTask(), gamma=10.0)
        >>> g = pol.generate([GenerationRequest(">", seed=1)])[0]
        >>> len(g.steps), g.finished, g.num_tokens  # 10 letters, 9 spaces, the end of sequence
        (10, True, 20)
    """

    def __init__(self, task: PlantedTask, gamma: float):
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.task, self.gamma = task, gamma
        self.step_format = task.step_format
        self.name = f"planted-prover-gamma{gamma:g}"
        self._probs = task.prover_probs(gamma)
        # `rng.choice(p=...)` draws one uniform and searches the normalised cumulative sum; doing the same by hand
        # gives the very same samples about 5x faster (rollouts in RL call this millions of times).
        cdf = np.cumsum(self._probs, axis=1)
        self._cdf = (cdf / cdf[:, -1:]).tolist()
        self._next = task.transitions.tolist()

    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request, up to `length` symbols in all (none for a prefix already that long). A
        prefix that is not a trace of the task's symbols fails whatever follows; it continues from match state 0."""
        out = []
        for req in requests:
            rng = np.random.default_rng(req.seed)
            symbols = self.task.encode(req.steps)
            k = self.task.match_state(symbols) if symbols is not None else 0
            remaining = max(0, self.task.length - len(req.steps))
            n = min(1, remaining) if stop_at_step else max(0, remaining)
            new = []
            for u in rng.random(n).tolist():
                a = bisect.bisect_right(self._cdf[k], u)
                new.append(a)
                k = self._next[k][a]
            done = len(req.steps) + len(new) >= self.task.length
            steps = self.task.decode(new)
            out.append(Generation(steps=steps, finished=done, num_tokens=self._tokens(bool(req.steps), steps, done)))
        return out

    def _tokens(self, after_steps: bool, steps: list[str], done: bool) -> int:
        """What writing `steps` costs in the task's character tokens, as for the policy that stands in for the
        prover: the text (with the separator before it after earlier steps) and the end of sequence once done."""
        if not steps:
            return int(done)
        text = self.task.step_format.join(steps)
        return len(text) + (len(self.task.step_format.separator) if after_steps else 0) + int(done)


@dataclass
class PlantedOracleScorer:
    """Exact `Q^{μ_γ}` values as a step scorer (`score(prompts, steps) -> [[root, step 1, ...], ...]`)."""

    task: PlantedTask
    gamma: float

    @property
    def step_format(self) -> StepFormat:
        """The task's step format (one symbol per step), so trainers find the same steps."""
        return self.task.step_format

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Root value then the value after each step, for each trace."""
        if len(prompts) != len(steps):
            raise ValueError(f"score: {len(prompts)} prompts but {len(steps)} step lists")
        return [self.task.exact_values(self.gamma, s) for s in steps]
