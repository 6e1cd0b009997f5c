"""Labeling throughput: the MC labeler vs a per-prefix `generate(num_return_sequences=n_mc)` loop, same problems,
interleaved over repetitions after a warm-up (the speedup is the median of per-repetition ratios of prefixes/s, with
its spread).

`throughput_fraction`: the labeler's generated tokens per second over the backend's raw batched generation of the
SAME tokens. A recording pass collects every request the labeler sends (seed traces, root rollouts, each round of
prefix probes); the baseline arm issues all of them as one `HFPolicy.generate` call. Per-request seeds make both arms
generate identical tokens (checked every repetition), so the fraction is what the labeler's rounds, grading and
bookkeeping cost against generation alone; median of interleaved repetitions, with spread.

Also: rollouts spent by first-pit vs all-prefix labeling, with the first-error accuracy each reaches.
Final line: {"benchmark": "labeling", "speedup": ..., "throughput_fraction": ..., ...}.
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


class RecordingPolicy:
    """The policy as the labeler sees it (same name, settings and batch size), keeping every request it is sent."""

    def __init__(self, policy: HFPolicy):
        self.policy, self.requests = policy, []
        self.name, self.step_format, self.batch_size = policy.name, policy.step_format, policy.batch_size

    def fingerprint(self) -> dict:
        return self.policy.fingerprint()

    def generate(self, requests, stop_at_step: bool = False):
        self.requests += list(requests)
        return self.policy.generate(requests, stop_at_step)


def throughput_fraction(policy: HFPolicy, task, problems, cfg: MCLabelConfig, reps: int, warmup: int) -> dict:
    """Labeling's generated tokens/s over one plain batched `generate` of the same requests (see the module doc)."""
    recorder = RecordingPolicy(policy)
    labeler = MCLabeler(recorder, task.grader, cfg)
    labeler.label(problems)
    requests, tokens = recorder.requests, labeler.last_metadata["generated_tokens"]
    got: dict[str, list[int]] = {"labeler": [], "raw_batched_generate": []}

    def labeler_arm(rep: int) -> None:
        run = MCLabeler(policy, task.grader, cfg)
        run.label(problems)
        got["labeler"].append(run.last_metadata["generated_tokens"])

    def raw_arm(rep: int) -> None:
        got["raw_batched_generate"].append(sum(g.num_tokens for g in policy.generate(requests)))

    times = interleave({"labeler": labeler_arm, "raw_batched_generate": raw_arm}, reps, warmup, log=print)
    if any(n != tokens for arm in got.values() for n in arm):
        raise RuntimeError(f"the arms generated different tokens: expected {tokens} per run, got {got}")
    rate = {k: [tokens / t for t in v] for k, v in times.items()}
    return {
        "throughput_fraction": ratio_summary(rate["labeler"], rate["raw_batched_generate"]),
        "labeler_tokens_per_s": round(sorted(rate["labeler"])[len(times["labeler"]) // 2], 1),
        "raw_tokens_per_s": round(sorted(rate["raw_batched_generate"])[len(times["labeler"]) // 2], 1),
        "tokens_per_run": tokens,
        "requests_per_run": len(requests),
        "strategy": cfg.strategy,
    }


def first_error_rate(ds, task) -> float:
    hits = total = 0
    for r in ds:
        truth = task.first_error(r["expression"], r["completions"])
        if r["seed_outcome"] == 0.0 and truth is not None:
            predicted = next((h for h, v in enumerate(r["labels"]) if v is not None and v <= 0.0), None)
            hits += predicted == truth
            total += 1
    return hits / max(1, total)


def naive_speedup(policy: HFPolicy, task, args) -> dict:
    """The labeler's prefixes/s over the per-prefix loop's, both labeling the same problems in a repetition."""
    model, tok = policy.model, policy.tokenizer
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

    # Their seed traces differ, so rates (prefixes/s) are compared.
    times = interleave({"naive_loop": naive_arm, "labeler": labeler_arm}, args.reps, args.warmup, log=print)
    rates = {k: [n / t for n, t in zip(prefixes[k][args.warmup :], times[k])] for k in times}
    speedup = ratio_summary(rates["labeler"], rates["naive_loop"], 2)
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(
        f"prefixes/s: naive loop {med['naive_loop']:.1f}, labeler {med['labeler']:.1f}; speedup median "
        f"{speedup['median']} [{speedup['min']}, {speedup['max']}]"
    )
    return {
        "baseline": "per-prefix generate(num_return_sequences=n_mc) loop",
        "naive_prefixes_per_s": round(med["naive_loop"], 2),
        "labeler_prefixes_per_s": round(med["labeler"], 2),
        "speedup": speedup,
    }


def strategy_rollouts(policy: HFPolicy, task, args) -> dict:
    """Rollouts spent by first-pit vs all-prefix labeling on one set of problems (counts, not timing)."""
    data = task.problems_dataset(64, seed=123)
    runs = {}
    for strategy in ("all", "first_pit"):
        cfg = MCLabelConfig(n_cov=args.n_cov, n_mc=args.n_mc, strategy=strategy, show_progress=False, shard_size=64)
        labeler = MCLabeler(policy, task.grader, cfg)
        ds = labeler.label(data)
        runs[strategy] = {"rollouts": labeler.last_metadata["rollouts"], "accuracy": first_error_rate(ds, task)}
    print(
        f"first-pit: {runs['first_pit']['rollouts']} rollouts, "
        f"first-error accuracy {runs['first_pit']['accuracy']:.3f}; "
        f"all prefixes: {runs['all']['rollouts']} rollouts, {runs['all']['accuracy']:.3f}"
    )
    return {
        "rollouts_first_pit": runs["first_pit"]["rollouts"],
        "rollouts_all_prefixes": runs["all"]["rollouts"],
        "first_error_accuracy_first_pit": round(runs["first_pit"]["accuracy"], 3),
        "first_error_accuracy_all_prefixes": round(runs["all"]["accuracy"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=32, help="problems per repetition")
    parser.add_argument("--n_cov", type=int, default=2)
    parser.add_argument("--n_mc", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the naive-loop comparison")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--throughput_reps", type=int, default=7, help="repetitions of the throughput comparison")
    parser.add_argument("--strategy", default="first_pit", help="labeling strategy of the throughput comparison")
    parser.add_argument("--batch_size", type=int, default=256, help="HFPolicy rows per generate batch")
    parser.add_argument(
        "--only_throughput", action="store_true", help="measure throughput_fraction alone (no naive loop, no counts)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default 2; 1 on a machine other jobs keep busy)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        # Two threads on two cores that other jobs use spin-wait: a decode step of this model then takes 10x longer.
        torch.set_num_threads(args.threads)
    task = ArithmeticTask()
    path = arithmetic_policy_dir()
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(path)
    policy = HFPolicy(model, tok, task.step_format, max_new_tokens=64, batch_size=args.batch_size)
    result: dict = {"benchmark": "labeling", "n_mc": args.n_mc, "n_cov": args.n_cov, "problems": args.problems}
    result["torch_threads"] = torch.get_num_threads()
    if not args.only_throughput:
        result.update(naive_speedup(policy, task, args))

    # Labeling vs raw batched generation of the same tokens (default: the paper's first-pit strategy, several rounds).
    cfg = MCLabelConfig(
        n_cov=args.n_cov,
        n_mc=args.n_mc,
        strategy=args.strategy,
        show_progress=False,
        shard_size=args.problems,
        seed=0,
    )
    problems = task.problems_dataset(args.problems, seed=2000)
    tp = throughput_fraction(policy, task, problems, cfg, args.throughput_reps, args.warmup)
    frac = tp.pop("throughput_fraction")
    print(
        f"tokens/s: labeler {tp['labeler_tokens_per_s']}, raw batched generate {tp['raw_tokens_per_s']}; "
        f"throughput fraction median {frac['median']} [{frac['min']}, {frac['max']}]"
    )
    result.update(
        {
            "throughput_fraction": frac["median"],
            "throughput_fraction_spread": frac,
            "throughput_baseline": "the same requests as one plain batched HFPolicy.generate call",
            "throughput": tp,
        }
    )
    if not args.only_throughput:
        result.update(strategy_rollouts(policy, task, args))
    emit(result)


if __name__ == "__main__":
    main()
