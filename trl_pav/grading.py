"""Outcome graders: `grade(completion, gold) -> float` in [0, 1].

Graders never raise on model output: text with no recognisable answer grades 0. They are safe to call from worker
threads (TRL may call reward functions in threads), so math-verify runs with its `signal.alarm` timeouts disabled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "ExactMatchGrader",
    "Grader",
    "MathVerifyGrader",
    "extract_answer",
    "extract_boxed",
    "grade_batch",
]

# math-verify logs a warning on every call once its signal-based timeouts are disabled; we disable them on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@runtime_checkable
class Grader(Protocol):
    """Anything with `grade(completion, gold) -> float` (1.0 correct, 0.0 wrong)."""

    def grade(self, completion: str, gold: str) -> float: ...


def extract_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, with nested braces balanced; `None` if absent.

    Example:
        >>> extract_boxed(r"so $x = \boxed{\frac{1}{2}}$.")
        '\\frac{1}{2}'
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # `\boxed 5` form.
        m = re.match(r"\\boxed\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


_HASH = re.compile(r"####\s*([^\n]+)")


def extract_answer(text: str, answer_pattern: re.Pattern[str] | None = None) -> str | None:
    r"""The final answer of a completion: the last `\boxed{}`, else the last `#### n`, else `answer_pattern`'s group 1.

    Example:
        >>> extract_answer("2+2=4\n#### 4")
        '4'
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _HASH.findall(text)
    if hashes:
        return hashes[-1].strip()
    if answer_pattern is not None:
        found = answer_pattern.findall(text)
        if found:
            last = found[-1]
            return (last[0] if isinstance(last, tuple) else last).strip()
    return None


@dataclass
class MathVerifyGrader:
    r"""Grades a completion's final answer against a gold answer with math-verify.

    The answer is taken from the last `\boxed{...}`, else a GSM8K-style `#### n`, else the last match of
    `answer_pattern` (group 1). Equivalence is math-verify's (`\frac{1}{2}` equals `0.5`; sets, intervals, tuples).

    Args:
        answer_pattern (`str`, defaults to `r"(?i)answer\s*(?:is)?\s*[:=]?\s*\$?([^\n$]+)"`):
            Regex for answers written in prose; group 1 is the answer.
        float_rounding (`int`, defaults to `6`):
            Decimal places kept when comparing floats.

    Example:
        >>> g = MathVerifyGrader()
        >>> g.grade(r"... so the answer is $\boxed{\frac{1}{2}}$", "0.5"), g.grade("#### 72", "72"), g.grade("??", "1")
        (1.0, 1.0, 0.0)
    """

    answer_pattern: str = r"(?i)answer\s*(?:is)?\s*[:=]?\s*\$?([^\n$]+)"
    float_rounding: int = 6
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.answer_pattern)

    def _parse(self, text: str) -> list:
        from math_verify import parse

        return parse(f"${text}$", parsing_timeout=None)

    def grade(self, completion: str, gold: str) -> float:
        """1.0 if the extracted answer equals `gold` under math-verify, else 0.0 (never raises on bad output)."""
        if not isinstance(completion, str) or not isinstance(gold, str):
            return 0.0
        answer = extract_answer(completion, self._pattern)
        if answer is None or not answer.strip():
            return 0.0
        try:
            from math_verify import verify

            target = self._parse(answer)
            reference = self._parse(gold)
            if not target or not reference:
                return 0.0
            ok = verify(reference, target, float_rounding=self.float_rounding, timeout_seconds=None)
        except Exception:  # math-verify can fail in many ways on garbage; garbage grades 0.
            return 0.0
        return 1.0 if ok else 0.0


@dataclass
class ExactMatchGrader:
    r"""Compares the extracted final answer with `gold` as stripped strings.

    Args:
        answer_pattern (`str`, defaults to `r"A:\s*(\S+)\s*$"`):
            Regex whose group 1 is the answer; the last match wins. If the text has no match, it grades 0.

    Example:
        >>> ExactMatchGrader().grade("3*4=12\nA:12", "12")
        1.0
    """

    answer_pattern: str = r"A:\s*(\S+)\s*$"

    def grade(self, completion: str, gold: str) -> float:
        """1.0 if the last match of `answer_pattern` equals `gold` (whitespace-stripped), else 0.0."""
        if not isinstance(completion, str) or not isinstance(gold, str):
            return 0.0
        found = re.findall(self.answer_pattern, completion, flags=re.MULTILINE)
        return 1.0 if found and str(found[-1]).strip() == gold.strip() else 0.0


def grade_batch(grader: Grader, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """Grade `completions[i]` against `golds[i]` for every i."""
    if len(completions) != len(golds):
        raise ValueError(f"grade_batch: {len(completions)} completions but {len(golds)} gold answers")
    return [grader.grade(c, g) for c, g in zip(completions, golds)]
