"""Policy evaluation: sampled accuracy of a policy on graded problems, its curve during training, and disjoint pools
of problems for the stages that train and evaluate on them."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from transformers import TrainerCallback

from .generation.base import Policy, group_samples, sample_requests
from .grading import Grader, grade_batch

__all__ = [
    "AccuracyCurveCallback",
    "GeneratedTokensCallback",
    "ProblemPools",
    "ProblemSource",
    "expression_key",
    "iterations_to_reach",
    "mean_success_over_training",
    "prompt_key",
    "sample_and_grade",
    "sample_traces",
    "sampled_accuracy",
    "tokens_to_reach",
]


def sample_traces(
    policy: Policy, prompts: Sequence[str], samples_per_prompt: int = 1, seed: int = 0
) -> list[list[list[str]]]:
    """`samples_per_prompt` complete traces (as step lists) per prompt, seeded per (prompt, sample)."""
    gens = policy.generate(sample_requests(prompts, samples_per_prompt, seed))
    return group_samples(gens, samples_per_prompt)


def sample_and_grade(
    policy: Policy,
    prompts: Sequence[str],
    golds: Sequence[str],
    grader: Grader,
    samples_per_prompt: int = 1,
    seed: int = 0,
) -> tuple[list[list[list[str]]], list[list[float]]]:
    """`samples_per_prompt` sampled complete traces per prompt (as step lists, seeded per (prompt, sample)) and the
    grade of each against its prompt's gold answer.

    Example:
        >>> from trl_pav.tasks import PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> traces, grades = sample_and_grade(PlantedProverPolicy(task, 10.0), [">"] * 4, [""] * 4, task.grader)
        >>> len(traces), len(grades[0]), all(g in (0.0, 1.0) for gs in grades for g in gs)
        (4, 1, True)
    """
    if len(prompts) != len(golds):
        raise ValueError(f"sampling: {len(prompts)} prompts but {len(golds)} gold answers")
    if not prompts:
        raise ValueError("sampling: no prompts")
    traces = sample_traces(policy, prompts, samples_per_prompt, seed)
    fmt = policy.step_format
    texts = [fmt.join(t) if t else "" for ts in traces for t in ts]
    flat = grade_batch(grader, texts, [g for ts, g in zip(traces, golds) for _ in ts])
    grades, start = [], 0
    for ts in traces:
        grades.append([float(g) for g in flat[start : start + len(ts)]])
        start += len(ts)
    return traces, grades


def sampled_accuracy(
    policy: Policy,
    prompts: Sequence[str],
    golds: Sequence[str],
    grader: Grader,
    samples_per_prompt: int = 1,
    seed: int = 0,
) -> float:
    """Mean grade of sampled complete traces (at the policy's own temperature).

    Example:
        >>> from trl_pav.tasks import PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> acc = sampled_accuracy(PlantedProverPolicy(task, 10.0), [">"] * 50, [""] * 50, task.grader)
        >>> 0.0 <= acc <= 1.0
        True
    """
    grades = [g for gs in sample_and_grade(policy, prompts, golds, grader, samples_per_prompt, seed)[1] for g in gs]
    return sum(grades) / len(grades)


class AccuracyCurveCallback(TrainerCallback):
    """Records `(global step, evaluate(model))` at the start of training, every `every` steps and at the end.

    Example:
        >>> cb = AccuracyCurveCallback(lambda model: 0.5, every=10)
        >>> cb.points
        []
    """

    def __init__(self, evaluate: Callable[[Any], float], every: int):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.evaluate, self.every = evaluate, every
        self.points: list[tuple[int, float]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.points.append((0, self.evaluate(model)))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.points.append((state.global_step, self.evaluate(model)))


class GeneratedTokensCallback(TrainerCallback):
    """Cumulative compute tokens after each step of a TRL online trainer, as a user pays for them: the policy's
    completions (`completions/mean_length` × completions per step), any rollouts a verifier generated
    (`pav/rollout_tokens_per_completion`, logged by `MCStepScorer` arms) and the tokens a learned verifier read to
    score the completions (`pav/verifier_tokens_per_completion`, logged for `PAVVerifier`s), each per completion
    over all processes, times completions per step. Needs `logging_steps=1`.

    Attributes:
        per_step: `[(global step, policy tokens so far, rollout tokens so far, verifier tokens so far), ...]`.

    Example:
        >>> cb = GeneratedTokensCallback(completions_per_step=8)
        >>> cb.record(1, {"completions/mean_length": 10.0, "pav/rollout_tokens_per_completion": 5.0})
        >>> cb.record(2, {"completions/mean_length": 5.0, "pav/verifier_tokens_per_completion": 4.0})
        >>> cb.per_step, cb.tokens_at(2)
        ([(1, 80, 40, 0), (2, 120, 40, 32)], 192)
    """

    def __init__(self, completions_per_step: int | None = None):
        self.completions_per_step = completions_per_step
        self.per_step: list[tuple[int, int, int, int]] = []

    def record(self, step: int, logs: Mapping[str, float]) -> None:
        """Add one step's logged counts."""
        if "completions/mean_length" not in logs or self.completions_per_step is None:
            return
        policy, rollout, read = self.per_step[-1][1:] if self.per_step else (0, 0, 0)
        per_step = self.completions_per_step
        policy += round(float(logs["completions/mean_length"]) * per_step)
        rollout += round(float(logs.get("pav/rollout_tokens_per_completion", 0.0)) * per_step)
        read += round(float(logs.get("pav/verifier_tokens_per_completion", 0.0)) * per_step)
        self.per_step.append((step, policy, rollout, read))

    def tokens_at(self, step: int) -> int:
        """Policy + rollout + verifier tokens through `step` (0 before the first step)."""
        return _tokens_through(self.per_step, step)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.completions_per_step is None:
            if getattr(args, "logging_steps", 1) != 1:
                raise ValueError(f"GeneratedTokensCallback needs logging_steps=1, got {args.logging_steps}")
            # Completions that one optimizer step trains on, across processes.
            self.completions_per_step = (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.record(state.global_step, logs or {})


def tokens_to_reach(
    curve: Sequence[tuple[int, float]], tokens: GeneratedTokensCallback | Sequence, target: float
) -> int | None:
    """Tokens spent (policy + rollouts + verifier reads) when `curve` first reaches `target` (None if never):
    `iterations_to_reach` in tokens.

    `tokens` is a `GeneratedTokensCallback` or its `per_step` list.

    Example:
        >>> tokens_to_reach([(0, 0.2), (2, 0.95)], [(1, 80, 40), (2, 120, 40)], 0.9)
        160
    """
    step = iterations_to_reach(list(curve), target)
    if step is None:
        return None
    per_step = tokens.per_step if isinstance(tokens, GeneratedTokensCallback) else tokens
    return _tokens_through(per_step, step)


def _tokens_through(per_step: Sequence[Sequence[int]], step: int) -> int:
    """All tokens counted through `step` in a `GeneratedTokensCallback.per_step` list; records written before the
    verifier column existed have three entries and count as reading none."""
    before = [sum(t[1:]) for t in per_step if t[0] <= step]
    return before[-1] if before else 0


def iterations_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first iteration of `curve` whose success is at least `target` (None if never).

    Example:
        >>> iterations_to_reach([(0, 0.2), (10, 0.85), (20, 0.93)], 0.9)
        20
    """
    return next((step for step, acc in curve if acc >= target - 1e-9), None)


def mean_success_over_training(curve: Sequence[tuple[int, float]]) -> float:
    """The area under a success curve divided by its span of iterations (trapezoid rule over the evaluated points):
    the success an arm averaged over its training, which rewards learning sooner. Final success cannot tell two arms
    apart once both saturate; this can.

    Example:
        >>> mean_success_over_training([(0, 0.0), (10, 1.0), (30, 1.0)])
        0.8333333333333334
    """
    points = sorted(curve)
    if len(points) < 2 or points[-1][0] == points[0][0]:
        raise ValueError(f"a success curve needs two or more distinct iterations, got {list(curve)}")
    area = sum((s1 - s0) * (a0 + a1) / 2 for (s0, a0), (s1, a1) in itertools.pairwise(points))
    return area / (points[-1][0] - points[0][0])


P = TypeVar("P")


class ProblemSource(Protocol[P]):
    """A task that draws problems: `sample_problems(n, seed)` is `n` problems, deterministic in `seed`."""

    def sample_problems(self, n: int, seed: int = 0) -> Sequence[P]: ...


def prompt_key(problem: Any) -> Hashable:
    """The default identity of a problem: its prompt."""
    return problem.prompt


def expression_key(problem: Any) -> Hashable:
    """An arithmetic problem's identity: its expression (the arithmetic demo's pools use it)."""
    return problem.expression


class ProblemPools(Mapping[str, list[P]], Generic[P]):
    """Named, pairwise disjoint pools of a task's problems: no problem (by `key`) is in two pools.

    One stream of problems is drawn from `task` (fixed chunks seeded from `seed`) and dealt out in the order of
    `sizes`: each pool takes the next problems of the stream whose key no earlier pool holds. A pool is therefore
    fixed by `seed`, its own size and the pools dealt before it (`spec` says exactly that, for cache keys), and
    does not change with the pools dealt after it.

    Pools take distinct problems, except those named in `repeats`, which keep the stream's repetitions (a training
    stream such as SFT data: its draws keep the task's distribution, minus the problems of the other pools). Deal
    small evaluation pools first and a large training pool last: the evaluation pools then keep the task's
    distribution, where after a large pool they would lack the problems it covered (the most frequent ones).

    Args:
        task: draws problems with `sample_problems(n, seed)`.
        sizes: pool name to number of problems, in dealing order.
        seed: seed of the stream.
        key: a problem's identity (defaults to its `prompt`).
        repeats: pools that may hold one problem several times.
        max_misses: consecutive draws that fill nothing after which the task counts as exhausted.

    Raises:
        ValueError: on a negative size, an unknown name in `repeats`, or when the task cannot supply enough
            distinct problems (naming the pool and the counts).

    Example:
        >>> from trl_pav.tasks import ArithmeticTask
        >>> pools = ProblemPools(ArithmeticTask(), {"eval": 50, "train": 200}, seed=0, repeats={"train"})
        >>> len(pools["eval"]), len(pools["train"])
        (50, 200)
        >>> pools.keys_of("eval").isdisjoint(pools.keys_of("train"))
        True
    """

    VERSION = 1  # bump when the dealing changes, so cache keys built from `spec` change with it
    CHUNK = 4096  # fixed, so the stream does not depend on the sizes asked for

    def __init__(
        self,
        task: ProblemSource[P],
        sizes: Mapping[str, int],
        seed: int = 0,
        key: Callable[[P], Hashable] = prompt_key,
        repeats: Collection[str] = (),
        max_misses: int = 50_000,
    ) -> None:
        for name, size in sizes.items():
            if not isinstance(size, int) or size < 0:
                raise ValueError(f"ProblemPools: pool {name!r} needs a size >= 0, got {size!r}")
        unknown = set(repeats) - set(sizes)
        if unknown:
            raise ValueError(f"ProblemPools: repeats names unknown pools {sorted(unknown)}; pools: {list(sizes)}")
        if max_misses < 1:
            raise ValueError(f"ProblemPools: max_misses must be >= 1, got {max_misses}")
        self.sizes, self.seed, self.repeats = dict(sizes), seed, frozenset(repeats)
        self._pools: dict[str, list[P]] = {}
        self._keys: dict[str, set[Hashable]] = {}
        taken: set[Hashable] = set()  # keys of every pool dealt so far
        stream = self._stream(task)
        self.draws = 0
        for name, size in self.sizes.items():
            pool, keys, misses = [], set(), 0
            while len(pool) < size:
                if misses >= max_misses:
                    raise ValueError(
                        f"ProblemPools: pool {name!r} got {len(pool)} of {size} problems: the task gave "
                        f"{len(taken | keys)} distinct problems in {self.draws} draws, and none of the last {misses} "
                        f"could go to it (pools asked for: {self.sizes})"
                    )
                problem = next(stream)
                self.draws += 1
                k = key(problem)
                if k in taken or (k in keys and name not in self.repeats):
                    misses += 1
                    continue
                misses = 0
                pool.append(problem)
                keys.add(k)
            taken |= keys
            self._pools[name], self._keys[name] = pool, keys

    @classmethod
    def from_spec(
        cls, task: ProblemSource[P], spec: Mapping[str, Any], key: Callable[[P], Hashable] = prompt_key
    ) -> ProblemPools[P]:
        """The pools that `spec` (from `spec()`, e.g. saved with a run) describes, dealt again from `task`.

        Raises:
            ValueError: if `spec` comes from another dealing version.

        Example:
            >>> from trl_pav.tasks import ArithmeticTask
            >>> pools = ProblemPools(ArithmeticTask(), {"a": 2, "b": 3}, seed=1)
            >>> ProblemPools.from_spec(ArithmeticTask(), pools.spec())["b"] == pools["b"]
            True
        """
        if spec.get("version") != cls.VERSION:
            raise ValueError(f"ProblemPools.from_spec: spec of version {spec.get('version')!r}, this is {cls.VERSION}")
        sizes = {name: size for name, size, _ in spec["pools"]}
        repeats = {name for name, _, rep in spec["pools"] if rep}
        return cls(task, sizes, seed=spec["seed"], key=key, repeats=repeats)

    def _stream(self, task: ProblemSource[P]) -> Iterator[P]:
        chunk = 0
        while True:
            # A seed per (stream seed, chunk) from a hash: streams of nearby seeds share no chunks.
            digest = hashlib.sha256(f"problem-pools:{self.seed}:{chunk}".encode()).digest()
            yield from task.sample_problems(self.CHUNK, seed=int.from_bytes(digest[:8], "big"))
            chunk += 1

    def __getitem__(self, name: str) -> list[P]:
        return self._pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def keys_of(self, name: str) -> set[Hashable]:
        """The distinct keys of pool `name`."""
        return set(self._keys[name])

    def spec(self, *names: str) -> dict:
        """What fixes the pools `names` (all pools if none): the dealing version, the seed and every pool dealt up
        to the last of them. JSON-able, for cache keys: a stage's key changes whenever its problems can.

        Example:
            >>> from trl_pav.tasks import ArithmeticTask
            >>> pools = ProblemPools(ArithmeticTask(), {"a": 2, "b": 3}, seed=1)
            >>> pools.spec("a")
            {'version': 1, 'seed': 1, 'pools': [['a', 2, False]]}
        """
        order = list(self.sizes)
        unknown = [n for n in names if n not in self.sizes]
        if unknown:
            raise KeyError(f"ProblemPools.spec: unknown pools {unknown}; pools: {order}")
        last = max((order.index(n) for n in names), default=len(order) - 1)
        dealt = [[n, self.sizes[n], n in self.repeats] for n in order[: last + 1]]
        return {"version": self.VERSION, "seed": self.seed, "pools": dealt}
