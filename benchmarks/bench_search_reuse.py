"""Search evaluation with `SearchEvalConfig.reuse_samples` against the same evaluation without it (the baseline).

Every method and budget of the demo's search (PAV beam, Q-only beam, ORM best-of-N, majority, Pass@N at N = 3, 6,
12) on held-out arithmetic problems, with the demo's base policy and verifiers (the exact checker values when the demo
has not trained verifiers yet). The two arms run in turn over repetitions; both must give the same per-problem picks
and charge the same generated tokens. Final line: {"benchmark": "search_reuse", "speedup": {"median": ...}, ...}.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from _common import ROOT, arithmetic_policy_dir, emit, interleave, ratio_summary

from trl_pav.demo.arithmetic import checker_scorer
from trl_pav.demo.common import quiet_libraries
from trl_pav.generation import HFPolicy
from trl_pav.modeling import PAVVerifier
from trl_pav.search import SearchEvalConfig, evaluate_search
from trl_pav.tasks import ArithmeticTask
from trl_pav.tokenization import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 6, 12])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    quiet_libraries()
    from transformers import AutoModelForCausalLM

    task = ArithmeticTask()
    policy_dir = arithmetic_policy_dir()
    model, tok = AutoModelForCausalLM.from_pretrained(policy_dir), load_tokenizer(policy_dir)
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=64, max_step_tokens=16, batch_size=256)
    verifiers = ROOT / "outputs" / "demo" / "arithmetic"
    if (verifiers / "pav" / ".done").exists() and (verifiers / "orm" / ".done").exists():
        pav, orm = PAVVerifier.from_pretrained(verifiers / "pav"), PAVVerifier.from_pretrained(verifiers / "orm")
        scorers = "the demo's learned PAV and ORM"
    else:
        pav = orm = checker_scorer(task, 0.67)
        scorers = "exact checker values"
    probs = task.sample_problems(args.problems, seed=30_000)
    prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
    cfg = SearchEvalConfig(
        methods=["pav_beam", "q_beam", "orm_bon", "majority", "pass_at_n"], budgets=args.budgets, max_depth=8
    )
    outputs = {}

    def arm(reuse: bool):
        def run(rep: int) -> None:
            c = replace(cfg, reuse_samples=reuse)
            outputs[reuse] = evaluate_search(policy, prompts, golds, task.grader, c, pav, orm, show_progress=False)

        return run

    times = interleave({"reuse": arm(True), "baseline": arm(False)}, reps=args.reps, log=print)
    same = all(
        (a["per_problem_correct"], a["generated_tokens"]) == (b["per_problem_correct"], b["generated_tokens"])
        for m in cfg.methods
        for a, b in zip(outputs[True]["methods"][m], outputs[False]["methods"][m])
    )
    emit(
        {
            "benchmark": "search_reuse",
            "baseline": "the same evaluation without reuse_samples",
            "scorers": scorers,
            "problems": args.problems,
            "budgets": args.budgets,
            "speedup": ratio_summary(times["baseline"], times["reuse"]),
            "seconds_reuse": [round(t, 2) for t in times["reuse"]],
            "seconds_baseline": [round(t, 2) for t in times["baseline"]],
            "same_picks_and_tokens": same,
        }
    )


if __name__ == "__main__":
    main()
