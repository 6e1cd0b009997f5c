"""Arithmetic experiment, part 2: verifier-guided search, with the learned verifiers and with exact values.

Running every method twice separates the method from the verifier: with exact checker-derived values the paper's
orderings are a property of the task and the search (an exact ORM's best-of-N is Pass@N of derivations that are
right at every step, the ceiling); with the learned verifiers they also need verifiers that rank a problem's
candidates well.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..experiments.arithmetic_verifiers import trace_limits
from ..report import ratio_text
from .common import cached_json

__all__ = ["best_prover", "bootstrap_comparison", "run"]

METHODS = ["pav_beam", "q_beam", "orm_bon", "majority", "random_pick", "pass_at_n"]


def run(cfg, out: Path, progress, arith: dict) -> dict:
    from ..metrics import bootstrap_interval
    from ..modeling import PAVVerifier
    from ..report import search_headline
    from ..search import ReusingPolicy, ReusingScorer, SearchEvalConfig, evaluate_search, summarize_curve

    # Every method, budget and verifier asks for many of the same seeded samples: each is generated once.
    task, policy = arith["task"], ReusingPolicy(arith["policy"])
    probs = arith["pools"]["search"]  # disjoint from the SFT, labeled and other evaluation problems
    prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
    search_cfg = SearchEvalConfig(
        methods=METHODS,
        budgets=cfg.search_budgets,
        alpha=cfg.search_alpha,
        prover_k=cfg.prover_k,
        max_depth=trace_limits(task)["max_depth"],
        seed=cfg.seed,
        reuse_samples=True,
    )
    learned_pav = functools.cache(lambda: ReusingScorer(PAVVerifier.from_pretrained(arith["verifiers"]["pav"])))
    scorers = {
        "learned": lambda: (learned_pav(), PAVVerifier.from_pretrained(arith["verifiers"]["orm"])),
        "exact": lambda: (arith["checker"],) * 2,
    }
    base_key = {
        "cfg": [cfg.search_problems, cfg.search_budgets, cfg.search_alpha, cfg.prover_k, cfg.seed],
        "pools": arith["pools"].spec("search"),
        "beam": {"merge_duplicates": search_cfg.merge_duplicates, "expansions": search_cfg.expansions},
        "reuse": search_cfg.reuse_samples and "per-trace verifier tokens",
        "checker": arith["checker_spec"],
    }
    verifier_stamps = [(Path(p) / ".done").read_text() for p in arith["verifiers"].values()]
    out_sets = {}
    for name, build in scorers.items():
        progress(f"search ({name} values): {'/'.join(METHODS)} on {len(prompts)} problems, N in {cfg.search_budgets}")
        key = {**base_key, "name": name}
        if name == "learned":  # exact values do not depend on the trained verifiers
            key["verifiers"] = verifier_stamps

        def evaluate(build=build):
            pav, orm = build()
            return evaluate_search(
                policy, prompts, golds, task.grader, search_cfg, pav=pav, orm=orm, show_progress=False
            )

        curves = cached_json(out / "arithmetic" / "search" / f"{name}.json", key, evaluate)["methods"]
        comparison = {
            base: bootstrap_comparison(curves["pav_beam"], curves[base], cfg.bootstrap_samples, cfg.seed)
            for base in ("orm_bon", "majority", "q_beam")
        }
        summaries = {
            m: summarize_curve(curves[m], n_boot=cfg.bootstrap_samples, seed=cfg.seed)
            for m in curves
            if m not in ("random_pick", "pass_at_n")
        }
        out_sets[name] = {"curves": curves, "vs": comparison, "intervals": summaries}
        c = comparison["orm_bon"]
        ratio = ratio_text(c)  # the report's rule: a ratio only for a resolved gain
        progress(
            f"search ({name}): PAV beam vs ORM best-of-N, running bests in total tokens: gain "
            f"{c['accuracy_gain']:+.3f} [{c['accuracy_gain_low']:+.3f}, {c['accuracy_gain_high']:+.3f}], "
            + (f"compute ratio {ratio}" if ratio else "no compute ratio (gain not resolved)")
        )

    progress(f"prover sweep K in {cfg.k_sweep} at N={cfg.k_sweep_budget} (learned PAV)")

    def prover_sweep() -> list[dict]:
        pav = learned_pav()  # its scores of the learned search are reused
        sweep = []
        for k in cfg.k_sweep:
            per_seed = []
            for seed in cfg.k_sweep_seeds:  # search seeds: which children are sampled
                k_cfg = replace(search_cfg, methods=["pav_beam"], budgets=[cfg.k_sweep_budget], prover_k=k, seed=seed)
                rec = evaluate_search(policy, prompts, golds, task.grader, k_cfg, pav=pav, show_progress=False)
                per_seed.append(rec["methods"]["pav_beam"][0]["per_problem_correct"])
            # Each problem's success averaged over search seeds, then a bootstrap over problems.
            per_problem = np.mean(np.array(per_seed, dtype=float), axis=0)
            est, lo, hi = bootstrap_interval(per_problem, cfg.bootstrap_samples, seed=cfg.seed)
            sweep.append(
                {
                    "k": k,
                    "accuracy": est,
                    "interval": [lo, hi],
                    "accuracy_per_seed": [float(np.mean(c)) for c in per_seed],
                }
            )
        return sweep

    sweep_key = {
        **base_key,
        "name": "prover_sweep",
        "k": [cfg.k_sweep, cfg.k_sweep_budget],
        "seeds": cfg.k_sweep_seeds,
        "pav": verifier_stamps,
    }
    sweep = cached_json(out / "arithmetic" / "search" / "prover_sweep.json", sweep_key, prover_sweep)
    learned = out_sets["learned"]
    monotone = all(s["monotone"] for m, s in learned["intervals"].items() if m in ("pav_beam", "q_beam", "orm_bon"))
    return {
        "curves": learned["curves"],
        "learned": learned,
        "oracle": out_sets["exact"],
        "expansions": search_cfg.expansions,
        **search_headline(learned["vs"]),
        "monotone": monotone,
        "prover_sweep": sweep,
        **best_prover(sweep),
    }


def bootstrap_comparison(
    method: list[dict], baseline: list[dict], n_boot: int, seed: int, confidence: float = 0.95
) -> dict:
    """`compare_curves` of two curves in total tokens (generated + verifier), with the same numbers in generated
    tokens only under `"generated_tokens"`, and percentile intervals for the gain and the ratio from resampling
    problems (one resample for both curves, every budget and both units: paired; compute held at its observed
    totals).

    Returns `compare_curves`'s fields with `accuracy_gain_low` / `_high`, `compute_ratio_low` / `_high` and
    `compute_ratio_grid_edge_share` (the share of resamples whose ratio is a grid edge, i.e. a lower bound), plus
    `identical` (every per-problem correctness equal at every budget), `differing_picks` and `compared_picks` (the
    (budget, problem) pairs whose correctness differs, out of those compared at budgets both curves have).
    """
    from ..search import compare_curves

    m = np.array([r["per_problem_correct"] for r in method], dtype=float)  # (budgets, problems)
    b = np.array([r["per_problem_correct"] for r in baseline], dtype=float)
    if m.ndim != 2 or b.ndim != 2 or m.shape[1] != b.shape[1]:
        raise ValueError(
            f"bootstrap_comparison: both curves need one per_problem_correct value per problem at every budget, "
            f"got shapes {m.shape} and {b.shape}"
        )
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    units = ("total_tokens", "generated_tokens")
    draws: dict[str, dict[str, list]] = {u: {"gain": [], "ratio": [], "edge": []} for u in units}
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        idx = rng.integers(0, m.shape[1], size=m.shape[1])
        rm = [{**r, "accuracy": float(m[i, idx].mean())} for i, r in enumerate(method)]
        rb = [{**r, "accuracy": float(b[i, idx].mean())} for i, r in enumerate(baseline)]
        for unit in units:
            res = compare_curves(rm, rb, unit)
            draws[unit]["gain"].append(res["accuracy_gain"])
            draws[unit]["ratio"].append(res["compute_ratio"])
            draws[unit]["edge"].append(res["ratio_is_grid_edge"])

    def stats(unit: str) -> dict:
        point, d = compare_curves(method, baseline, unit), draws[unit]
        glo, ghi = np.quantile(d["gain"], [lo_q, hi_q]) if n_boot else (point["accuracy_gain"],) * 2
        rlo, rhi = np.quantile(d["ratio"], [lo_q, hi_q]) if n_boot else (point["compute_ratio"],) * 2
        return {
            **point,
            "accuracy_gain_low": float(glo),
            "accuracy_gain_high": float(ghi),
            "compute_ratio_low": float(rlo),
            "compute_ratio_high": float(rhi),
            "compute_ratio_grid_edge_share": float(np.mean(d["edge"]))
            if n_boot
            else float(point["ratio_is_grid_edge"]),
        }

    m_at = {r["n"]: r["per_problem_correct"] for r in method if "n" in r}
    b_at = {r["n"]: r["per_problem_correct"] for r in baseline if "n" in r}
    common = sorted(set(m_at) & set(b_at))
    differing = sum(x != y for n in common for x, y in zip(m_at[n], b_at[n]))
    identical = len(m_at) == len(method) and len(b_at) == len(baseline) and set(m_at) == set(b_at) and differing == 0
    return {
        **stats("total_tokens"),
        "generated_tokens": stats("generated_tokens"),
        "identical": bool(identical),
        "differing_picks": int(differing),
        "compared_picks": len(common) * m.shape[1],
    }


def best_prover(sweep: list[dict]) -> dict:
    """The K with the highest accuracy (ties go to the smallest K, not to the paper's answer), every tied K, that
    accuracy, and whether every K of the sweep ties (then the sweep names no best K).

    Example:
        >>> best_prover([{"k": 1, "accuracy": 0.5}, {"k": 4, "accuracy": 0.5}])["best_prover_k_all_tie"]
        True
    """
    top = max(r["accuracy"] for r in sweep)
    tied = sorted(r["k"] for r in sweep if r["accuracy"] == top)
    return {
        "best_prover_k": tied[0],
        "best_prover_k_ties": tied,
        "best_prover_accuracy": top,
        "best_prover_k_all_tie": len(tied) == len(sweep),
    }
