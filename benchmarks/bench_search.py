"""Accuracy vs compute on the arithmetic task: PAV beam search (Bo4), Q-only beam search, ORM best-of-N, one run.

Uses the demo's base policy and verifiers (trained and cached by `make demo`; built here if absent).
Final line: {"benchmark": "search", "compute_ratio": ..., "accuracy_gain": ...}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import ROOT, emit

from trl_pav.demo import DemoConfig, arithmetic
from trl_pav.demo.common import Progress, quiet_libraries
from trl_pav.modeling import PAVVerifier
from trl_pav.search import SearchEvalConfig, compare_curves, evaluate_search, plot_search_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=128)
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 6, 12, 24, 48])
    args = parser.parse_args()
    quiet_libraries()
    out = ROOT / "outputs" / "demo"
    arith = arithmetic.run(DemoConfig(), out, Progress(print), {})
    task, policy = arith["task"], arith["policy"]
    pav = PAVVerifier.from_pretrained(arith["verifiers"]["pav"])
    orm = PAVVerifier.from_pretrained(arith["verifiers"]["orm"])
    probs = task.sample_problems(args.problems, seed=30_000)
    cfg = SearchEvalConfig(
        methods=["pav_beam", "q_beam", "orm_bon", "pass_at_n"], budgets=args.budgets, alpha=0.5, prover_k=4, max_depth=8
    )
    results = evaluate_search(
        policy,
        [p.prompt for p in probs],
        [p.gold for p in probs],
        task.grader,
        cfg,
        pav=pav,
        orm=orm,
        show_progress=False,
    )
    for method, records in results["methods"].items():
        print(method, [(r["n"], round(r["accuracy"], 3), r["generated_tokens"]) for r in records])
    Path(ROOT / "outputs" / "bench").mkdir(parents=True, exist_ok=True)
    plot_search_results(results, str(ROOT / "outputs" / "bench" / "search.png"))
    cmp = compare_curves(results["methods"]["pav_beam"], results["methods"]["orm_bon"])
    emit(
        {
            "benchmark": "search",
            "baseline": "ORM best-of-N",
            "compute": "generated_tokens",
            **cmp,
            "pav_best_accuracy": max(r["accuracy"] for r in results["methods"]["pav_beam"]),
            "orm_best_accuracy": max(r["accuracy"] for r in results["methods"]["orm_bon"]),
        }
    )


if __name__ == "__main__":
    main()
