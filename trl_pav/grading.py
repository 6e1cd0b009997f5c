"""Outcome graders: `grade(completion, gold) -> float` in [0, 1].

Graders never raise on model output: text with no recognisable answer grades 0. They are safe to call from worker
threads (TRL may call reward functions in threads).

`MathVerifyGrader` bounds the time of every call: math-verify (sympy) can spend minutes or forever on a degenerate
answer (`9^{9^{9^{9}}}`, thousands of nested braces), stuck in C code that neither a signal nor another thread can
interrupt. So the grading runs in a small persistent worker process; a call that overruns `timeout_seconds` kills the
worker, counts as wrong, is logged and counted in `timeouts`, and a fresh worker takes over. Pairs that cannot be slow
(no answer at all, or a plain decimal number against a plain decimal gold answer) are graded in the calling thread,
by the same function: the round trip would cost more than the grading.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._mathgrade import DEFAULT_ANSWER_PATTERN, extract_answer, extract_boxed, math_verify_grade

__all__ = [
    "SUCCESS_THRESHOLD",
    "ExactMatchGrader",
    "Grader",
    "GradingWorkerError",
    "MathVerifyGrader",
    "as_real",
    "check_golds",
    "checked_grades",
    "extract_answer",
    "extract_boxed",
    "grade_batch",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Grader(Protocol):
    """Anything with `grade(completion, gold) -> float` (1.0 correct, 0.0 wrong)."""

    def grade(self, completion: str, gold: str) -> float: ...


class GradingWorkerError(RuntimeError):
    """The grading worker process could not be started (it never reported ready)."""


class _Worker:
    """One grading process (`_mathgrade.py` run as a script) and the two pipes to it."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("_mathgrade.py")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # -P: the script's folder (this package) must not shadow the worker's imports.
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(script), str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.ready = False

    def poll_ready(self) -> bool:
        """Whether the worker has said it is ready (without waiting)."""
        if not self.ready:
            try:
                self.ready = self.inbox.poll(0) and self.inbox.recv() == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def wait_ready(self, seconds: float) -> None:
        if self.ready:
            return
        try:
            if self.inbox.poll(seconds) and self.inbox.recv() == "ready":
                self.ready = True
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise GradingWorkerError(
            f"the math-verify grading worker did not start within {seconds:.0f} s (exit code "
            f"{self.process.poll()}); check that `python -c 'import math_verify'` works in this environment"
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.outbox.close()
        self.inbox.close()


class _WorkerPool:
    """Idle workers shared by every `MathVerifyGrader` of this process; a thread takes one per call.

    One spare is kept started, so a call that follows a timeout (whose worker was killed) finds a ready worker
    instead of waiting about a second for a new one to import math-verify.
    """

    startup_seconds = 120.0
    spares = 1

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def acquire(self) -> _Worker:
        with self._lock:
            ready = [w for w in self._idle if w.poll_ready()]
            worker = ready[0] if ready else (self._idle[0] if self._idle else None)
            if worker is not None:
                self._idle.remove(worker)
            if len(self._idle) < self.spares:
                self._idle.append(_Worker())
        worker = worker or _Worker()
        worker.wait_ready(self.startup_seconds)
        return worker

    def release(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if len(self._idle) < self.spares:
                self._idle.append(_Worker())

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_POOL = _WorkerPool()
_CACHE_SIZE = 8192
_DEFAULT_PATTERN = re.compile(DEFAULT_ANSWER_PATTERN)
_PLAIN_NUMBER = re.compile(r"[-+]?\d{1,30}(?:\.\d{1,30})?")
_PLAIN_TEXT_CHARS = 100_000  # longer completions go to the worker: even linear extraction then takes a while


@dataclass
class MathVerifyGrader:
    r"""Grades a completion's final answer against a gold answer with math-verify, within a time limit per call.

    The answer is taken from the last non-empty `\boxed{...}`, else the last GSM8K-style `#### n` line that is not a
    markdown heading, else the last match of `answer_pattern` (group 1) (`extract_answer`). Equivalence is
    math-verify's (`\frac{1}{2}` equals `0.5`; sets, intervals, tuples).

    Args:
        answer_pattern (`str`, defaults to `r"(?i)answer\s*+(?:is\s*+)?[:=]?\s*+\$?([^\n$]+)"`):
            Regex for answers written in prose; group 1 is the answer. It runs in the worker, under the time limit.
        float_rounding (`int`, defaults to `6`):
            Decimal places kept when comparing floats.
        timeout_seconds (`float` or `None`, defaults to `2.0`):
            Longest time one completion may take to grade (extraction, parsing, comparison), in the calling thread
            whatever thread it is; longer counts as wrong, is logged and counted in `timeouts`. `None` grades in
            the calling process with no bound (a degenerate answer can then hang the caller).
        max_answer_chars (`int` or `None`, defaults to `1000`):
            An extracted answer longer than this grades 0 without being parsed (no real final answer is that long;
            a 5,001-term `1+1+...+1` is refused here, and math-verify could not parse it anyway).

    Attributes:
        timeouts (`int`): calls of this grader that hit the time limit (or whose worker crashed).

    Example:
        >>> g = MathVerifyGrader()
        >>> g.grade(r"... so the answer is $\boxed{\frac{1}{2}}$", "0.5"), g.grade("#### 72", "72"), g.grade("??", "1")
        (1.0, 1.0, 0.0)
        >>> g.grade_batch([r"\boxed{2^{2^{40}}}", "#### 3"], ["1", "3"]), g.timeouts  # doctest: +SKIP
        ([0.0, 1.0], 1)
    """

    answer_pattern: str = DEFAULT_ANSWER_PATTERN
    float_rounding: int = 6
    timeout_seconds: float | None = 2.0
    max_answer_chars: int | None = 1000
    timeouts: int = field(default=0, init=False, compare=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            re.compile(self.answer_pattern)
        except re.error as err:
            raise ValueError(f"MathVerifyGrader.answer_pattern {self.answer_pattern!r} is not a regex: {err}") from err
        if self.timeout_seconds is not None and not (
            isinstance(self.timeout_seconds, (int, float)) and 0 < self.timeout_seconds < float("inf")
        ):
            raise ValueError(
                f"MathVerifyGrader.timeout_seconds must be a positive number or None, got {self.timeout_seconds!r}"
            )
        if self.max_answer_chars is not None and self.max_answer_chars < 1:
            raise ValueError(f"MathVerifyGrader.max_answer_chars must be >= 1 or None, got {self.max_answer_chars}")

    @property
    def _settings(self) -> tuple:
        return (self.answer_pattern, self.float_rounding, self.max_answer_chars)

    def grade(self, completion: str, gold: str) -> float:
        """1.0 if the extracted answer equals `gold` under math-verify, else 0.0 (never raises on bad output)."""
        return self.grade_batch([completion], [gold])[0]

    def grade_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        """`grade(completions[i], golds[i])` for every i, in one round trip to the worker (each pair timed alone)."""
        if len(completions) != len(golds):
            raise ValueError(f"grade_batch: {len(completions)} completions but {len(golds)} gold answers")
        check_golds(golds)
        if self.timeout_seconds is None:
            return [math_verify_grade(c, g, *self._settings) for c, g in zip(completions, golds)]
        out: list[float | None] = [None] * len(completions)
        todo = []
        for i, (c, g) in enumerate(zip(completions, golds)):
            if not isinstance(c, str):  # a malformed model output scores 0
                out[i] = 0.0
            elif (c, g) in self._cache:  # grading is deterministic: repeated answers (common in rollouts) are free
                out[i] = self._cache[(c, g)]
            elif self._plain(c, g):
                out[i] = math_verify_grade(c, g, *self._settings)
            else:
                todo.append(i)
        while todo:
            todo = self._run(todo, completions, golds, out)
        return out  # type: ignore[return-value]

    def _plain(self, completion: str, gold: str) -> bool:
        """Whether this pair is safe to grade here, without the worker: with the default answer pattern (whose
        matching is linear), no answer or a plain decimal number of at most 30 digits against such a gold answer.
        Parsing and comparing those takes microseconds, and most answers of arithmetic and GSM8K-style tasks are
        such numbers; the worker's round trip would cost more than the grading."""
        if self.answer_pattern != DEFAULT_ANSWER_PATTERN or len(completion) > _PLAIN_TEXT_CHARS:
            return False
        answer = extract_answer(completion, _DEFAULT_PATTERN)
        return answer is None or (
            _PLAIN_NUMBER.fullmatch(answer.strip()) is not None and _PLAIN_NUMBER.fullmatch(gold.strip()) is not None
        )

    def _run(self, todo: list[int], completions, golds, out: list) -> list[int]:
        """Grade `todo` on one worker; return what is left when a pair overran (the worker is then replaced)."""
        worker = _POOL.acquire()
        try:
            worker.outbox.send((self._settings, [(completions[i], golds[i]) for i in todo]))
            for k, i in enumerate(todo):
                start = time.monotonic()
                try:
                    done = worker.inbox.poll(self.timeout_seconds)
                    value = worker.inbox.recv() if done else None
                except (EOFError, OSError):  # the worker crashed on this pair (C stack overflow, memory)
                    done, value = False, None
                if not done or value is None:
                    self._count_timeout(completions[i], time.monotonic() - start, crashed=done)
                    out[i] = 0.0
                    self._remember(completions[i], golds[i], 0.0)
                    _POOL.replace(worker)
                    worker = None
                    return todo[k + 1 :]
                out[i] = float(value)
                self._remember(completions[i], golds[i], out[i])
        except BaseException:
            if worker is not None:  # interrupted mid-batch: the worker's pipe state is unknown
                _POOL.replace(worker)
                worker = None
            raise
        finally:
            if worker is not None:
                _POOL.release(worker)
        return []

    def _remember(self, completion: str, gold: str, value: float) -> None:
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[(completion, gold)] = value

    def _count_timeout(self, completion: str, seconds: float, crashed: bool) -> None:
        with self._lock:
            self.timeouts += 1
            count = self.timeouts
        what = "crashed the grading worker" if crashed else f"did not grade within {self.timeout_seconds:g} s"
        logger.warning(
            f"MathVerifyGrader: a completion {what} and counts as wrong ({count} so far on this grader); its "
            f"final part: {completion[-80:]!r}"
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass
class ExactMatchGrader:
    r"""Compares the extracted final answer with `gold` as stripped strings.

    Args:
        answer_pattern (`str`, defaults to `r"(?:^|(?<=\s))A:[^\S\n]*(\S+)[^\S\n]*$"`):
            Regex (multiline) whose group 1 is the answer; the last match wins. If the text has no match, it grades
            0. The default reads `A:` only where a word starts (not `QA:5`) and the answer on the same line (not
            `A:` then `5` on the next).

    Example:
        >>> ExactMatchGrader().grade("3*4=12\nA:12", "12")
        1.0
    """

    answer_pattern: str = r"(?:^|(?<=\s))A:[^\S\n]*(\S+)[^\S\n]*$"

    def grade_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        """`grade(completions[i], golds[i])` for every i (a non-text gold is named by its index)."""
        if len(completions) != len(golds):
            raise ValueError(f"grade_batch: {len(completions)} completions but {len(golds)} gold answers")
        check_golds(golds)
        return [self._match(c, g) for c, g in zip(completions, golds)]

    def grade(self, completion: str, gold: str) -> float:
        """1.0 if the last match of `answer_pattern` equals `gold` (whitespace-stripped), else 0.0."""
        check_golds([gold])
        return self._match(completion, gold)

    def _match(self, completion: str, gold: str) -> float:
        if not isinstance(completion, str):
            return 0.0
        found = re.findall(self.answer_pattern, completion, flags=re.MULTILINE)
        return 1.0 if found and str(found[-1]).strip() == gold.strip() else 0.0


def as_real(value: Any) -> float | None:
    """`value` as a float when it is a real number (Python, NumPy, a 0-d tensor), else None (strings never).

    Example:
        >>> as_real(1), as_real(True), as_real("1"), as_real(None)
        (1.0, 1.0, None, None)
    """
    if isinstance(value, (str, bytes)) or not (isinstance(value, numbers.Real) or hasattr(value, "__float__")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


SUCCESS_THRESHOLD = 0.5  # a grade at or above it counts as a success wherever grades become success counts


def checked_grades(grades: Sequence[Any], completions: Sequence[str] | None = None) -> list[float]:
    """Grades as floats, each checked to be a finite number in [0, 1] (a grader that returns anything else is
    broken; caught when it returns, before rollouts are spent on more). Success counts take a grade of at least
    `SUCCESS_THRESHOLD` as a success.

    Example:
        >>> checked_grades([1, 0.0, True])
        [1.0, 0.0, 1.0]
        >>> checked_grades([1.0, float("nan")], ["A:1", "A:?"])
        Traceback (most recent call last):
        ...
        ValueError: the grader returned nan (float) for completion 1 ('A:?'): grades must be finite numbers in [0, 1]
    """
    out = []
    for i, grade in enumerate(grades):
        value = as_real(grade)
        if value is None or not 0.0 <= value <= 1.0:  # NaN fails both comparisons
            shown = f" ({completions[i]!r:.60})" if completions is not None and i < len(completions) else ""
            raise ValueError(
                f"the grader returned {grade!r:.40} ({type(grade).__name__}) for completion {i}{shown}: grades must "
                "be finite numbers in [0, 1]"
            )
        out.append(value)
    return out


def check_golds(golds: Sequence[Any]) -> None:
    """Gold answers are user input, so a non-text one is an error (a model output that is not text scores 0).

    Example:
        >>> check_golds(["12", "x"])
        >>> check_golds(["12", 5])
        Traceback (most recent call last):
        ...
        TypeError: gold answer 1 is 5 (int): gold answers are text; pass str(answer) (load_problems converts numbers)
    """
    for i, gold in enumerate(golds):
        if not isinstance(gold, str):
            raise TypeError(
                f"gold answer {i} is {gold!r:.40} ({type(gold).__name__}): gold answers are text; pass str(answer) "
                "(load_problems converts numbers)"
            )


def grade_batch(grader: Grader, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """Grade `completions[i]` against `golds[i]` for every i (through `grader.grade_batch` when it has one)."""
    if len(completions) != len(golds):
        raise ValueError(f"grade_batch: {len(completions)} completions but {len(golds)} gold answers")
    batched = getattr(grader, "grade_batch", None)
    if callable(batched):
        return [float(x) for x in batched(list(completions), list(golds))]
    return [float(grader.grade(c, g)) for c, g in zip(completions, golds)]
