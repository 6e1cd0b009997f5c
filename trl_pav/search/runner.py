"""Evaluation runner: methods x budgets on a problem set, accuracy and compute per (method, N), and plots."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..generation.base import Policy
from ..grading import Grader, extract_answer
from ..modeling import StepScorer
from .base import ComputeLedger, SearchResult
from .beam_search import BeamSearchConfig, beam_search, check_search_numbers
from .best_of_n import best_of_n, majority_vote, pass_at_n, sample_candidates, weighted_majority

__all__ = [
    "METHODS",
    "SearchEvalConfig",
    "compare_curves",
    "evaluate_search",
    "merge_search_results",
    "plot_search_results",
]

METHODS = ("pav_beam", "q_beam", "orm_bon", "pav_bon", "majority", "weighted_majority", "pass_at_n")


@dataclass
class SearchEvalConfig:
    """Which methods to run at which budgets.

    Args:
        methods (`list[str]`): any of `pav_beam` (beam search on `Q̂ + α·Â`), `q_beam` (α = 0), `orm_bon` (best-of-N
            with the ORM), `pav_bon` (best-of-N with the PAV's final value), `majority`, `weighted_majority` (PAV
            values), `pass_at_n` (oracle ceiling).
        budgets (`list[int]`, defaults to `[3, 6, 12, 24]`): N per prompt (children per step for beam search,
            samples for best-of-N).
        expansions (`int`, defaults to `3`): C for beam search.
        alpha (`float`, defaults to `0.5`): α of PAV beam search.
        prover_k (`float`, defaults to `4`): prover K of PAV beam search.
        max_depth (`int`, defaults to `16`): step limit of beam search.
        seed (`int`, defaults to `0`): sampling seed.
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    budgets: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    expansions: int = 3
    alpha: float = 0.5
    prover_k: float = 4
    max_depth: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown search methods {sorted(unknown)}; known: {list(METHODS)}")
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"budgets must be positive integers, got {self.budgets}")
        check_search_numbers(self.alpha, self.prover_k, self.expansions, self.max_depth)
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
    """Run every method at every budget; return `{"methods": {method: [record per N]}}`.

    Each record holds `n`, `accuracy`, `correct` and the compute totals (`generated_tokens`, `verifier_tokens`,
    `sampled_steps`, `seconds`) summed over all prompts. Best-of-N methods share one set of samples per N; each is
    charged for the sampling plus its own scoring. `prompt_ids` (default `0..len-1`) seed each prompt's sampling, so
    a shard of the problems run with its global ids gives the same per-problem results as the whole set (see
    `merge_search_results`). After each method the scorers' `drain` (if any) runs, which keeps sharded verifiers
    in lockstep across processes.
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
    join = policy.step_format.separator.join
    answer_fn = answer_fn or (lambda steps: extract_answer(join(steps)))

    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt ids")

    def correct(results: list[SearchResult]) -> int:
        return sum(bool(grader.grade(join(r.steps), g)) for r, g in zip(results, golds))

    def record(n: int, hits: int, *ledgers: ComputeLedger) -> dict:
        merged = ComputeLedger([c for ledger in ledgers for c in ledger.calls])
        return {"n": n, "accuracy": hits / max(len(golds), 1), "correct": hits, **merged.totals()}

    def drain() -> None:
        for scorer in (pav, orm):
            if hasattr(scorer, "drain"):
                scorer.drain()

    out: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    bon = [m for m in cfg.methods if m in ("orm_bon", "pav_bon", "majority", "weighted_majority", "pass_at_n")]
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
            )
            ledger = ComputeLedger()
            results = beam_search(policy, pav, prompts, beam_cfg, ledger, prompt_ids=ids)
            drain()
            out[method].append(record(n, correct(results), ledger))
            bar.update(1)
        if bon:
            sampling = ComputeLedger()
            candidates = sample_candidates(policy, prompts, n, cfg.seed, sampling, prompt_ids=ids)
            for method in bon:
                scoring = ComputeLedger()
                if method == "orm_bon":
                    hits = correct(best_of_n(prompts, candidates, orm, scoring))
                elif method == "pav_bon":
                    hits = correct(best_of_n(prompts, candidates, pav, scoring))
                elif method == "majority":
                    hits = correct(majority_vote(candidates, answer_fn))
                elif method == "weighted_majority":
                    hits = correct(weighted_majority(prompts, candidates, pav, answer_fn, scoring))
                else:
                    hits = sum(bool(x) for x in pass_at_n(candidates, golds, grader, join))
                drain()
                out[method].append(record(n, hits, sampling, scoring))
            bar.update(1)
    bar.close()
    return {"methods": out, "config": cfg.__dict__, "num_problems": len(prompts)}


def merge_search_results(parts: Sequence[dict]) -> dict:
    """One result from `evaluate_search` results on disjoint shards of the problems (one per process).

    Correct answers and compute totals add up; accuracy is recomputed over all problems. Seconds add up too (process
    seconds, not wall time).

    Example:
        >>> a = {"methods": {"m": [{"n": 4, "accuracy": 0.5, "correct": 1, "generated_tokens": 10}]}, "num_problems": 2}
        >>> b = {"methods": {"m": [{"n": 4, "accuracy": 1.0, "correct": 1, "generated_tokens": 6}]}, "num_problems": 1}
        >>> merge_search_results([a, b])["methods"]["m"]
        [{'n': 4, 'accuracy': 0.6666666666666666, 'correct': 2, 'generated_tokens': 16}]
    """
    parts = [p for p in parts if p["num_problems"] > 0]
    if not parts:
        raise ValueError("merge_search_results: no shard has any problem")
    total = sum(p["num_problems"] for p in parts)
    methods: dict[str, list[dict]] = {}
    for method, records in parts[0]["methods"].items():
        merged = []
        for i, rec in enumerate(records):
            shard_recs = [p["methods"][method][i] for p in parts]
            if any(r["n"] != rec["n"] for r in shard_recs):
                raise ValueError(f"merge_search_results: shards disagree on the budgets of {method!r}")
            row = {k: sum(r[k] for r in shard_recs) for k in rec if k not in ("n", "accuracy")}
            row = {"n": rec["n"], "accuracy": row["correct"] / total, **row}
            merged.append(row)
        methods[method] = merged
    return {**parts[0], "methods": methods, "num_problems": total}


def _interp_log(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation of y at x on a log-x axis (clamped at the ends)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
            return y0 + t * (y1 - y0)
    return ys[-1]


def compare_curves(
    method: list[dict], baseline: list[dict], compute: str = "generated_tokens"
) -> dict[str, float | bool]:
    """How much less compute `method` needs than `baseline`, and its accuracy gain at equal compute.

    `compute_ratio`: the compute at which the baseline (interpolated on a log axis) first reaches the method's best
    accuracy, divided by the compute the method used for it. If the baseline never gets there, the ratio uses the
    baseline's largest budget and `ratio_is_lower_bound` is true. `accuracy_gain`: the method's accuracy minus the
    baseline's interpolated accuracy at the same compute, averaged over the method's budgets within the baseline's
    compute range.
    """
    m = sorted(method, key=lambda r: r[compute])
    b = sorted(baseline, key=lambda r: r[compute])
    best = max(m, key=lambda r: (r["accuracy"], -r[compute]))
    bx, by = [r[compute] for r in b], [r["accuracy"] for r in b]
    reach = None
    for (x0, y0), (x1, y1) in zip(zip(bx, by), zip(bx[1:], by[1:])):
        if y0 < best["accuracy"] <= y1:
            t = (best["accuracy"] - y0) / (y1 - y0)
            reach = math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
            break
    if by and by[0] >= best["accuracy"]:
        reach = bx[0]
    lower_bound = reach is None
    ratio = (reach if reach is not None else bx[-1]) / max(best[compute], 1e-9)
    within = [r for r in m if bx[0] <= r[compute] <= bx[-1]] or m
    gain = sum(r["accuracy"] - _interp_log(r[compute], bx, by) for r in within) / len(within)
    return {"compute_ratio": ratio, "ratio_is_lower_bound": lower_bound, "accuracy_gain": gain}


def plot_search_results(results: dict, path: str, compute: str = "generated_tokens", title: str | None = None) -> str:
    """Accuracy against compute, one line per method, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, records in results["methods"].items():
        records = sorted(records, key=lambda r: r[compute])
        style = "--" if method == "pass_at_n" else "-"
        ax.plot([r[compute] for r in records], [r["accuracy"] for r in records], style, marker="o", label=method)
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
