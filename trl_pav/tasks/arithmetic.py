"""Multi-step arithmetic: the demo task. Every step can be checked exactly, so the true first wrong step is known.

A problem is an expression such as `25-29*14-2`. The reference trace evaluates one operation per step, products
first and then left to right (`29*14=406`, `25-406=-381`, `-381-2=-383`), and ends with `#### -383`, a final answer
that math-verify reads.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from ..steps import StepFormat
from ..tokenization import build_char_tokenizer

__all__ = [
    "ArithmeticGrader",
    "ArithmeticProblem",
    "ArithmeticTask",
    "NoisyArithmeticPolicy",
    "evaluate",
    "problems_rows",
    "reference_steps",
]

# ASCII digits only (`\d` also matches other scripts' digits), and no number longer than any step of these
# tasks can need: longer ones are not steps (and Python refuses to parse ints over 4,300 digits).
_NUM = r"[0-9]{1,1000}"
_STEP = re.compile(rf"^(-?{_NUM})([+\-*])(-?{_NUM})=(-?{_NUM})$")
_ANSWER = re.compile(rf"^####\s*(-?{_NUM})$")


def _tokenize(expr: str) -> list[int | str]:
    """`"25-29*-4"` -> `[25, "-", 29, "*", -4]` (a minus right after an operator or at the start is a sign)."""
    out: list[int | str] = []
    i = 0
    while i < len(expr):
        expect_number = not out or isinstance(out[-1], str)
        m = re.match(rf"-?{_NUM}" if expect_number else r"[+\-*]", expr[i:])
        if m is None:
            raise ValueError(f"cannot parse arithmetic expression {expr!r} at character {i}")
        out.append(int(m.group()) if expect_number else m.group())
        i += m.end()
    if not out or isinstance(out[-1], str):
        raise ValueError(f"arithmetic expression {expr!r} ends with an operator")
    return out


def _apply(a: int, op: str, b: int) -> int:
    return a * b if op == "*" else a + b if op == "+" else a - b


def _next_op(tokens: list[int | str]) -> int:
    """Index of the operator evaluated next: the first product, else the first operator."""
    ops = [i for i in range(1, len(tokens), 2)]
    products = [i for i in ops if tokens[i] == "*"]
    return (products or ops)[0]


def evaluate(expr: str) -> int:
    """Value of `expr` with the usual precedence (products first, then left to right).

    Example:
        >>> evaluate("25-29*14-2")
        -383
    """
    tokens = _tokenize(expr)
    while len(tokens) > 1:
        i = _next_op(tokens)
        tokens[i - 1 : i + 2] = [_apply(tokens[i - 1], tokens[i], tokens[i + 1])]  # type: ignore[arg-type]
    return tokens[0]  # type: ignore[return-value]


def reference_steps(expr: str) -> list[str]:
    """The reference trace: one operation per step, then `#### answer`.

    Example:
        >>> reference_steps("25-29*14-2")
        ['29*14=406', '25-406=-381', '-381-2=-383', '#### -383']
    """
    tokens = _tokenize(expr)
    steps = []
    while len(tokens) > 1:
        i = _next_op(tokens)
        a, op, b = tokens[i - 1], tokens[i], tokens[i + 1]
        value = _apply(a, op, b)  # type: ignore[arg-type]
        steps.append(f"{a}{op}{b}={value}")
        tokens[i - 1 : i + 2] = [value]
    steps.append(f"#### {tokens[0]}")
    return steps


@dataclass(frozen=True)
class ArithmeticProblem:
    """One problem: the expression and its exact answer."""

    expression: str
    answer: int

    @property
    def prompt(self) -> str:
        """The prompt text the policy continues from."""
        return f"Q:{self.expression}?\n"

    @property
    def gold(self) -> str:
        """The gold answer as a string (for graders)."""
        return str(self.answer)


def _step_is_correct(tokens: list[int | str], step: str) -> tuple[bool, list[int | str] | None]:
    """Whether `step` is a true operation that keeps the expression's value; the reduced tokens if it is."""
    m = _STEP.match(step.strip())
    if m is None:
        return False, None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    if _apply(a, op, b) != c:
        return False, None
    target = _value(tokens)
    for i in range(1, len(tokens), 2):
        if tokens[i - 1] == a and tokens[i] == op and tokens[i + 1] == b:
            reduced = [*tokens[: i - 1], c, *tokens[i + 2 :]]
            if _value(reduced) == target:
                return True, reduced
    return False, None


