"""Evaluation runner: methods x budgets on a problem set, accuracy and compute per (method, N), and plots."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..generation.base import Policy
from ..grading import SUCCESS_THRESHOLD, Grader, extract_answer
from ..metrics import bootstrap_interval, curve_is_monotone
from ..modeling import StepScorer
from .base import ComputeLedger, SearchResult
from .beam_search import BeamSearchConfig, beam_search, check_search_numbers
from .best_of_n import best_of_n, majority_vote, pass_at_n, sample_candidates, weighted_majority
from .reuse import ReusingPolicy, ReusingScorer

__all__ = [
    "METHODS",
    "SearchEvalConfig",
    "compare_curves",
    "compare_to_baselines",
    "compute_of",
    "evaluate_search",
    "merge_search_results",
    "plot_search_results",
    "summarize_curve",
]

METHODS = (
    "pav_beam",
    "q_beam",
    "orm_bon",
    "pav_bon",
    "majority",
    "weighted_majority",
    "random_pick",
    "pass_at_n",
)
_BEST_OF_N = ("orm_bon", "pav_bon", "majority", "weighted_majority", "random_pick", "pass_at_n")


@dataclass
class SearchEvalConfig:
    """Which methods to run at which budgets.

    Args:
        methods (`list[str]`): any of `pav_beam` (beam search on `Q̂ + α·Â`), `q_beam` (α = 0), `orm_bon` (best-of-N
            with the ORM), `pav_bon` (best-of-N with the PAV's final value), `majority`, `weighted_majority` (PAV
            values), `random_pick` (expected accuracy of one of the N samples picked uniformly: the candidates' mean
            accuracy, the floor any selection should beat), `pass_at_n` (oracle ceiling).
        budgets (`list[int]`, defaults to `[3, 6, 12, 24]`): N per prompt (children per step for beam search,
            samples for best-of-N).
        expansions (`int`, defaults to `3`): C for beam search.
        alpha (`float`, defaults to `0.5`): α of PAV beam search.
        prover_k (`float`, defaults to `4`): prover K of PAV beam search.
        max_depth (`int`, defaults to `16`): step limit of beam search.
        seed (`int`, defaults to `0`): sampling seed.
        merge_duplicates (`bool`, defaults to `False`): beam search keeps one beam per distinct child (see
            `BeamSearchConfig.merge_duplicates`).
        truncated_step (`str`, defaults to `"drop"`): what beam search does with a child cut at the step token limit:
            `"drop"` it or `"keep"` the cut text as a step (`BeamSearchConfig.truncated_step`). Each record counts
            them (`truncated_dropped`, `truncated_kept`).
        reuse_samples (`bool`, defaults to `False`): generate and score each distinct seeded request once across
            methods and budgets; every method is still charged its own compute. One process only.
    """

    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": f"Methods to run, any of {', '.join(METHODS)}."}
    )
    budgets: list[int] = field(
        default_factory=lambda: [3, 6, 12, 24], metadata={"help": "N per prompt (beam children per step, or samples)."}
    )
    expansions: int = field(default=3, metadata={"help": "C, next steps sampled per beam."})
    alpha: float = field(default=0.5, metadata={"help": "α of PAV beam search (0: Q-only)."})
    prover_k: float = field(default=4, metadata={"help": "Prover K of PAV beam search."})
    max_depth: int = field(default=16, metadata={"help": "Most steps per trace in beam search."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    merge_duplicates: bool = field(
        default=False, metadata={"help": "Beam search keeps one beam per distinct child (paper: no merging)."}
    )
    truncated_step: Literal["drop", "keep"] = field(
        default="drop",
        metadata={"help": "Beam search child cut at max_step_tokens: 'drop' it, or 'keep' the cut text as a step."},
    )
    reuse_samples: bool = field(
        default=False,
        metadata={
            "help": "Generate and score each distinct seeded request once across methods and budgets "
            "(`ReusingPolicy`, `ReusingScorer`); every method is still charged its own compute. One process only."
        },
    )

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown search methods {sorted(unknown)}; known: {list(METHODS)}")
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"budgets must be positive integers, got {self.budgets}")
        check_search_numbers(self.alpha, self.prover_k, self.expansions, self.max_depth, self.truncated_step)
        beams = [m for m in self.methods if m.endswith("beam")]
        if beams and min(self.budgets) < self.expansions:
            raise ValueError(
                f"budget {min(self.budgets)} is below expansions={self.expansions}: beam search ({', '.join(beams)}) "
                "samples C = expansions children per beam, so every budget N must be >= C"
            )


def evaluate_search(
    policy: Policy,
    prompts: Sequence[str],
    golds: Sequence[str],
    grader: Grader,
    config: SearchEvalConfig | None = None,
    pav: StepScorer | None = None,
    orm: StepScorer | None = None,
    answer_fn: Callable[[list[str]], str | None] | None = None,
    show_progress: bool = True,
    prompt_ids: Sequence[int] | None = None,
) -> dict:
    """Run every method at every budget; return `{"methods": {method: [record per N]}, "problem_ids": [...], ...}`.

    Each record holds `n`, `accuracy`, `correct`, `per_problem_correct` (one value per problem, in the order of
    `problem_ids`: 0/1 for a pick, the fraction of correct samples for `random_pick`, for bootstrap intervals), and
    the compute totals (`generated_tokens`, `verifier_tokens`, their sum `total_tokens`, `sampled_steps`, `seconds`)
    summed over all prompts, with the beam search children cut at the step token limit (`truncated_dropped`,
    `truncated_kept`; 0 for best-of-N, which samples whole traces).
    Methods that pick one trace per problem also hold `unanswered` and `unanswered_share`: the picks that did not
    finish with a readable answer (a method falls back to one only when no candidate answered). Best-of-N methods
    share one set of samples per N; each is charged for the sampling plus its own scoring. `prompt_ids` (default
    `0..len-1`) seed each prompt's sampling, so a shard of the problems run with its global ids gives the same
    per-problem results as the whole set (see `merge_search_results`). After each method the scorers' `drain` (if
    any) runs, which keeps sharded verifiers in lockstep across processes.
    """
    from tqdm.auto import tqdm

    cfg = config or SearchEvalConfig()
    if len(prompts) != len(golds):
        raise ValueError(f"{len(prompts)} prompts but {len(golds)} gold answers")
    needs_pav = {"pav_beam", "q_beam", "pav_bon", "weighted_majority"} & set(cfg.methods)
    if needs_pav and pav is None:
        raise ValueError(f"methods {sorted(needs_pav)} need a PAV scorer")
    if "orm_bon" in cfg.methods and orm is None:
        raise ValueError("method orm_bon needs an ORM scorer")
    if cfg.reuse_samples:
        from ..distributed import Lockstep

        if Lockstep().world_size > 1:
            raise ValueError(
                "reuse_samples needs one process: with several, one process could skip a generate call that "
                "another makes, and sharded (ZeRO-3) generation needs every process in every call"
            )
        policy = policy if isinstance(policy, ReusingPolicy) else ReusingPolicy(policy)
        wrapped = {id(x): x if isinstance(x, ReusingScorer) else ReusingScorer(x) for x in (pav, orm) if x is not None}
        pav, orm = (None if x is None else wrapped[id(x)] for x in (pav, orm))
    join = policy.step_format.separator.join
    if answer_fn is None:
        # The grader's own answer reader where it has one (e.g. math-verify's "The answer is N"), so a trace the
        # grader can score is never counted as unanswered.
        pattern = getattr(grader, "answer_pattern", None)
        compiled = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else None
        answer_fn = lambda steps: extract_answer(join(steps), compiled)  # noqa: E731

    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt ids")

    def grade(steps: list[str], gold: str) -> float:
        return 1.0 if steps and grader.grade(join(steps), gold) >= SUCCESS_THRESHOLD else 0.0

    def picks(results: list[SearchResult]) -> dict:
        per_problem = [grade(r.steps, g) for r, g in zip(results, golds)]
        unanswered = sum(not r.answered for r in results)
        return {
            "per_problem_correct": per_problem,
            "unanswered": unanswered,
            "unanswered_share": unanswered / max(len(results), 1),
        }

    def record(n: int, outcome: dict, *ledgers: ComputeLedger) -> dict:
        merged = ComputeLedger.merged(ledgers)
        hits = sum(outcome["per_problem_correct"])
        totals = merged.totals()
        totals["total_tokens"] = totals["generated_tokens"] + totals["verifier_tokens"]
        return {"n": n, "accuracy": hits / max(len(golds), 1), "correct": hits, **outcome, **totals}

    def drain() -> None:
        for scorer in (pav, orm):
            if hasattr(scorer, "drain"):
                scorer.drain()

    out: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    bon = [m for m in cfg.methods if m in _BEST_OF_N]
    total = len(cfg.budgets) * (len([m for m in cfg.methods if m.endswith("beam")]) + (1 if bon else 0))
    bar = tqdm(total=total, desc="search eval", disable=not show_progress)
    for n in sorted(cfg.budgets):
        for method in ("pav_beam", "q_beam"):
            if method not in cfg.methods:
                continue
            alpha = cfg.alpha if method == "pav_beam" else 0.0
            beam_cfg = BeamSearchConfig(
                budget=max(n, cfg.expansions),
                expansions=cfg.expansions,
                alpha=alpha,
                prover_k=cfg.prover_k,
                max_depth=cfg.max_depth,
                seed=cfg.seed,
                merge_duplicates=cfg.merge_duplicates,
                truncated_step=cfg.truncated_step,
            )
            ledger = ComputeLedger()
            results = beam_search(policy, pav, prompts, beam_cfg, ledger, prompt_ids=ids, answer_fn=answer_fn)
            drain()
            out[method].append(record(n, picks(results), ledger))
            bar.update(1)
        if bon:
            sampling = ComputeLedger()
            candidates = sample_candidates(policy, prompts, n, cfg.seed, sampling, prompt_ids=ids)
            for method in bon:
                scoring = ComputeLedger()
                if method == "orm_bon":
                    outcome = picks(best_of_n(prompts, candidates, orm, scoring, answer_fn))
                elif method == "pav_bon":
                    outcome = picks(best_of_n(prompts, candidates, pav, scoring, answer_fn))
                elif method == "majority":
                    outcome = picks(majority_vote(candidates, answer_fn))
                elif method == "weighted_majority":
                    outcome = picks(weighted_majority(prompts, candidates, pav, answer_fn, scoring))
                elif method == "random_pick":
                    per_problem = [sum(grade(c.steps, g) for c in cs) / len(cs) for cs, g in zip(candidates, golds)]
                    outcome = {"per_problem_correct": per_problem}
                else:
                    outcome = {"per_problem_correct": pass_at_n(candidates, golds, grader, join)}
                drain()
                out[method].append(record(n, outcome, sampling, scoring))
            bar.update(1)
    bar.close()
    return {"methods": out, "config": cfg.__dict__, "num_problems": len(prompts), "problem_ids": ids}


def merge_search_results(parts: Sequence[dict]) -> dict:
    """One result from `evaluate_search` results on disjoint shards of the problems (one per process).

    Correct answers, unanswered picks and compute totals add up; accuracy and shares are recomputed over all
    problems; per-problem lists are concatenated and put in the order of the problem ids, so the merged result equals
    the unsharded one. Seconds add up too (process seconds, not wall time).

    Example:
        >>> a = {"methods": {"m": [{"n": 4, "accuracy": 0.5, "correct": 1, "per_problem_correct": [1.0, 0.0],
        ...      "generated_tokens": 10}]}, "num_problems": 2, "problem_ids": [0, 2]}
        >>> b = {"methods": {"m": [{"n": 4, "accuracy": 1.0, "correct": 1, "per_problem_correct": [1.0],
        ...      "generated_tokens": 6}]}, "num_problems": 1, "problem_ids": [1]}
        >>> merged = merge_search_results([a, b])
        >>> row = merged["methods"]["m"][0]
        >>> merged["problem_ids"], row["per_problem_correct"], row["accuracy"]
        ([0, 1, 2], [1.0, 1.0, 0.0], 0.6666666666666666)
    """
    parts = [p for p in parts if p["num_problems"] > 0]
    if not parts:
        raise ValueError("merge_search_results: no shard has any problem")
    total = sum(p["num_problems"] for p in parts)
    ids = [i for p in parts for i in p.get("problem_ids", [])]
    by_id = len(ids) == total and len(set(ids)) == total  # shards that each count from 0 keep their concatenation
    order = sorted(range(total), key=lambda k: ids[k]) if by_id else list(range(total))
    methods: dict[str, list[dict]] = {}
    for method, records in parts[0]["methods"].items():
        merged = []
        for i, rec in enumerate(records):
            shard_recs = [p["methods"][method][i] for p in parts]
            if any(r["n"] != rec["n"] for r in shard_recs):
                raise ValueError(f"merge_search_results: shards disagree on the budgets of {method!r}")
            row: dict = {"n": rec["n"], "accuracy": sum(r["correct"] for r in shard_recs) / total}
            for k, v in rec.items():
                if k in row or k == "unanswered_share":
                    continue
                if isinstance(v, list):
                    joined = [x for r in shard_recs for x in r[k]]
                    if len(joined) != total:
                        raise ValueError(
                            f"merge_search_results: {method!r} {k} has {len(joined)} values for {total} problems"
                        )
                    row[k] = [joined[j] for j in order]
                else:
                    row[k] = sum(r[k] for r in shard_recs)
            if "unanswered" in row:
                row["unanswered_share"] = row["unanswered"] / total
            merged.append(row)
        methods[method] = merged
    out = {**parts[0], "methods": methods, "num_problems": total}
    if by_id:
        out["problem_ids"] = [ids[j] for j in order]
    else:
        out.pop("problem_ids", None)
    return out


def compute_of(record: dict, compute: str) -> float:
    """A record's compute in the unit `compute`; `"total_tokens"` is `generated_tokens + verifier_tokens` where a
    record (one cached before the field existed) does not carry it."""
    if compute in record:
        return float(record[compute])
    if compute == "total_tokens" and "generated_tokens" in record and "verifier_tokens" in record:
        return float(record["generated_tokens"] + record["verifier_tokens"])
    raise KeyError(compute)


def _running_best(xs: list[float], ys: list[float]) -> list[float]:
    """Best y at compute <= each x (xs sorted): what a user of the method gets for that much compute."""
    best, out = float("-inf"), []
    for y in ys:
        best = max(best, y)
        out.append(best)
    return out


def _running_best_at(x: float, xs: list[float], best: list[float]) -> float:
    """The running best at compute `x`: that of the last point at or below `x` (the cheapest point if none is)."""
    at = [b for bx, b in zip(xs, best) if bx <= x]
    return at[-1] if at else best[0]


def _first_reach(target: float, xs: list[float], best: list[float]) -> float | None:
    """The compute at which a running best first reaches `target`, log-interpolated between the points around the
    crossing (which favours the curve); None if it never does."""
    if best[0] >= target:
        return xs[0]
    for x0, y0, x1, y1 in zip(xs, best, xs[1:], best[1:]):
        if y0 < target <= y1:
            if target == y1:  # exact, so that a curve against itself gives a ratio of exactly 1
                return x1
            t = (target - y0) / (y1 - y0)
            return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
    return None


def compare_curves(
    method: list[dict], baseline: list[dict], compute: str = "generated_tokens", tolerance: float = 0.02
) -> dict:
    """The paper's two headline numbers for `method` against `baseline`, both curves taken as their *running best*
    (the best accuracy at that compute or less: a user who can spend C picks the best setting costing at most C), so
    neither side is charged for a fall and the comparison cannot favour a side: two identical curves give a gain of
    exactly 0 and a ratio of exactly 1, and swapping the curves flips the sign of the gain.

    - `accuracy_gain`: at the largest common compute X (the smaller of the two curves' largest compute; the larger of
      their smallest if the curves do not overlap), the method's running best minus the baseline's.
      `gain_compute` (the method's compute there), `method_accuracy` and `baseline_accuracy` say what was compared.
    - `compute_ratio`: the compute the baseline's running best needs to reach the method's best accuracy
      (interpolated on a log axis between the points around the crossing, which favours the baseline), over the
      compute at which the method first reaches it. If the baseline never gets there within its grid, the ratio uses
      the baseline's largest compute and `ratio_is_grid_edge` is true: the baseline would need more than that (the
      same flag is kept as `ratio_is_lower_bound`).

    Compute within `tolerance` (relative) counts as equal for the accuracy gain: two searches at the same N spend
    a few tokens more or fewer by chance, and an exact cut would set one curve's point against the other's point
    one budget lower.

    Args:
        method (`list[dict]`): records with `"accuracy"` and the compute field (an `evaluate_search` curve).
        baseline (`list[dict]`): the same for the baseline.
        compute (`str`, defaults to `"generated_tokens"`): the compute field; `"total_tokens"` (generated plus
            verifier tokens) is summed from `generated_tokens` and `verifier_tokens` where a record lacks it.
        tolerance (`float`, defaults to `0.02`): relative compute difference counted as equal for the gain.

    Example (the baseline falls after its first point; its running best stays 0.6):
        >>> m = [{"generated_tokens": 100, "accuracy": 0.5}, {"generated_tokens": 400, "accuracy": 0.55}]
        >>> b = [{"generated_tokens": 100, "accuracy": 0.6}, {"generated_tokens": 400, "accuracy": 0.3}]
        >>> out = compare_curves(m, b)
        >>> round(out["accuracy_gain"], 3), out["compute_ratio"], out["ratio_is_grid_edge"]
        (-0.05, 0.25, False)
        >>> compare_curves(b, b)["accuracy_gain"], compare_curves(b, b)["compute_ratio"]
        (0.0, 1.0)
    """
    if not method or not baseline:
        raise ValueError(f"compare_curves: need records in both curves, got {len(method)} and {len(baseline)}")
    curves = []
    for name, curve in (("method", method), ("baseline", baseline)):
        points = []
        for r in curve:
            try:
                x = compute_of(r, compute)
            except KeyError:
                x = float("nan")
            if "accuracy" not in r or not x > 0:
                extra = " (or 'generated_tokens' and 'verifier_tokens')" if compute == "total_tokens" else ""
                raise ValueError(
                    f"compare_curves: {name} records need 'accuracy' and a positive {compute!r}{extra}; got {r}"
                )
            points.append((x, float(r["accuracy"])))
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        curves.append((xs, _running_best(xs, [p[1] for p in points])))
    (mx, best_m), (bx, best_b) = curves

    target = best_m[-1]
    target_x = mx[best_m.index(target)]  # where the method first reaches its best
    reach = _first_reach(target, bx, best_b)
    ratio = (reach if reach is not None else bx[-1]) / target_x

    # One compute for both curves, so the gain is antisymmetric; the slack forgives chance differences at one N.
    common = max(min(mx[-1], bx[-1]), max(mx[0], bx[0])) * (1.0 + tolerance)
    method_acc, base_acc = _running_best_at(common, mx, best_m), _running_best_at(common, bx, best_b)
    return {
        "compute": compute,
        "compute_ratio": ratio,
        "ratio_is_grid_edge": reach is None,
        "ratio_is_lower_bound": reach is None,
        "accuracy_gain": method_acc - base_acc,
        "gain_compute": max([x for x in mx if x <= common], default=mx[0]),
        "method_accuracy": method_acc,
        "baseline_accuracy": base_acc,
    }


def compare_to_baselines(
    methods: dict[str, list[dict]],
    method: str = "pav_beam",
    baselines: Sequence[str] = ("orm_bon", "majority"),
    compute: str = "generated_tokens",
    tolerance: float = 0.02,
) -> dict[str, dict]:
    """`compare_curves` of `method` against each baseline present in `methods` (an `evaluate_search` result's
    `"methods"`): the headline against the ORM and against majority vote, which needs no verifier. Pass
    `compute="total_tokens"` to count the verifier's reading too: beam search scores every sampled prefix, best-of-N
    only the finished candidates.

    Example:
        >>> curves = {"pav_beam": [{"generated_tokens": 10, "accuracy": 0.5}],
        ...           "majority": [{"generated_tokens": 10, "accuracy": 0.4}]}
        >>> {k: round(v["accuracy_gain"], 2) for k, v in compare_to_baselines(curves).items()}
        {'majority': 0.1}
    """
    if method not in methods:
        raise ValueError(f"compare_to_baselines: no curve for {method!r}; have {sorted(methods)}")
    return {
        name: compare_curves(methods[method], methods[name], compute, tolerance)
        for name in baselines
        if name in methods
    }


def summarize_curve(records: list[dict], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Bootstrap intervals over problems for one method's curve (its `evaluate_search` records).

    Returns `n`, `accuracy`, `low`, `high` (lists in order of N) and `monotone`: whether accuracy at the largest N is
    at least that at the smallest N within the paired interval (`trl_pav.metrics.curve_is_monotone`).

    Example:
        >>> recs = [{"n": 8, "per_problem_correct": [1.0, 1.0]}, {"n": 2, "per_problem_correct": [1.0, 0.0]}]
        >>> out = summarize_curve(recs)
        >>> out["n"], out["accuracy"], out["monotone"]
        ([2, 8], [0.5, 1.0], True)
    """
    recs = sorted(records, key=lambda r: r["n"])
    missing = [r["n"] for r in recs if "per_problem_correct" not in r]
    if not recs or missing:
        raise ValueError(f"summarize_curve: need records with per_problem_correct; missing at N = {missing}")
    stats = [bootstrap_interval(r["per_problem_correct"], n_boot, confidence, seed) for r in recs]
    first, last = recs[0]["per_problem_correct"], recs[-1]["per_problem_correct"]
    return {
        "n": [r["n"] for r in recs],
        "accuracy": [s[0] for s in stats],
        "low": [s[1] for s in stats],
        "high": [s[2] for s in stats],
        "monotone": curve_is_monotone(first, last, n_boot, confidence, seed),
    }


def plot_search_results(results: dict, path: str, compute: str = "generated_tokens", title: str | None = None) -> str:
    """Accuracy against compute, one line per method, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, records in results["methods"].items():
        records = sorted(records, key=lambda r: compute_of(r, compute))
        style = {"pass_at_n": "--", "random_pick": ":"}.get(method, "-")
        xs = [compute_of(r, compute) for r in records]
        ax.plot(xs, [r["accuracy"] for r in records], style, marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel(compute.replace("_", " "))
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
