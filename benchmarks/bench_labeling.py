"""Labeling throughput: the MC labeler vs a per-prefix `generate(num_return_sequences=n_mc)` loop, same problems,
interleaved over repetitions after a warm-up (the speedup is the median of per-repetition ratios of prefixes/s, with
its spread).

Also: rollouts spent by first-pit vs all-prefix labeling, with the first-error accuracy each reaches.
Final line: {"benchmark": "labeling", "speedup": ..., ...}.
"""

from __future__ import annotations

import argparse

import torch
from _common import arithmetic_policy_dir, emit, interleave, ratio_summary
from transformers import AutoModelForCausalLM

from trl_pav import load_tokenizer
from trl_pav.generation import HFPolicy
from trl_pav.labeling import MCLabelConfig, MCLabeler
from trl_pav.tasks import ArithmeticTask


def naive_labels(model, tok, task, problems, n_cov: int, n_mc: int) -> tuple[int, int]:
    """The straightforward loop: per problem sample seed traces, then per prefix one generate call of n_mc samples."""
    fmt, labeled, rollouts = task.step_format, 0, 0
    gen = dict(
        do_sample=True, temperature=1.0, max_new_tokens=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    for p in problems:
        enc = tok(p.prompt, return_tensors="pt")
        seeds = model.generate(**enc, num_return_sequences=n_cov, **gen)
        for row in seeds:
            steps = fmt.split(tok.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True))
            for h in range(1, len(steps)):
                prefix = tok(p.prompt + fmt.join(steps[:h]) + fmt.separator, return_tensors="pt")
                outs = model.generate(**prefix, num_return_sequences=n_mc, **gen)
                texts = tok.batch_decode(outs[:, prefix["input_ids"].shape[1] :], skip_special_tokens=True)
                _ = sum(task.grader.grade(fmt.join(steps[:h]) + fmt.separator + t, p.gold) for t in texts) / n_mc
                labeled += 1
                rollouts += n_mc
    return labeled, rollouts


def first_error_rate(ds, task) -> float:
    hits = total = 0
    for r in ds:
        truth = task.first_error(r["expression"], r["completions"])
        if r["seed_outcome"] == 0.0 and truth is not None:
            predicted = next((h for h, v in enumerate(r["labels"]) if v is not None and v <= 0.0), None)
            hits += predicted == truth
            total += 1
    return hits / max(1, total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=32, help="problems per repetition")
    parser.add_argument("--n_cov", type=int, default=2)
    parser.add_argument("--n_mc", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    task = ArithmeticTask()
    path = arithmetic_policy_dir()
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(path)
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=64, batch_size=256)
    prefixes: dict[str, list[int]] = {"naive_loop": [], "labeler": []}

    def naive_arm(rep: int) -> None:
        torch.manual_seed(rep)
        with torch.inference_mode():
            labeled, _ = naive_labels(
                model, tok, task, task.sample_problems(args.problems, seed=1000 + rep), args.n_cov, args.n_mc
            )
        prefixes["naive_loop"].append(labeled)

    def labeler_arm(rep: int) -> None:
        cfg = MCLabelConfig(
            n_cov=args.n_cov, n_mc=args.n_mc, strategy="all", show_progress=False, shard_size=args.problems, seed=rep
        )
        ds = MCLabeler(policy, task.grader, cfg).label(task.problems_dataset(args.problems, seed=1000 + rep))
        prefixes["labeler"].append(sum(c > 0 for r in ds for c in r["label_rollouts"]))

    # Both arms label the same problems in a repetition; their seed traces differ, so rates (prefixes/s) are compared.
    times = interleave({"naive_loop": naive_arm, "labeler": labeler_arm}, args.reps, args.warmup, log=print)
    rates = {k: [n / t for n, t in zip(prefixes[k][args.warmup :], times[k])] for k in times}
    speedup = ratio_summary(rates["labeler"], rates["naive_loop"], 2)
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}

    # Rollouts spent by first-pit vs all-prefix labeling on one set of problems (counts, not timing).
    data = task.problems_dataset(64, seed=123)
    runs = {}
    for strategy in ("all", "first_pit"):
        cfg = MCLabelConfig(n_cov=args.n_cov, n_mc=args.n_mc, strategy=strategy, show_progress=False, shard_size=64)
        labeler = MCLabeler(policy, task.grader, cfg)
        ds = labeler.label(data)
        runs[strategy] = {
            "rollouts": labeler.last_metadata["rollouts"],
            "first_error_accuracy": first_error_rate(ds, task),
        }
    print(
        f"prefixes/s: naive loop {med['naive_loop']:.1f}, labeler {med['labeler']:.1f}; speedup median "
        f"{speedup['median']} [{speedup['min']}, {speedup['max']}]"
    )
    print(
        f"first-pit: {runs['first_pit']['rollouts']} rollouts, "
        f"first-error accuracy {runs['first_pit']['first_error_accuracy']:.3f}; "
        f"all prefixes: {runs['all']['rollouts']} rollouts, {runs['all']['first_error_accuracy']:.3f}"
    )
    emit(
        {
            "benchmark": "labeling",
            "baseline": "per-prefix generate(num_return_sequences=n_mc) loop",
            "n_mc": args.n_mc,
            "naive_prefixes_per_s": round(med["naive_loop"], 2),
            "labeler_prefixes_per_s": round(med["labeler"], 2),
            "speedup": speedup,
            "rollouts_first_pit": runs["first_pit"]["rollouts"],
            "rollouts_all_prefixes": runs["all"]["rollouts"],
            "first_error_accuracy_first_pit": round(runs["first_pit"]["first_error_accuracy"], 3),
            "first_error_accuracy_all_prefixes": round(runs["all"]["first_error_accuracy"], 3),
        }
    )


if __name__ == "__main__":
    main()
