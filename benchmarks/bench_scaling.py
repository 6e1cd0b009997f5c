"""How labeling and search cost grow with the number of problems (64, 128, 256 by default).

For each size: Monte-Carlo labeling (first pit, Bo4, `n_mc` rollouts) and PAV beam search (N = 6) of that many
problems with the arithmetic base policy and a 1M-parameter verifier. Sizes are interleaved over repetitions after a
warm-up. Linear cost means seconds per problem stay flat: the result reports, per stage, the median seconds per
problem at each size, the per-repetition ratio of the largest size's time to the smallest's divided by the size ratio
(1.0 = linear), and the exponent of a log-log fit of time against size.

Final line: {"benchmark": "scaling", "labeling": {...}, "search": {...}}.
"""

from __future__ import annotations

import argparse
import math
import statistics

from _common import arithmetic_policy_dir, emit, interleave, ratio_summary
from transformers import AutoModelForCausalLM

from trl_pav import PAVMetadata, PAVVerifier, load_tokenizer
from trl_pav.generation import HFPolicy
from trl_pav.grading import extract_answer
from trl_pav.labeling import MCLabelConfig, MCLabeler
from trl_pav.search import BeamSearchConfig, beam_search
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_token_classifier


def loglog_slope(sizes: list[int], seconds: list[float]) -> float:
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--n_mc", type=int, default=4)
    parser.add_argument("--budget", type=int, default=6, help="N of PAV beam search")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    task = ArithmeticTask()
    path = arithmetic_policy_dir()
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(path)
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=64, max_step_tokens=16, batch_size=256)
    verifier = PAVVerifier(
        tiny_token_classifier(tok, hidden_size=128, num_layers=4, max_positions=128), tok, PAVMetadata()
    )
    join = task.step_format.join

    def label(n: int, rep: int) -> None:
        cfg = MCLabelConfig(n_cov=1, n_mc=args.n_mc, strategy="first_pit", show_progress=False, shard_size=n, seed=rep)
        MCLabeler(policy, task.grader, cfg).label(task.problems_dataset(n, seed=rep))

    def search(n: int, rep: int) -> None:
        prompts = [p.prompt for p in task.sample_problems(n, seed=rep)]
        cfg = BeamSearchConfig(budget=args.budget, max_depth=8, seed=rep)
        beam_search(policy, verifier, prompts, cfg, answer_fn=lambda s: extract_answer(join(s)))

    out = {}
    for stage, fn in (("labeling", label), ("search", search)):
        times = interleave(
            {n: (lambda rep, n=n, fn=fn: fn(n, rep)) for n in args.sizes},
            args.reps,
            args.warmup,
            log=lambda m, stage=stage: print(stage, m),
        )
        small, large = min(args.sizes), max(args.sizes)
        per_problem = {n: statistics.median(t) / n for n, t in times.items()}
        linearity = ratio_summary([t / (large / small) for t in times[large]], times[small])
        slope = loglog_slope(args.sizes, [statistics.median(times[n]) for n in args.sizes])
        out[stage] = {
            "seconds_per_problem": {str(n): round(v, 4) for n, v in per_problem.items()},
            "largest_over_smallest_per_problem": linearity,
            "loglog_exponent": round(slope, 3),
        }
        print(
            f"{stage}: seconds per problem "
            + ", ".join(f"{n}: {v:.3f}" for n, v in per_problem.items())
            + f"; exponent {slope:.2f} (1 = linear)"
        )
    emit({"benchmark": "scaling", "baseline": f"the smallest size ({min(args.sizes)} problems)", **out})


if __name__ == "__main__":
    main()
