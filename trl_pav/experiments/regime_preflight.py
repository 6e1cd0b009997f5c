"""Regime pre-flight on procedural policies with exact values: the arithmetic task (one forced derivation) against
the rewriting task (free order, distributive splits, restating). Prints one JSON line per setting.

    python -m trl_pav.experiments.regime_preflight --problems 128

The numbers in docs/tasks.md come from this runner (problems drawn with seed 90,000, a pool no demo stage uses).

With `--demo_dir outputs/demo` it adds the decomposition of a demo run's exact PAV-vs-Q gain: the same pre-flight
(the demo's task, pre-flight problems, budgets, α, K and depth) with the run's fitted checker as the policy too, so
that the values are exact for the policy searched. The demo measures the trained policy against the checker, which
is exact only for a policy with the checker's per-kind rates and a uniform choice of reduction; the two gains'
difference is what that mismatch costs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..regime import RegimeConfig, regime_preflight
from ..tasks import ArithmeticTask, NoisyArithmeticPolicy, RewritePolicy, RewriteTask


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the pre-flight of every setting; prints and returns one record per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=128)
    parser.add_argument("--seed", type=int, default=90_000)
    parser.add_argument("--demo_dir", type=Path, default=None, help="a demo run's folder: add its checker's setting")
    parser.add_argument("--only_demo", action="store_true", help="with --demo_dir: skip the procedural settings")
    args = parser.parse_args(argv)
    if args.only_demo and args.demo_dir is None:
        parser.error("--only_demo needs --demo_dir")
    cfg = RegimeConfig(budgets=[3, 6, 12, 24], samples=24, group_size=8, bootstrap_samples=500)
    settings = [("arithmetic, step error 0.2", ArithmeticTask(), lambda t: NoisyArithmeticPolicy(t, 0.2))]
    for rates in (
        {"hard_product": 0.7, "product": 0.2, "split": 0.1, "sum": 0.15},
        {"hard_product": 0.9, "product": 0.3, "split": 0.2, "sum": 0.2},
    ):
        settings.append((f"rewrite, {rates}", RewriteTask(), lambda t, r=rates: RewritePolicy(t, r, restate_rate=0.15)))
    runs = (
        []
        if args.only_demo
        else [(n, t, b, t.sample_problems(args.problems, seed=args.seed), cfg) for n, t, b in settings]
    )
    if args.demo_dir is not None:
        runs.append(_demo_setting(args.demo_dir, cfg))
    records = []
    for name, task, build, probs, run_cfg in runs:
        policy = build(task)
        prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
        pre = regime_preflight(policy, policy, prompts, golds, task.grader, run_cfg)
        records.append({"setting": name, **pre})
        print(json.dumps(records[-1]))
    return records


def _demo_setting(demo_dir: Path, cfg: RegimeConfig):
    """A demo run's task and pre-flight pool with its fitted checker as the policy, at this runner's budgets and the
    task's search depth (the default demo's settings: N = 3..24, α = 0.5, Bo4, seed 0)."""
    from .arithmetic_verifiers import saved_pools, saved_task, trace_limits

    folder = demo_dir / "arithmetic"
    checker_path = folder / "checker.json"
    if not checker_path.exists():
        raise FileNotFoundError(f"{checker_path}: not found; run `make demo` (up to its pre-flight) first")
    spec = json.loads(checker_path.read_text())["value"]
    task = saved_task(folder)
    if task.name != "rewrite":
        raise ValueError(f"{checker_path}: the checker is for task {task.name!r}; the decomposition is for rewrite")
    rates, restate = spec["error_rates"], spec["restate_rate"]
    build = lambda t: RewritePolicy(t, rates, restate_rate=restate)  # noqa: E731
    name = f"demo task, its fitted checker as the policy: {rates}, restate {restate:.3f}"
    run_cfg = replace(cfg, max_depth=trace_limits(task)["max_depth"])
    return name, task, build, saved_pools(folder, task)["preflight"], run_cfg


if __name__ == "__main__":
    main()