def _value(tokens: list[int | str]) -> int:
    tokens = list(tokens)
    while len(tokens) > 1:
        i = _next_op(tokens)
        tokens[i - 1 : i + 2] = [_apply(tokens[i - 1], tokens[i], tokens[i + 1])]  # type: ignore[arg-type]
    return tokens[0]  # type: ignore[return-value]


def problems_rows(problems: Sequence[ArithmeticProblem]) -> Dataset:
    """Problems as a `Dataset` with `prompt`, `gold` and `expression` columns (the labeler's input)."""
    return Dataset.from_dict(
        {
            "prompt": [p.prompt for p in problems],
            "gold": [p.gold for p in problems],
            "expression": [p.expression for p in problems],
        }
    )


@dataclass
class ArithmeticGrader:
    """Exact outcome grader for the task: 1.0 iff the trace's last `#### n` equals the gold integer.

    It agrees with `MathVerifyGrader` on this task's outputs (tested) and is much faster.
    """

    def grade(self, completion: str, gold: str) -> float:
        """1.0 if the final `#### n` line equals `gold`, else 0.0."""
        if not isinstance(completion, str):
            return 0.0
        found = re.findall(rf"####\s*(-?{_NUM})\s*$", completion.strip())
        try:
            return 1.0 if found and int(found[-1]) == int(gold) else 0.0
        except ValueError:
            return 0.0


@dataclass
class ArithmeticTask:
    """Generator, checker, tokenizer and step format of the multi-step arithmetic task.

    Args:
        min_operand (`int`, defaults to `1`): smallest operand.
        max_operand (`int`, defaults to `15`): largest operand (15 puts a 5-minute CPU policy at ~30% sampled accuracy).
        min_ops (`int`, defaults to `2`): fewest operators per problem.
        max_ops (`int`, defaults to `3`): most operators per problem.
        operators (`str`, defaults to `"+-*"`): operators to draw from.

    Example:
        >>> task = ArithmeticTask()
        >>> p = task.sample_problems(1, seed=0)[0]
        >>> task.grader.grade(task.step_format.join(reference_steps(p.expression)), p.gold)
        1.0
    """

    min_operand: int = 1
    max_operand: int = 15
    min_ops: int = 2
    max_ops: int = 3
    operators: str = "+-*"
    step_format: StepFormat = field(default_factory=StepFormat)
    grader: ArithmeticGrader = field(default_factory=ArithmeticGrader)

    def __post_init__(self) -> None:
        if not 0 < self.min_operand <= self.max_operand:
            raise ValueError(f"need 0 < min_operand <= max_operand, got {self.min_operand}, {self.max_operand}")
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(f"operators must be a non-empty subset of '+-*', got {self.operators!r}")

    name = "arithmetic"
    alphabet = "0123456789+-*=#Q:? \n"

    def tokenizer(self):
        """A character tokenizer over the task's alphabet (BOS prepended)."""
        return build_char_tokenizer(self.alphabet)

    def sample_problems(self, n: int, seed: int = 0) -> list[ArithmeticProblem]:
        """`n` random problems, deterministic in `seed`."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            n_ops = rng.randint(self.min_ops, self.max_ops)
            parts = [str(rng.randint(self.min_operand, self.max_operand))]
            for _ in range(n_ops):
                parts += [rng.choice(self.operators), str(rng.randint(self.min_operand, self.max_operand))]
            expr = "".join(parts)
            out.append(ArithmeticProblem(expr, evaluate(expr)))
        return out

    def problems_dataset(self, n: int, seed: int = 0) -> Dataset:
        """`n` fresh problems as the labeler's input rows (`problems_rows`)."""
        return problems_rows(self.sample_problems(n, seed))

    def sft_dataset(self, n: int, seed: int = 0) -> Dataset:
        """Prompt-completion rows of reference traces, for TRL's `SFTTrainer`."""
        probs = self.sample_problems(n, seed)
        return Dataset.from_dict(
            {
                "prompt": [p.prompt for p in probs],
                "completion": [self.step_format.join(reference_steps(p.expression)) for p in probs],
            }
        )

    def step_labels(self, expression: str, steps: Sequence[str]) -> list[bool]:
        """Exact correctness of each step, judged in order: a step is correct iff it is a true operation on adjacent
        operands of the current expression that keeps the expression's value, or a `#### n` with the right value.
        Every step after the first wrong one is marked wrong too (the trace has left the correct path).
        """
        tokens: list[int | str] | None = _tokenize(expression)
        value = evaluate(expression)
        out = []
        for step in steps:
            ok = False
            if tokens is not None:
                answer = _ANSWER.match(step.strip())
                if answer is not None:
                    ok = int(answer.group(1)) == value
                    tokens = None  # nothing may follow the answer
                else:
                    ok, tokens = _step_is_correct(tokens, step)
            if not ok:
                tokens = None
            out.append(ok)
        return out

    def first_error(self, expression: str, steps: Sequence[str]) -> int | None:
        """Index of the true first wrong step of a trace, or None if every step is correct.

        Example:
            >>> ArithmeticTask().first_error("25-29*14-2", ["29*14=406", "25-406=-371", "-371-2=-373"])
            1
        """
        labels = self.step_labels(expression, steps)
        return next((i for i, ok in enumerate(labels) if not ok), None)


