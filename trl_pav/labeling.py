"""Monte-Carlo step labeling: estimate `Q^π` after each step of seed traces by rolling out completions.

For each problem the labeler samples `n_cov` seed traces from the base policy π, then for each chosen prefix samples
`n_mc` completions from the rollout policy (π itself for Best-of-K provers, whose values follow from the BoK transform
at no extra cost; another policy otherwise) and grades them; the fraction correct is the label.

All work of a shard of problems is batched together: seed traces, root rollouts, then rounds of prefix probes across
every trace (one round for `strategy="all"`, a few for the first-pit binary search). Every rollout's seed is derived
from (run seed, problem, prefix text, rollout index), so identical prefixes of different seed traces share their
rollouts, and results do not depend on batching, shard order, resumption or the number of processes.

The rollouts of one prefix are asked for as ONE request group (`GenerationGroup`, `n` samples under the group seed
`mix_seed(run seed, problem, stage, prefix id)`): vLLM answers it with one `SamplingParams(n=n, seed=...)` request
(one prefill), and every other policy gets `n` single requests seeded `member_seed(group seed, r)`, which is exactly
the per-rollout seed `mix_seed(run seed, problem, stage, prefix id, r)` of earlier versions, so their labels are
unchanged. A group extending a prefix's rollouts (pit confirmation) starts at `first = rollouts so far`. The seed traces
of a problem are one group too.

Grading overlaps generation: a finished chunk of rollouts (one batch of the policy's `batch_size`) is graded in a
background thread while the next chunk generates, and root rollouts are graded while the prefix probes run. Grades are
collected in request order, so the results are those of serial grading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, load_from_disk

from .data import validate_stepwise
from .distributed import process_state
from .generation.base import (
    Generation,
    GenerationGroup,
    Policy,
    describe,
    generate_groups,
    mix_seed,
    policy_fingerprint,
)
from .grading import SUCCESS_THRESHOLD, Grader, checked_grades, grade_batch
from .values import best_of_k, best_of_k_unbiased

__all__ = [
    "LabelingConfigMismatch",
    "MCLabelConfig",
    "MCLabeler",
    "labeling_settings",
    "load_labels",
    "prover_labels",
    "validate_problems",
]

logger = logging.getLogger(__name__)

# Seed streams: seed traces, and rollouts from a prefix (the root is the empty prefix).
_SEED_STAGE, _PREFIX_STAGE = 0, 2


@dataclass
class MCLabelConfig:
    """Configuration of Monte-Carlo step labeling.

    Args:
        n_cov (`int`, defaults to `4`):
            Seed traces sampled from the base policy per problem (coverage).
        n_mc (`int`, defaults to `20`):
            Rollouts per labeled prefix (the paper's value); the label is the fraction that succeed.
        strategy (`str`, defaults to `"first_pit"`):
            Which prefixes get rollouts. `"all"`: every step. `"first_pit"` (the paper's): on failed traces, binary
            search for the first step after which success drops to `pit_threshold` or below and label the steps up
            to it; steps after the pit get no label (`None`: masked, no loss), as the paper leaves them out of
            training. Successful traces get every step labeled.
        prover (`str`, defaults to `"bok"`):
            `"bok"`: the prover is Best-of-K of the base policy; rollouts come from the base policy and `labels` are
            `Q̂^π` (`prover_labels` holds the BoK transform). `"policy"`: rollouts come from a separate prover policy
            and `labels` are that policy's `Q̂^μ`.
        prover_k (`int`, defaults to `4`):
            K of the Best-of-K prover (the paper's headline is Bo4). Recorded with `prover="policy"` but unused.
        pit_threshold (`float`, defaults to `0.0`):
            A prefix whose estimated success is at most this is a pit.
        pit_confirm_rollouts (`int`, defaults to `0`):
            Extra rollouts spent on a prefix that looks like a pit before it is accepted as one. With small `n_mc`
            a prefix with true value 0.2 shows 0/8 successes 17% of the time; confirming with more rollouts makes
            false pits rarer. The label of a confirmed prefix pools all its rollouts.
        seed (`int`, defaults to `0`):
            Run seed; every rollout's seed derives from it.
        shard_size (`int`, defaults to `16`):
            Problems per shard. A finished shard is on disk for good; a killed run loses at most the shard in flight.
        overwrite (`bool`, defaults to `False`):
            Discard existing shards written with a different configuration instead of refusing to run.
        prompt_column (`str`, defaults to `"prompt"`): column of the problems holding the rendered prompt.
        gold_column (`str`, defaults to `"gold"`): column holding the gold answer.
        show_progress (`bool`, defaults to `True`): show a progress bar with rollouts per second.
        grade_in_background (`bool`, defaults to `True`):
            Grade finished rollouts in a background thread while the next batch generates (results are the same
            either way). Turn it off for a grader that must run in the main thread (one using `signal.alarm`).
    """

    n_cov: int = field(default=4, metadata={"help": "Seed traces sampled from the base policy per problem."})
    n_mc: int = field(default=20, metadata={"help": "Rollouts per labeled prefix; the label is the success fraction."})
    strategy: Literal["all", "first_pit"] = field(
        default="first_pit", metadata={"help": "Prefixes given rollouts: 'all' steps, or 'first_pit' (the paper's)."}
    )
    prover: Literal["bok", "policy"] = field(
        default="bok", metadata={"help": "'bok': Best-of-K of the base policy; 'policy': a separate prover policy."}
    )
    prover_k: int = field(default=4, metadata={"help": "K of the Best-of-K prover (the paper's headline is 4)."})
    pit_threshold: float = field(default=0.0, metadata={"help": "A prefix with success at most this is a pit."})
    pit_confirm_rollouts: int = field(
        default=0, metadata={"help": "Extra rollouts that confirm a candidate pit before it counts as one."}
    )
    seed: int = field(default=0, metadata={"help": "Run seed; every rollout's seed derives from it."})
    shard_size: int = field(default=16, metadata={"help": "Problems per shard (the unit of resumption)."})
    overwrite: bool = field(
        default=False, metadata={"help": "Discard shards from a different configuration instead of refusing."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the rendered prompt."})
    gold_column: str = field(default="gold", metadata={"help": "Column holding the gold answer."})
    show_progress: bool = field(default=True, metadata={"help": "Show a progress bar with rollouts per second."})
    grade_in_background: bool = field(
        default=True, metadata={"help": "Grade finished rollouts in a thread while the next batch generates."}
    )

    def __post_init__(self) -> None:
        if self.n_cov < 1:
            raise ValueError(f"n_cov must be >= 1, got {self.n_cov}")
        if self.n_mc < 1:
            raise ValueError(f"n_mc must be >= 1, got {self.n_mc}")
        if self.strategy not in ("all", "first_pit"):
            raise ValueError(f"strategy must be 'all' or 'first_pit', got {self.strategy!r}")
        if self.prover not in ("bok", "policy"):
            raise ValueError(f"unknown prover {self.prover!r}: use 'bok' (Best-of-K of the base policy) or 'policy'")
        if self.prover_k < 1:
            raise ValueError(f"prover_k must be >= 1, got {self.prover_k}")
        if not 0.0 <= self.pit_threshold < 1.0:
            raise ValueError(f"pit_threshold must be in [0, 1), got {self.pit_threshold}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.pit_confirm_rollouts < 0:
            raise ValueError(f"pit_confirm_rollouts must be >= 0, got {self.pit_confirm_rollouts}")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The fields that change results (not progress display, overwrite or column names)."""
        keep = (
            "n_cov",
            "n_mc",
            "strategy",
            "prover",
            "prover_k",
            "pit_threshold",
            "pit_confirm_rollouts",
            "seed",
            "shard_size",
        )
        return {k: getattr(self, k) for k in keep}


class LabelingConfigMismatch(RuntimeError):
    """An output folder holds shards written with a different configuration."""


def validate_problems(
    problems: Dataset | Sequence[dict],
    prompt_column: str = "prompt",
    gold_column: str = "gold",
    needs_gold: bool = True,
) -> list[dict]:
    """Check problems before any generation (call it before loading a large model) and return them as row dicts.

    Every prompt must be a string with non-whitespace text; every gold answer a string, non-empty unless the grader
    ignores it (`needs_gold=False`, as the planted task's). One error lists every bad problem.

    Raises:
        ValueError: naming each bad problem (index, field, value).

    Example:
        >>> validate_problems([{"prompt": "Q:1+1?\\n", "gold": " "}])
        Traceback (most recent call last):
        ...
        ValueError: 1 bad problem(s) of 1:
          - problem 0: gold answer 'gold' is empty or whitespace-only (every label would be 0)
    """
    rows = problems.to_list() if isinstance(problems, Dataset) else list(problems)
    if not rows:
        raise ValueError("the problems list is empty")
    bad = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            bad.append(f"problem {i}: must be a dict with {prompt_column!r} and {gold_column!r}, got {row!r:.60}")
            continue
        prompt, gold = row.get(prompt_column), row.get(gold_column)
        if not isinstance(prompt, str) or not prompt.strip():
            bad.append(
                f"problem {i}: field {prompt_column!r} must be a non-empty string (not whitespace only), "
                f"got {prompt!r:.60}"
            )
        if gold is None:
            bad.append(f"problem {i}: no gold answer (field {gold_column!r} is missing or None)")
        elif not isinstance(gold, str):
            bad.append(f"problem {i}: gold answer {gold_column!r} must be a string, got {type(gold).__name__}")
        elif needs_gold and not gold.strip():
            bad.append(f"problem {i}: gold answer {gold_column!r} is empty or whitespace-only (every label would be 0)")
    if bad:
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(
            f"{len(bad)} bad problem(s) of {len(rows)}:\n" + "\n".join(f"  - {b}" for b in bad[:20]) + more
        )
    return rows


@dataclass
class _Trace:
    """One seed trace and what is known of its prefix values.

    `counts[h]` is `(successes, rollouts)` measured from the prefix of the first h steps. A finished trace's whole
    prefix is known exactly from its grade; an unfinished one (cut at the token limit, its trailing piece dropped)
    is measured like any other prefix.
    """

    problem: int
    index: int
    steps: list[str]
    outcome: float
    finished: bool
    strategy: str
    pit_threshold: float
    n_mc: int
    confirm: int
    counts: dict[int, tuple[int, int]] = field(default_factory=dict)
    lo: int = 0
    hi: int = 0

    def __post_init__(self) -> None:
        self.hi = len(self.steps)

    @property
    def failed(self) -> bool:
        return self.outcome < 1.0

    def value(self, h: int) -> float:
        if h == len(self.steps) and self.finished:
            return self.outcome
        c, n = self.counts[h]
        return c / n

    def _needs(self, h: int) -> tuple[int, int] | None:
        """`(h, extra rollouts)` still owed to prefix h before its value can be used, or None."""
        if h == len(self.steps) and self.finished:
            return None
        if h not in self.counts:
            return (h, self.n_mc)
        _, n = self.counts[h]
        if self.confirm and n == self.n_mc and self.value(h) <= self.pit_threshold:
            return (h, self.confirm)  # a pit candidate: confirm it before trusting it
        return None

    def _searching(self) -> bool:
        return self.strategy == "first_pit" and self.failed

    def pending(self) -> list[tuple[int, int]]:
        """`(prefix length, rollouts)` to measure next; empty when done."""
        last = len(self.steps)
        if not self._searching():
            return [r for h in range(1, last + 1) if (r := self._needs(h)) is not None and r[1] == self.n_mc]
        if not self.finished:  # the last complete step is no pit unless measured so
            need = self._needs(last)
            if need is not None:
                return [need]
            if self.value(last) > self.pit_threshold:
                self.hi = last + 1  # no pit anywhere: label every step
                return [r for h in range(1, last + 1) if (r := self._needs(h)) is not None and r[1] == self.n_mc]
        while self.hi - self.lo > 1:  # binary search for the first pit in (lo, hi]; hi is a pit
            mid = (self.lo + self.hi) // 2
            need = self._needs(mid)
            if need is not None:
                return [need]
            if self.value(mid) <= self.pit_threshold:
                self.hi = mid
            else:
                self.lo = mid
        return [r for h in range(1, min(self.hi, last + 1)) if (r := self._needs(h)) is not None and r[1] == self.n_mc]

    def labels(self) -> tuple[list[float | None], list[int], list[int | None]]:
        """Label, rollout count and success count of every step; steps after the first pit have no label."""
        labels: list[float | None] = []
        rollouts: list[int] = []
        successes: list[int | None] = []
        last = len(self.steps)
        pit = self.hi if self._searching() else last + 1
        for h in range(1, last + 1):
            if h == last and self.finished:
                labels.append(self.outcome)
                rollouts.append(0)
                successes.append(None)
            elif h in self.counts:  # measured (binary-search probes past the pit included)
                c, n = self.counts[h]
                labels.append(c / n)
                rollouts.append(n)
                successes.append(c)
            elif h > pit:
                labels.append(None)  # past the first pit and never measured: left out of training
                rollouts.append(0)
                successes.append(None)
            else:  # pragma: no cover - every other step is measured
                raise AssertionError(f"step {h} of trace {self.index} was never labeled")
        return labels, rollouts, successes

    def first_pit(self) -> int:
        """0-based index of the first step judged a pit, or -1 (no pit found, or strategy `all`)."""
        if not self._searching() or self.hi > len(self.steps):
            return -1
        return self.hi - 1


class _Grading:
    """Grades batches in one background thread (or at once, when `background` is off), in submission order."""

    def __init__(self, grader: Grader, background: bool = True):
        self.grader = grader
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mc-grading") if background else None

    def submit(self, completions: list[str], golds: list[str]) -> Future:
        if self._pool is not None:
            return self._pool.submit(self._grade, completions, golds)
        future: Future = Future()
        future.set_result(self._grade(completions, golds))
        return future

    def _grade(self, completions: list[str], golds: list[str]) -> list[float]:
        return checked_grades(grade_batch(self.grader, completions, golds), completions)

    def __enter__(self) -> _Grading:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            # On an error, queued batches are dropped; the one being graded finishes before the error goes on.
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


class _Grades:
    """The grades of one group: a slice of its chunk's grading."""

    def __init__(self, future: Future, start: int, stop: int):
        self.future, self.start, self.stop = future, start, stop

    def result(self) -> list[float]:
        return self.future.result()[self.start : self.stop]


class _Count:
    """`(successes, rollouts)` of one group, once graded."""

    def __init__(self, grades: _Grades):
        self.grades = grades

    def result(self) -> tuple[int, int]:
        values = self.grades.result()
        return sum(v >= SUCCESS_THRESHOLD for v in values), len(values)


class MCLabeler:
    """Labels seed traces of a base policy with Monte-Carlo success estimates.

    Args:
        policy: the base policy π (seed traces, and rollouts for Best-of-K provers).
        grader: grades a complete trace against the gold answer.
        config: an `MCLabelConfig`.
        prover_policy: the rollout policy when `config.prover == "policy"`.

    Example:
        >>> from trl_pav.tasks import PlantedTask, PlantedProverPolicy
        >>> task = PlantedTask()
        >>> labeler = MCLabeler(PlantedProverPolicy(task, 5.0), task.grader,
        ...                     MCLabelConfig(n_cov=1, n_mc=4, strategy="all", show_progress=False))
        >>> ds = labeler.label(task.problems_dataset(2))
        >>> len(ds), len(ds[0]["labels"]) == len(ds[0]["completions"]) == 10
        (2, True)
    """

    def __init__(self, policy: Policy, grader: Grader, config: MCLabelConfig | None = None, prover_policy=None):
        self.config = config or MCLabelConfig()
        if self.config.prover == "policy" and prover_policy is None:
            raise ValueError("MCLabelConfig.prover='policy' needs a prover_policy")
        if self.config.prover == "bok" and prover_policy is not None:
            raise ValueError("a prover_policy was given but MCLabelConfig.prover='bok'; set prover='policy' to use it")
        self.policy, self.grader = policy, grader
        self.rollout_policy = prover_policy if prover_policy is not None else policy
        self.step_format = policy.step_format
        self.prover_name = f"bo{self.config.prover_k}" if self.config.prover == "bok" else prover_policy.name
        self.last_metadata: dict = {}  # budget and counts of the latest `label` call

    # ---- public API ------------------------------------------------------------------------------------------------
    def label(self, problems: Dataset | Sequence[dict], output_dir: str | os.PathLike | None = None) -> Dataset:
        """Label `problems` (rows with a prompt and a gold answer) and return the stepwise dataset.

        With `output_dir`, work is written in shards there and a re-run resumes from the finished shards; the
        dataset is also saved (`load_labels(output_dir)` reads it back) with `metadata.json` holding the budget.
        Under `accelerate launch`, processes split the shards and the main process assembles the result.
        """
        rows = self._check_problems(problems)
        shards = [
            list(range(s, min(s + self.config.shard_size, len(rows))))
            for s in range(0, len(rows), self.config.shard_size)
        ]
        start = time.time()
        if output_dir is None:
            with _progress(self.config, sum(len(s) for s in shards)) as bar:
                results = [self._label_shard(rows, idx, bar) for idx in shards]
            dataset, self.last_metadata = self._assemble(results, time.time() - start)
            return dataset
        return self._label_to_disk(rows, shards, Path(output_dir), start)

    # ---- input checks ----------------------------------------------------------------------------------------------
    def _check_problems(self, problems: Dataset | Sequence[dict]) -> list[dict]:
        cfg = self.config
        return validate_problems(problems, cfg.prompt_column, cfg.gold_column, getattr(self.grader, "needs_gold", True))

    # ---- one shard -------------------------------------------------------------------------------------------------
    def _label_shard(self, rows: list[dict], indices: list[int], progress=None) -> dict:
        with _Grading(self.grader, self.config.grade_in_background) as grading:
            return self._label_shard_with(rows, indices, grading, progress)

    def _label_shard_with(self, rows: list[dict], indices: list[int], grading: _Grading, progress=None) -> dict:
        cfg, seed = self.config, self.config.seed
        pc, gc = cfg.prompt_column, cfg.gold_column
        stats = {"rollouts": 0, "generated_tokens": 0, "seed_traces": 0, "empty_traces": 0, "prefix_cache_hits": 0}
        start = time.perf_counter()
        # Seed traces from the base policy (one group of n_cov per problem; trace j seeded mix_seed(seed, i, 0, j)),
        # then root rollouts from the rollout policy, graded while the prefix probes run.
        seed_groups = [GenerationGroup(rows[i][pc], (), mix_seed(seed, i, _SEED_STAGE), cfg.n_cov) for i in indices]
        seed_gens, seed_grades = self._sample(self.policy, seed_groups, [rows[i][gc] for i in indices], grading)
        root_counts = self._estimate(rows, [((i, ()), 0, cfg.n_mc) for i in indices], stats, progress, grading)
        seeds = [g for gens in seed_gens for g in gens]
        outcomes = [float(v >= SUCCESS_THRESHOLD) for grades in seed_grades for v in grades.result()]
        stats["generated_tokens"] += sum(g.num_tokens for g in seeds)
        stats["seed_traces"] += len(seeds)
        traces: list[_Trace] = []
        for k, gen in enumerate(seeds):
            i, j = indices[k // cfg.n_cov], k % cfg.n_cov
            # The trailing piece of a trace cut at the token limit is not a step.
            steps = list(gen.steps) if gen.finished else list(gen.steps[:-1])
            if not steps:
                stats["empty_traces"] += 1
                continue
            outcome = outcomes[k]
            traces.append(
                _Trace(
                    i,
                    j,
                    steps,
                    outcome,
                    gen.finished,
                    cfg.strategy,
                    cfg.pit_threshold,
                    cfg.n_mc,
                    cfg.pit_confirm_rollouts,
                )
            )
        # Rounds of probes over every trace; identical prefixes of one problem share their rollouts.
        cache: dict[tuple[int, tuple[str, ...]], tuple[int, int]] = {}
        while True:
            wanted = [(t, h, n) for t in traces for h, n in t.pending()]
            if not wanted:
                break
            todo: dict[tuple[int, tuple[str, ...]], int] = {}
            for t, h, n in wanted:
                key = (t.problem, tuple(t.steps[:h]))
                have = cache.get(key, (0, 0))[1]
                target = (t.counts[h][1] if h in t.counts else 0) + n
                if have < target:
                    todo[key] = max(todo.get(key, have), target)
            stats["prefix_cache_hits"] += len(wanted) - len(todo)
            jobs = [(key, cache.get(key, (0, 0))[1], target) for key, target in todo.items()]
            counts = self._estimate(rows, jobs, stats, progress, grading)
            for (key, _, _), count in zip(jobs, counts):
                c, n = count.result()
                old = cache.get(key, (0, 0))
                cache[key] = (old[0] + c, old[1] + n)
            for t, h, _ in wanted:
                t.counts[h] = cache[(t.problem, tuple(t.steps[:h]))]
        root_values = {i: count.result() for i, count in zip(indices, root_counts)}
        out_rows = []
        for t in traces:
            labels, counts, successes = t.labels()
            row = rows[t.problem]
            extra = {k: v for k, v in row.items() if k not in (pc, gc)}
            out_rows.append(
                {
                    **extra,
                    "prompt": row[pc],
                    "completions": t.steps,
                    "labels": labels,
                    "label_rollouts": counts,
                    "label_successes": successes,
                    "root_value": root_values[t.problem][0] / cfg.n_mc,
                    "root_successes": root_values[t.problem][0],
                    "seed_outcome": t.outcome,
                    "seed_finished": t.finished,
                    "first_pit": t.first_pit(),
                    "gold": row[gc],
                    "problem_index": t.problem,
                    "trace_index": t.index,
                }
            )
        stats["label_seconds"] = round(time.perf_counter() - start, 3)  # kept with the shard: a resumed run sums all
        return {"shard": indices[0] // cfg.shard_size, "rows": out_rows, "stats": stats}

    def _estimate(
        self,
        rows: list[dict],
        jobs: list[tuple[tuple[int, tuple[str, ...]], int, int]],
        stats: dict,
        progress,
        grading: _Grading,
    ) -> list[_Count]:
        """`(successes, rollouts)` of rollouts `start..stop-1` from each `((problem, prefix), start, stop)`, as
        handles that wait for their grades.

        Each job is one request group seeded by (run seed, problem, prefix); rollout r of a prefix always has the
        same seed, so extra rollouts (pit confirmation, `start > 0`) extend the first ones.
        """
        cfg = self.config
        groups = [
            GenerationGroup(
                rows[i][cfg.prompt_column],
                prefix,
                mix_seed(cfg.seed, i, _PREFIX_STAGE, zlib.crc32(self.step_format.separator.join(prefix).encode())),
                n=stop - first,
                first=first,
            )
            for (i, prefix), first, stop in jobs
        ]
        gens, grades = self._sample(
            self.rollout_policy, groups, [rows[i][cfg.gold_column] for (i, _), _, _ in jobs], grading, progress
        )
        stats["rollouts"] += sum(len(g) for g in gens)
        stats["generated_tokens"] += sum(x.num_tokens for g in gens for x in g)
        return [_Count(g) for g in grades]

    def _sample(
        self, policy: Policy, groups: list[GenerationGroup], golds: list[str], grading: _Grading, progress=None
    ) -> tuple[list[list[Generation]], list[_Grades]]:
        """Every group's generations, and a handle on each group's grades (its prefix and new steps joined, against
        its gold answer).

        Groups go to the policy in chunks of about one of its batches (`batch_size`, when it has one), the shortest
        prefixes first; each chunk is queued for grading as soon as it is generated, so grading runs while the
        next chunk generates. Samples have their own seeds, so the chunking changes no result.
        """
        sep = self.step_format.separator
        chunk_rows = getattr(policy, "batch_size", None)
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            chunk_rows = sum(g.n for g in groups)
        order = sorted(range(len(groups)), key=lambda k: len(groups[k].prompt) + len(sep.join(groups[k].steps)))
        gens: list[list[Generation]] = [[] for _ in groups]
        grades: list[_Grades | None] = [None] * len(groups)
        chunks: list[list[int]] = []
        size = chunk_rows
        for k in order:
            if size >= chunk_rows:
                chunks.append([])
                size = 0
            chunks[-1].append(k)
            size += groups[k].n
        for chunk in chunks:
            out = generate_groups(policy, [groups[k] for k in chunk])
            texts, chunk_golds, spans = [], [], []
            for k, samples in zip(chunk, out):
                gens[k] = samples
                spans.append((k, len(texts), len(texts) + len(samples)))
                texts += [sep.join([*groups[k].steps, *g.steps]) for g in samples]
                chunk_golds += [golds[k]] * len(samples)
            future = grading.submit(texts, chunk_golds)
            for k, a, b in spans:
                grades[k] = _Grades(future, a, b)
            if progress is not None:
                progress.update(len(texts))
        return gens, grades  # type: ignore[return-value]

    # ---- assembling and disk ---------------------------------------------------------------------------------------
    def _assemble(self, results: list[dict], seconds: float) -> tuple[Dataset, dict]:
        rows = [r for res in sorted(results, key=lambda r: r["shard"]) for r in res["rows"]]
        totals: dict[str, float] = {}
        for res in results:
            for k, v in res["stats"].items():
                totals[k] = totals.get(k, 0) + v
        if not rows:
            raise RuntimeError(
                f"policy {self.policy.name!r} produced no steps in any of {int(totals.get('seed_traces', 0))} seed "
                "traces: nothing to label (check its stop tokens, max_new_tokens and step separator)"
            )
        k = self.config.prover_k if self.config.prover == "bok" else 1
        for r in rows:
            r["prover_labels"] = prover_labels(r["labels"], r["label_successes"], r["label_rollouts"], k)
            r["prover"] = self.prover_name
            r["policy"] = self.policy.name
            r["target"] = "q_pi" if self.config.prover == "bok" else "q_mu"
        dataset = validate_stepwise(rows)
        metadata = {
            "config": asdict(self.config),
            "policy": self.policy.name,
            "prover": self.prover_name,
            "rollout_policy": self.rollout_policy.name,
            "num_problems": len({r["problem_index"] for r in rows}),
            "num_traces": len(rows),
            "num_labels": sum(len(r["labels"]) for r in rows),
            "wall_seconds": round(seconds, 3),
            # Completions whose grading overran the grader's time limit (counted wrong), in this process and session.
            "grading_timeouts": int(getattr(self.grader, "timeouts", 0)),
            **totals,
        }
        return dataset, metadata

    def _fingerprint(self, rows: list[dict], settings: dict) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for r in rows:
            h.update(f"{r[self.config.prompt_column]}\x00{r[self.config.gold_column]}\x01".encode())
        return h.hexdigest()[:16]

    def _label_to_disk(self, rows: list[dict], shards: list[list[int]], out: Path, start: float) -> Dataset:
        state = process_state()
        shard_dir = out / "shards"
        manifest_path = out / "manifest.json"
        settings = labeling_settings(self)
        fingerprint = self._fingerprint(rows, settings)
        if state.is_main_process:
            self._prepare_output(out, manifest_path, shard_dir, fingerprint, settings, len(rows), len(shards))
        state.wait_for_everyone()
        mine = [s for k, s in enumerate(shards) if k % state.num_processes == state.process_index]
        todo = [s for s in mine if _read_shard(shard_dir, s[0] // self.config.shard_size, s, redo=True) is None]
        with _progress(self.config, sum(len(s) for s in todo), enabled=state.is_local_main_process) as bar:
            for indices in todo:
                result = self._label_shard(rows, indices, bar)
                _atomic_write_json(shard_dir / f"shard-{result['shard']:05d}.json", result)
        state.wait_for_everyone()
        results = [_read_shard(shard_dir, k, s) for k, s in enumerate(shards)]
        missing = [f"shard-{k:05d}.json" for k, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{shard_dir}: shard(s) {missing[:10]} missing or unreadable after labeling; re-run")
        dataset, metadata = self._assemble(results, time.time() - start)
        self.last_metadata = metadata
        if state.is_main_process:
            metadata["fingerprint"] = fingerprint
            metadata["shards_found_finished"] = len(mine) - len(todo)
            metadata["num_processes"] = state.num_processes
            tmp = out / "dataset.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            dataset.save_to_disk(str(tmp))
            shutil.rmtree(out / "dataset", ignore_errors=True)
            os.replace(tmp, out / "dataset")
            _atomic_write_json(out / "metadata.json", metadata)
        state.wait_for_everyone()
        return dataset

    def _prepare_output(
        self, out: Path, manifest_path: Path, shard_dir: Path, fingerprint: str, settings: dict, n: int, n_shards: int
    ) -> None:
        if manifest_path.exists():
            try:
                old = json.loads(manifest_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise LabelingConfigMismatch(
                    f"{manifest_path} is unreadable ({err}); delete it (and {shard_dir}) or set overwrite=True"
                ) from err
            if old.get("fingerprint") != fingerprint:
                if not self.config.overwrite:
                    changed = _changed_settings(old.get("settings", {}), settings)
                    raise LabelingConfigMismatch(
                        f"{out} holds shards from a different labeling run (fingerprint {old.get('fingerprint')}, "
                        f"this run {fingerprint}; changed: {changed or 'the problems'}). Use another output_dir, or "
                        "set overwrite=True to discard them."
                    )
                shutil.rmtree(shard_dir, ignore_errors=True)
        shard_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "fingerprint": fingerprint,
            "settings": settings,
            "config": self.config.fingerprint_fields(),
            "policy": self.policy.name,
            "rollout_policy": self.rollout_policy.name,
            "num_problems": n,
            "num_shards": n_shards,
        }
        _atomic_write_json(manifest_path, manifest)


def prover_labels(
    labels: Sequence[float | None], successes: Sequence[int | None], rollouts: Sequence[int], k: int
) -> list[float | None]:
    """Best-of-K prover values of a trace's step labels.

    Measured steps use the unbiased estimator `1 - C(n-c, K)/C(n, K)` from their success counts when K <= n (the
    plug-in `1 - (1 - c/n)^K` is biased low); exact labels (a finished trace's grade) and K > n use the transform.
    Unlabeled steps stay `None`.

    Example:
        >>> prover_labels([0.25, None, 1.0], [1, None, None], [4, 0, 0], 2)
        [0.5, None, 1.0]
    """
    out: list[float | None] = []
    for label, c, n in zip(labels, successes, rollouts):
        if label is None:
            out.append(None)
        elif c is not None and n and k <= n:
            out.append(float(best_of_k_unbiased(torch.tensor(c), n, k)))
        else:
            out.append(float(best_of_k(torch.tensor(float(label), dtype=torch.float64), k)))
    return out


def labeling_settings(labeler: MCLabeler) -> dict:
    """Every setting that changes a labeling run's results, as recorded in its manifest and fingerprint: the
    labeling config, both policies (sampling settings and a hash of their weights, see `policy_fingerprint`), the
    grader's settings and the step format."""
    return {
        "config": labeler.config.fingerprint_fields(),
        "policy": policy_fingerprint(labeler.policy),
        "rollout_policy": policy_fingerprint(labeler.rollout_policy),
        "grader": describe(labeler.grader),
        "step_format": labeler.step_format.to_dict(),
    }


def _changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two `labeling_settings` dicts, with both values."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r:.40} -> {b!r:.40}")
    return changed


def _read_shard(shard_dir: Path, k: int, indices: list[int], redo: bool = False) -> dict | None:
    """Shard `k` if its file holds a finished shard of exactly these problems, else None.

    With `redo`, an unreadable file (a disk that lost a write, an empty or truncated file) is named in a warning and
    removed, so the shard is labeled again instead of failing the whole run.
    """
    path = shard_dir / f"shard-{k:05d}.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
        ok = (
            isinstance(result, dict)
            and result.get("shard") == k
            and isinstance(result.get("rows"), list)
            and isinstance(result.get("stats"), dict)
            and all(isinstance(r, dict) and r.get("problem_index") in indices for r in result["rows"])
        )
        problem = None if ok else "it does not hold this shard's problems"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        result, problem = None, f"it is not valid JSON ({err})"
    if problem is None:
        return result
    if not redo:
        raise RuntimeError(f"labeling shard {path} is unreadable: {problem}; delete it and re-run to redo it")
    logger.warning(f"labeling shard {path} is unreadable ({problem}); labeling its problems again")
    path.unlink()
    return None


def _progress(config: MCLabelConfig, n_problems: int, enabled: bool = True):
    """A rollouts progress bar (its total is an estimate: the first-pit search decides the real count as it goes)."""
    from tqdm.auto import tqdm

    expected = n_problems * config.n_mc * (1 + config.n_cov * 3)
    return tqdm(total=expected, unit="rollout", desc="MC labeling", disable=not (config.show_progress and enabled))


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def load_labels(output_dir: str | os.PathLike) -> tuple[Dataset, dict]:
    """The dataset and metadata of a finished labeling run written by `MCLabeler.label(..., output_dir)`."""
    out = Path(output_dir)
    if not (out / "dataset").exists():
        raise FileNotFoundError(f"{out} has no finished labeling output (no 'dataset' folder)")
    return load_from_disk(str(out / "dataset")), json.loads((out / "metadata.json").read_text())
