"""Regime pre-flight on procedural policies with exact values: the arithmetic task (one forced derivation) against
the rewriting task (free order, distributive splits, restating). Prints one JSON line per setting.

    python -m trl_pav.experiments.regime_preflight --problems 128

The numbers in docs/tasks.md come from this runner (problems drawn with seed 90,000, a pool no demo stage uses).
"""

from __future__ import annotations

import argparse
import json

from ..regime import RegimeConfig, regime_preflight
from ..tasks import ArithmeticTask, NoisyArithmeticPolicy, RewritePolicy, RewriteTask


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the pre-flight of every setting; prints and returns one record per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=128)
    parser.add_argument("--seed", type=int, default=90_000)
    args = parser.parse_args(argv)
    cfg = RegimeConfig(budgets=[3, 6, 12, 24], samples=24, group_size=8, bootstrap_samples=500)
    settings = [("arithmetic, step error 0.2", ArithmeticTask(), lambda t: NoisyArithmeticPolicy(t, 0.2))]
    for rates in (
        {"hard_product": 0.7, "product": 0.2, "split": 0.1, "sum": 0.15},
        {"hard_product": 0.9, "product": 0.3, "split": 0.2, "sum": 0.2},
    ):
        settings.append((f"rewrite, {rates}", RewriteTask(), lambda t, r=rates: RewritePolicy(t, r, restate_rate=0.15)))
    records = []
    for name, task, build in settings:
        policy = build(task)
        probs = task.sample_problems(args.problems, seed=args.seed)
        pre = regime_preflight(policy, policy, [p.prompt for p in probs], [p.gold for p in probs], task.grader, cfg)
        records.append({"setting": name, **pre})
        print(json.dumps(records[-1]))
    return records


if __name__ == "__main__":
    main()
