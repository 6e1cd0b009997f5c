"""Arithmetic by rewriting: a task where progress differs from correctness (the realistic demo task).

A problem is a sum of plain numbers and products, such as `17*6+4+3*9`. Every step writes the whole expression after
one reduction, in any order: a product becomes its value (`102+4+3*9`), or two adjacent plain numbers become their
sum (`17*6+7+... `). When one number is left the step is the answer (`#### 133`). A step may also restate the
expression unchanged: valid, but no progress. So the task has what the paper's regime needs and one forced
derivation lacks (docs/tasks.md):

- several valid evaluation orders, hence distinct correct states at one depth;
- uneven step difficulty: products of a two-digit and a one-digit number are hard, sums of small numbers routine;
- valid steps that make no progress (restating), which a `Q^μ` reward pays for, and a Best-of-K prover's advantage
  too, since the policy's own steps average below its 0 (`trl_pav.expected_prover_advantage`; docs/tasks.md).

Ground truth is exact. `RewritePolicy` is a procedural policy with a per-kind error rate (`"product"`, `"sum"`), a
restate probability and a uniform choice of reduction; its success probability from any state, `exact_value`, is a
dynamic programme over the task's (small) state space. The same values, with error rates measured on a trained
policy, are the demo's exact-value verifier (`checker_scorer`).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from ..steps import StepFormat
from ..tokenization import build_char_tokenizer
from .arithmetic import ArithmeticGrader, ArithmeticProblem, problems_rows

__all__ = [
    "MOVE_KINDS",
    "RewriteGrader",
    "RewritePolicy",
    "RewriteProblem",
    "RewriteTask",
    "parse_expression",
    "render_expression",
    "successors",
]

Term = int | tuple[int, int]  # a plain number, or a product (a, b)
State = tuple[Term, ...]

MOVE_KINDS = ("hard_product", "product", "split", "sum")
# ASCII digits only (`\d` also matches other scripts' digits), and no number longer than any step of these
# tasks can need: longer ones are not steps (and Python refuses to parse ints over 4,300 digits).
_NUM = r"[0-9]{1,1000}"
_ANSWER = re.compile(rf"^####\s*({_NUM})$")
_TERM = re.compile(rf"^({_NUM})(?:\*({_NUM}))?$")


def parse_expression(text: str) -> State | None:
    """`"17*6+4"` -> `((17, 6), 4)`; None if `text` is not a sum of numbers and two-factor products.

    Example:
        >>> parse_expression("17*6+4+3*9")
        ((17, 6), 4, (3, 9))
        >>> parse_expression("17*6*2") is None
        True
    """
    parts = text.strip().split("+")
    out: list[Term] = []
    for part in parts:
        m = _TERM.match(part)
        if m is None:
            return None
        out.append(int(m.group(1)) if m.group(2) is None else (int(m.group(1)), int(m.group(2))))
    return tuple(out)


def render_expression(state: State) -> str:
    """The inverse of `parse_expression`.

    Example:
        >>> render_expression(((17, 6), 4))
        '17*6+4'
    """
    return "+".join(f"{t[0]}*{t[1]}" if isinstance(t, tuple) else str(t) for t in state)


def _value(state: State) -> int:
    return sum(t[0] * t[1] if isinstance(t, tuple) else t for t in state)


def move_kind(term: Term) -> str:
    """Kind of evaluating a product term: `"hard_product"` when both digits of the first factor are nonzero (17*6),
    else `"product"` (a times-table fact such as 7*6 or 10*6)."""
    a, _ = term  # type: ignore[misc]
    return "hard_product" if a > 10 and a % 10 else "product"


@functools.lru_cache(maxsize=200_000)
def successors(state: State) -> tuple[tuple[str, State], ...]:
    """Every correct step from `state` that makes progress, as `(kind, next state)`: each product evaluated
    (`"product"` or `"hard_product"`), each product with a two-digit first factor split by the distributive law
    (`"split"`: 17*6 -> 10*6+7*6), each pair of adjacent plain numbers summed (`"sum"`). Empty for a single plain
    number (the answer is next).

    Example:
        >>> successors(((12, 3), 4))
        (('hard_product', (36, 4)), ('split', ((10, 3), (2, 3), 4)))
    """
    out: list[tuple[str, State]] = []
    for i, t in enumerate(state):
        if isinstance(t, tuple):
            out.append((move_kind(t), (*state[:i], t[0] * t[1], *state[i + 1 :])))
            if t[0] > 10 and t[0] % 10:
                out.append(("split", (*state[:i], (t[0] - t[0] % 10, t[1]), (t[0] % 10, t[1]), *state[i + 1 :])))
    for i in range(len(state) - 1):
        a, b = state[i], state[i + 1]
        if not isinstance(a, tuple) and not isinstance(b, tuple):
            out.append(("sum", (*state[:i], a + b, *state[i + 2 :])))
    return tuple(out)


def _is_final(state: State) -> bool:
    return len(state) == 1 and not isinstance(state[0], tuple)


# The same prompt (`Q:<expression>?`) and answer (`#### n`) as the arithmetic task, hence the same problem record and
# the same exact grader.
RewriteProblem = ArithmeticProblem
RewriteGrader = ArithmeticGrader


@dataclass
class RewriteTask:
    """Generator, checker, tokenizer and step format of the rewriting task.

    Args:
        min_terms (`int`, defaults to `3`): fewest terms per problem.
        max_terms (`int`, defaults to `4`): most terms per problem.
        product_share (`float`, defaults to `0.5`): probability that a term is a product (at least one per problem).
        max_factor (`int`, defaults to `19`): largest first factor of a product (the second is a digit 2..9).
        max_number (`int`, defaults to `9`): largest plain number.
        restate_rate (`float`, defaults to `0.15`): share of SFT steps that restate the expression (no progress).

    Example:
        >>> task = RewriteTask()
        >>> p = task.sample_problems(1, seed=0)[0]
        >>> steps = task.reference_steps(p.expression, seed=0)
        >>> task.grader.grade(task.step_format.join(steps), p.gold), all(task.step_labels(p.expression, steps))
        (1.0, True)
    """

    min_terms: int = 3
    max_terms: int = 4
    product_share: float = 0.5
    max_factor: int = 19
    max_number: int = 9
    restate_rate: float = 0.15
    step_format: StepFormat = field(default_factory=StepFormat)
    grader: RewriteGrader = field(default_factory=RewriteGrader)

    name = "rewrite"
    alphabet = "0123456789+*#Q:? \n"

    def __post_init__(self) -> None:
        if not 2 <= self.min_terms <= self.max_terms:
            raise ValueError(f"need 2 <= min_terms <= max_terms, got {self.min_terms}, {self.max_terms}")
        if not 0.0 <= self.product_share <= 1.0:
            raise ValueError(f"product_share must be in [0, 1], got {self.product_share}")
        if self.max_factor < 2 or self.max_number < 1:
            raise ValueError(f"need max_factor >= 2 and max_number >= 1, got {self.max_factor}, {self.max_number}")
        if not 0.0 <= self.restate_rate < 1.0:
            raise ValueError(f"restate_rate must be in [0, 1), got {self.restate_rate}")

    def tokenizer(self):
        """A character tokenizer over the task's alphabet (BOS prepended)."""
        return build_char_tokenizer(self.alphabet)

    def sample_problems(self, n: int, seed: int = 0) -> list[RewriteProblem]:
        """`n` random problems, deterministic in `seed`."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            n_terms = rng.randint(self.min_terms, self.max_terms)
            products = [rng.random() < self.product_share for _ in range(n_terms)]
            if not any(products):
                products[rng.randrange(n_terms)] = True
            state = tuple(
                (rng.randint(2, self.max_factor), rng.randint(2, 9)) if is_product else rng.randint(1, self.max_number)
                for is_product in products
            )
            out.append(RewriteProblem(render_expression(state), _value(state)))
        return out

    def problems_dataset(self, n: int, seed: int = 0) -> Dataset:
        """`n` fresh problems as the labeler's input rows (`prompt`, `gold`, `expression`)."""
        return problems_rows(self.sample_problems(n, seed))

    def reference_steps(self, expression: str, seed: int = 0) -> list[str]:
        """A correct trace in a random order, with restating steps at `restate_rate` (the SFT distribution)."""
        return RewritePolicy(self, {k: 0.0 for k in MOVE_KINDS}, restate_rate=self.restate_rate).sample_trace(
            expression, seed
        )

    def sft_dataset(self, n: int, seed: int = 0) -> Dataset:
        """Prompt-completion rows of correct traces (random orders, some restating) of `n` fresh problems, for TRL's
        `SFTTrainer`."""
        return self.sft_rows(self.sample_problems(n, seed), seed + 1)

    def sft_rows(self, problems: Sequence[RewriteProblem], seed: int = 0) -> Dataset:
        """Prompt-completion rows of one correct trace per problem, its order and restatements drawn from `seed`."""
        rng = random.Random(seed)
        return Dataset.from_dict(
            {
                "prompt": [p.prompt for p in problems],
                "completion": [
                    self.step_format.join(self.reference_steps(p.expression, rng.getrandbits(32))) for p in problems
                ],
            }
        )

    def trace_lengths(self, quantile: float = 0.995, n: int = 2000, seed: int = 0) -> dict[str, int]:
        """The `quantile` of the SFT distribution's trace lengths over `n` seeded problems: completion tokens
        (`"tokens"`, answer and end token included) and steps (`"steps"`); and the maxima of a step's tokens
        (`"step_tokens"`) and a prompt's (`"prompt_tokens"`, BOS included). Generation limits follow these.

        Example:
            >>> small, large = RewriteTask(min_terms=2, max_terms=2), RewriteTask(min_terms=4, max_terms=4)
            >>> small.trace_lengths()["tokens"] < large.trace_lengths()["tokens"]
            True
        """
        import math

        if not 0.0 < quantile <= 1.0 or n < 1:
            raise ValueError(f"trace_lengths: need 0 < quantile <= 1 and n >= 1, got {quantile}, {n}")
        tok = self.tokenizer()
        rows = self.sft_dataset(n, seed)
        tokens, steps, step_tokens = [], [], 0
        prompt_tokens = max(len(tok(p)["input_ids"]) for p in rows["prompt"])
        for completion in rows["completion"]:
            split = self.step_format.split(completion)
            tokens.append(len(tok(completion, add_special_tokens=False)["input_ids"]) + 1)
            steps.append(len(split))
            step_tokens = max(step_tokens, *(len(tok(s, add_special_tokens=False)["input_ids"]) for s in split))

        def at(values: list[int]) -> int:
            return sorted(values)[min(len(values) - 1, math.ceil(quantile * len(values)) - 1)]

        return {"tokens": at(tokens), "steps": at(steps), "step_tokens": step_tokens, "prompt_tokens": prompt_tokens}

    def replay(self, expression: str, steps: Sequence[str]) -> list[tuple[str, State | None]]:
        """Judge `steps` in order: for each, its move (`"product"`, `"sum"`, `"restate"`, `"answer"` or `"wrong"`)
        and the state after it (None once the trace has left the correct path or answered)."""
        state: State | None = parse_expression(expression)
        if state is None:
            raise ValueError(f"not a rewrite-task expression: {expression!r}")
        out: list[tuple[str, State | None]] = []
        for step in steps:
            move = "wrong"
            if state is not None:
                answer = _ANSWER.match(step.strip())
                if answer is not None:
                    # The answer step is the last reduction (or a bare number's restatement).
                    total = int(answer.group(1))
                    move = _final_moves(state).get(total, "answer") if total == _value(state) else "wrong"
                    state = None
                else:
                    new = parse_expression(step)
                    if new is not None and new == state and not _is_final(state):
                        move = "restate"
                    elif new is not None:
                        move = next((k for k, s in successors(state) if s == new and not _is_final(s)), "wrong")
                        state = new if move != "wrong" else None
                    else:
                        state = None
            out.append((move, state))
        return out

    def attempted_kind(self, state: State, step: str) -> str:
        """The kind of move a step from the correct `state` attempted, right or wrong, read from its shape: one term
        fewer is a sum, one more a split, the same count a product (hard or not by the term that changed) or a
        restatement; `"unreadable"` if the step is neither an expression nor an answer."""
        answer = _ANSWER.match(step.strip())
        if answer is not None:
            finals = [k for k, s in successors(state) if _is_final(s)]
            return finals[0] if finals else "answer"
        new = parse_expression(step)
        if new is None:
            return "unreadable"
        if len(new) == len(state) - 1:
            return "sum"
        if len(new) == len(state) + 1:
            return "split"
        if len(new) == len(state):
            changed = [t for t, u in zip(state, new) if t != u]
            if not changed:
                return "restate"
            first = changed[0]
            return move_kind(first) if isinstance(first, tuple) else "restate"  # a miscopied number
        return "unreadable"

    def move_counts(self, expression: str, steps: Sequence[str]) -> dict[str, list[int]]:
        """Per move kind, `[right, wrong]` counts of the steps a trace took while it was still correct (the first
        wrong step is counted against the kind it attempted; nothing after it counts)."""
        counts: dict[str, list[int]] = {}
        state = parse_expression(expression)
        for (move, after), step in zip(self.replay(expression, steps), steps):
            kind = self.attempted_kind(state, step) if move == "wrong" else move  # type: ignore[arg-type]
            counts.setdefault(kind, [0, 0])[move == "wrong"] += 1
            if move == "wrong" or after is None:
                break
            state = after
        return counts

    def no_progress_steps(self, expression: str, steps: Sequence[str]) -> list[bool]:
        """For each step, whether it makes no progress: it writes the same expression as the one before it (the
        problem's, for the first step), right or wrong. Counts restatements after a mistake too, which
        `move_counts` does not, since a policy padding its traces pads them everywhere.

        Example:
            >>> RewriteTask().no_progress_steps("2*3+4", ["2*3+4", "6+4", "6+4", "#### 10"])
            [True, False, True, False]
        """
        before = parse_expression(expression)
        if before is None:
            raise ValueError(f"not a rewrite-task expression: {expression!r}")
        out = []
        for step in steps:
            now = parse_expression(step)
            out.append(now is not None and now == before)
            before = now if now is not None else before
        return out

    def step_labels(self, expression: str, steps: Sequence[str]) -> list[bool]:
        """Exact correctness of each step, judged in order: a correct reduction, a restatement, or the right answer
        when one reduction is left. Every step after the first wrong one is wrong too."""
        out, ok = [], True
        for move, _ in self.replay(expression, steps):
            ok = ok and move != "wrong"
            out.append(ok)
        return out

    def first_error(self, expression: str, steps: Sequence[str]) -> int | None:
        """Index of the true first wrong step of a trace, or None if every step is correct."""
        labels = self.step_labels(expression, steps)
        return next((i for i, ok in enumerate(labels) if not ok), None)