class NoisyArithmeticPolicy:
    """A procedural arithmetic policy with exactly known values, for tests and benchmarks.

    It follows the reference order; while the trace is still correct, each operation step is wrong with probability
    `error_rate` (the result is off by a nonzero amount). After an error it makes no more errors and continues
    consistently from the wrong value; every later operation is injective in that value (products are by nonzero
    operands), so the final answer is wrong. Hence from a correct prefix with r operations left
    `Q^π = (1 - error_rate)^r`, and 0 after any error (`exact_value`).

    Example:
        >>> task = ArithmeticTask()
        >>> pol = NoisyArithmeticPolicy(task, error_rate=0.0)
        >>> from trl_pav.generation import GenerationRequest
        >>> pol.generate([GenerationRequest("Q:2*3+4?\\n")])[0].steps
        ['2*3=6', '6+4=10', '#### 10']
    """

    def __init__(self, task: ArithmeticTask, error_rate: float, name: str | None = None):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.task, self.error_rate = task, error_rate
        self.step_format = task.step_format
        self.name = name or f"noisy-arithmetic-p{error_rate:g}"

    @staticmethod
    def _expression(prompt: str) -> str:
        m = re.match(r"^Q:(.+)\?\n$", prompt)
        if m is None:
            raise ValueError(f"not an arithmetic prompt: {prompt!r}")
        return m.group(1)

    def _state(self, expression: str, steps: Sequence[str]) -> list[int | str] | None:
        """Current tokens after replaying `steps` (wrong results included), None if a step is unreadable or final."""
        tokens = _tokenize(expression)
        for step in steps:
            m = _STEP.match(step.strip())
            if m is None or len(tokens) < 3:
                return None
            i = _next_op(tokens)
            tokens[i - 1 : i + 2] = [int(m.group(4))]
        return tokens

    def exact_value(self, prompt: str, steps: Sequence[str]) -> float:
        """Exact success probability after `steps` (the root value for no steps)."""
        expression = self._expression(prompt)
        labels = self.task.step_labels(expression, steps)
        if not all(labels):
            return 0.0
        if steps and _ANSWER.match(steps[-1].strip()):
            return 1.0
        remaining = (len(_tokenize(expression)) - 1) // 2 - len(steps)
        return (1.0 - self.error_rate) ** remaining

    def generate(self, requests: Sequence, stop_at_step: bool = False) -> list:
        """One continuation per request (see `Policy.generate`)."""
        from ..generation.base import Generation

        out = []
        for req in requests:
            rng = random.Random(req.seed)
            expression = self._expression(req.prompt)
            on_path = all(self.task.step_labels(expression, req.steps))
            tokens = self._state(expression, req.steps)
            new: list[str] = []
            finished = tokens is None
            while tokens is not None and not (stop_at_step and new):
                if len(tokens) == 1:
                    new.append(f"#### {tokens[0]}")
                    finished = True
                    break
                i = _next_op(tokens)
                a, op, b = tokens[i - 1], tokens[i], tokens[i + 1]
                value = _apply(a, op, b)  # type: ignore[arg-type]
                if on_path and rng.random() < self.error_rate:
                    value += rng.choice([-10, -2, -1, 1, 2, 10])
                    on_path = False
                new.append(f"{a}{op}{b}={value}")
                tokens[i - 1 : i + 2] = [value]
            out.append(Generation(steps=new, finished=finished, num_tokens=sum(len(s) + 1 for s in new)))
        return out

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Exact `Q^π` of the root and after each step (the `StepScorer` protocol): an oracle verifier."""
        if len(prompts) != len(steps):
            raise ValueError(f"score: {len(prompts)} prompts but {len(steps)} step lists")
        return [[self.exact_value(p, s[:h]) for h in range(len(s) + 1)] for p, s in zip(prompts, steps)]