def _final_moves(state: State) -> dict[int, str]:
    """Answers reachable in one step from `state` and the move kind that writes each (a bare number: restating it)."""
    if _is_final(state):
        return {state[0]: "answer"}  # type: ignore[dict-item]
    return {s[0]: kind for kind, s in successors(state) if _is_final(s)}  # type: ignore[misc]


def _corrupt(state: State, new: State, kind: str, rng: random.Random) -> State:
    """`new` with the result of the step from `state` made wrong by a nonzero amount (a split's unit factor is off by
    one). Later steps keep the error, so the answer is wrong."""
    i = next(j for j, (a, b) in enumerate(zip((*state, None), new)) if a != b)
    if kind == "split":
        u, b = new[i + 1]  # type: ignore[misc]
        return (*new[: i + 1], (u + 1 if u < 9 else u - 1, b), *new[i + 2 :])
    delta = rng.choice([-10, -2, -1, 1, 2, 10])
    value: int = new[i]  # type: ignore[assignment]
    return (*new[:i], value + delta if value + delta > 0 else value + abs(delta), *new[i + 1 :])


class RewritePolicy:
    """A procedural policy for `RewriteTask` with exactly known values, for tests, benchmarks and exact verifiers.

    At each state it restates the expression with probability `restate_rate`, else applies a reduction chosen
    uniformly among the correct ones; a reduction of kind k is wrong with probability `error_rates[k]` (the result
    is off by a nonzero amount, and every later reduction keeps the error, so the answer is wrong). Its success
    probability from a correct state is `exact_value`: `V(s) = Σ_moves (1 - e_kind) V(s') / #moves` (restating
    only delays), and 0 after any wrong step.

    Example:
        >>> task = RewriteTask()
        >>> pol = RewritePolicy(task, {"hard_product": 0.5, "product": 0.0, "split": 0.0, "sum": 0.0})
        >>> pol.exact_value("Q:12*3+4?\\n", [])  # 12*3 directly (a coin flip) or split into 10*3+2*3 (safe)
        0.75
        >>> pol.exact_value("Q:12*3+4?\\n", ["10*3+2*3+4"])
        1.0
    """

    def __init__(
        self, task: RewriteTask, error_rates: dict[str, float], restate_rate: float = 0.0, name: str | None = None
    ):
        unknown = set(error_rates) - set(MOVE_KINDS)
        if unknown or set(MOVE_KINDS) - set(error_rates):
            raise ValueError(f"error_rates needs exactly the kinds {MOVE_KINDS}, got {sorted(error_rates)}")
        for kind, rate in error_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"error_rates[{kind!r}] must be in [0, 1], got {rate}")
        if not 0.0 <= restate_rate < 1.0:
            raise ValueError(f"restate_rate must be in [0, 1), got {restate_rate}")
        self.task, self.error_rates, self.restate_rate = task, dict(error_rates), restate_rate
        self.step_format = task.step_format
        rates = ",".join(f"{k}{error_rates[k]:g}" for k in MOVE_KINDS)
        self.name = name or f"rewrite-{rates}-r{restate_rate:g}"
        self._values: dict[State, float] = {}

    @classmethod
    def fit(
        cls, task: RewriteTask, traces: Sequence[tuple[str, Sequence[str]]], name: str = "checker"
    ) -> RewritePolicy:
        """The procedural policy whose per-kind error rates and restate rate are those measured on `traces`
        (`(expression, steps)` pairs sampled from a policy): exact values for a trained policy, up to the order
        in which it chooses reductions (uniform here). A kind never attempted gets rate 0; unreadable steps count
        as errors of no kind and are left out of the rates."""
        totals: dict[str, list[int]] = {}
        for expression, steps in traces:
            for kind, (right, wrong) in task.move_counts(expression, steps).items():
                t = totals.setdefault(kind, [0, 0])
                t[0], t[1] = t[0] + right, t[1] + wrong
        rates = {k: (totals[k][1] / sum(totals[k])) if k in totals and sum(totals[k]) else 0.0 for k in MOVE_KINDS}
        restated = sum(totals.get("restate", [0, 0]))  # a miscopied restatement was an attempt to restate too
        taken = sum(sum(t) for t in totals.values())
        return cls(task, rates, restate_rate=min(restated / max(taken, 1), 0.95), name=name)

    @staticmethod
    def _expression(prompt: str) -> str:
        m = re.match(r"^Q:(.+)\?\n$", prompt)
        if m is None:
            raise ValueError(f"not a rewrite-task prompt: {prompt!r}")
        return m.group(1)

    def state_value(self, state: State) -> float:
        """Exact success probability from a correct `state` (memoised dynamic programme)."""
        if _is_final(state):
            return 1.0
        if state not in self._values:
            moves = successors(state)
            total = sum((1.0 - self.error_rates[k]) * self.state_value(s) for k, s in moves)
            self._values[state] = total / len(moves)
        return self._values[state]

    def exact_value(self, prompt: str, steps: Sequence[str]) -> float:
        """Exact success probability after `steps` (the root value for no steps)."""
        return self.values_along(prompt, steps)[-1]

    def values_along(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """Exact success probability at the root and after each of `steps`, from one replay of the trace: 0 from
        the first wrong step on, 1 after a correct answer."""
        expression = self._expression(prompt)
        replay = self.task.replay(expression, steps)  # raises on an expression the task cannot read
        out = [self.state_value(parse_expression(expression))]  # type: ignore[arg-type]
        wrong = False
        for move, state in replay:
            wrong = wrong or move == "wrong"
            out.append(0.0 if wrong else 1.0 if state is None else self.state_value(state))
        return out

    def _step(self, state: State, rng: random.Random, on_path: bool) -> tuple[str, State, bool]:
        """One sampled step from `state`: its text, the state it leads to, whether the trace is still correct."""
        if rng.random() < self.restate_rate:
            return render_expression(state), state, on_path
        kind, new = rng.choice(successors(state))
        if on_path and rng.random() < self.error_rates[kind]:
            new = _corrupt(state, new, kind, rng)
            on_path = False
        if _is_final(new):
            return f"#### {new[0]}", new, on_path
        return render_expression(new), new, on_path

    def _resume(self, expression: str, steps: Sequence[str]) -> tuple[State | None, bool]:
        """The state after `steps` as written (wrong values included) and whether it is still correct."""
        state = parse_expression(expression)
        on_path = all(self.task.step_labels(expression, steps))
        for step in steps:
            if _ANSWER.match(step.strip()):
                return None, on_path
            state = parse_expression(step)
            if state is None:
                return None, False
        return state, on_path

    def sample_trace(self, expression: str, seed: int) -> list[str]:
        """A whole trace from the problem, sampled from `seed`."""
        rng = random.Random(seed)
        state, on_path, steps = parse_expression(expression), True, []
        if state is None:
            raise ValueError(f"not a rewrite-task expression: {expression!r}")
        while not steps or not _ANSWER.match(steps[-1]):
            text, state, on_path = self._step(state, rng, on_path)
            steps.append(text)
        return steps

    def generate(self, requests: Sequence, stop_at_step: bool = False) -> list:
        """One continuation per request (see `Policy.generate`)."""
        from ..generation.base import Generation

        out = []
        for req in requests:
            rng = random.Random(req.seed)
            state, on_path = self._resume(self._expression(req.prompt), req.steps)
            new: list[str] = []
            while state is not None and not (stop_at_step and new):
                if _is_final(state):  # a bare number left by a wrong or restated trace: answer it
                    new.append(f"#### {state[0]}")
                    break
                text, state, on_path = self._step(state, rng, on_path)
                new.append(text)
                if _ANSWER.match(text):
                    break
            finished = state is None or (bool(new) and bool(_ANSWER.match(new[-1])))
            out.append(Generation(steps=new, finished=finished, num_tokens=sum(len(s) + 1 for s in new)))
        return out

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Exact `Q^π` of the root and after each step (the `StepScorer` protocol): an oracle verifier."""
        if len(prompts) != len(steps):
            raise ValueError(f"score: {len(prompts)} prompts but {len(steps)} step lists")
        return [self.values_along(p, s) for p, s in zip(prompts, steps)]
