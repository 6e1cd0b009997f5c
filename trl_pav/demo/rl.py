"""Arithmetic experiment, part 3: online RL. Outcome-only GRPO against PAV-GRPO (dense Bo4 prover advantages,
α = `rl_alpha`), the latter with the learned PAV and with exact checker-derived values, over several seeds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..evaluation import AccuracyCurveCallback, GeneratedTokensCallback, iterations_to_reach
from ..experiments.arithmetic_verifiers import generation_limits, trace_limits
from ..mc_values import MCStepScorer
from .common import cached_json, rl_args, seed_summary, t_interval

__all__ = ["run", "summarize_arms"]


def run(cfg, out: Path, progress, arith: dict) -> dict:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from ..evaluation import sampled_accuracy
    from ..generation import HFPolicy
    from ..modeling import PAVVerifier
    from ..trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task, tok = arith["task"], arith["policy"].tokenizer
    pools = arith["pools"]  # disjoint from each other and from every other stage's problems
    train, held = pools["rl_train"], pools["rl_eval"]
    train_ds = Dataset.from_dict({"prompt": [p.prompt for p in train], "gold": [p.gold for p in train]})

    def evaluate(model) -> float:
        pol = HFPolicy(model, tok, task.step_format, batch_size=256, **generation_limits(task))
        return sampled_accuracy(pol, [p.prompt for p in held], [p.gold for p in held], task.grader, seed=7)

    completion_tokens = trace_limits(task)["rl_completion_tokens"]
    learned = f"pav_bo{cfg.prover_k}"
    arms = {
        "outcome": None,
        learned: lambda seed: PAVVerifier.from_pretrained(arith["verifiers"]["pav"]),
        f"pav_bo{cfg.prover_k}_exact": lambda seed: arith["checker"],
    }
    for n in cfg.rl_mc_rollouts:  # Bo-K of the current policy from n rollouts per state, online (no verifier)
        k = min(cfg.prover_k, n)
        arms[f"mc{n}_bo{k}"] = lambda seed, n=n, k=k: MCStepScorer(
            None, task.grader, n_rollouts=n, prover_k=k, seed=1000 + seed
        )
    curves: dict[str, list[list[tuple[int, float]]]] = {arm: [] for arm in arms}
    tokens: dict[str, list[list[tuple[int, int, int]]]] = {arm: [] for arm in arms}
    for arm, build in arms.items():
        for seed in cfg.rl_seeds:
            progress(f"arithmetic RL arm {arm}, seed {seed}: {cfg.rl_steps} GRPO steps")
            key = {
                "arm": arm,
                "seed": seed,
                "cfg": [cfg.rl_steps, cfg.rl_alpha, cfg.prover_k, cfg.rl_learning_rate, cfg.rl_eval_every],
                "eval": cfg.rl_eval_problems,
                "pools": pools.spec("rl_eval", "rl_train"),
                "policy": (Path(arith["policy_dir"]) / ".done").read_text(),
                "checker": arith["checker_spec"],
                "record": "points+tokens",
            }
            if arm == learned:  # only this arm depends on the learned PAV
                key["verifier"] = (Path(arith["verifiers"]["pav"]) / ".done").read_text()

            def train_arm(arm=arm, build=build, seed=seed):
                curve = AccuracyCurveCallback(evaluate, cfg.rl_eval_every)
                spent = GeneratedTokensCallback()
                run_dir = out / "arithmetic" / "rl" / f"{arm}-{seed}"
                common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve, spent]}
                if build is None:
                    args = rl_args(
                        GRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        scale_rewards="none",
                        learning_rate=cfg.rl_learning_rate,
                        max_completion_length=completion_tokens,
                    )
                    trainer = GRPOTrainer(str(arith["policy_dir"]), [grader_reward(task.grader)], args=args, **common)
                else:
                    verifier = build(seed)
                    args = rl_args(
                        PAVGRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        pav_alpha=cfg.rl_alpha,
                        # Rollout values are already the prover's (Bo-K applied by the scorer).
                        prover_k=None if isinstance(verifier, MCStepScorer) else cfg.prover_k,
                        learning_rate=cfg.rl_learning_rate,
                        max_completion_length=completion_tokens,
                        step_separator=task.step_format.separator,
                    )
                    trainer = PAVGRPOTrainer(
                        str(arith["policy_dir"]), [grader_reward(task.grader)], verifier=verifier, args=args, **common
                    )
                trainer.remove_callback(PrinterCallback)  # progress goes through the demo's log, not stdout
                trainer.train()
                shutil.rmtree(run_dir, ignore_errors=True)
                return {"points": curve.points, "tokens": spent.per_step}

            record = cached_json(out / "arithmetic" / "rl" / f"{arm}-{seed}.json", key, train_arm)
            curves[arm].append([tuple(p) for p in record["points"]])
            tokens[arm].append([tuple(t) for t in record["tokens"]])
    summary = summarize_arms(curves, "outcome", f"pav_bo{cfg.prover_k}")
    # What each arm generated (policy completions + rollouts; learned and exact verifiers generate none).
    summary["generated_tokens"] = {
        arm: {
            "policy": float(np.mean([t[-1][1] for t in runs if t])),
            "rollouts": float(np.mean([t[-1][2] for t in runs if t])),
        }
        for arm, runs in tokens.items()
        if any(runs)
    }
    return summary


def summarize_arms(curves: dict[str, list[list[tuple[int, float]]]], baseline: str, method: str) -> dict:
    """Mean curves with their spread over seeds, final accuracies with t-intervals, the paired (same-seed) gain of
    every arm over `baseline`, and sample efficiency: the iterations the baseline's mean curve needs to first reach
    its final accuracy, over the iterations each arm's mean curve needs to reach it."""
    mean = {arm: seed_summary(runs) for arm, runs in curves.items()}
    base_final = mean[baseline][-1]["accuracy"]
    finals = {arm: [run[-1][1] for run in runs] for arm, runs in curves.items()}
    gains = {}
    for arm in curves:
        if arm == baseline:
            continue
        diffs = [a - b for a, b in zip(finals[arm], finals[baseline])]
        est, lo, hi = t_interval(diffs)
        gains[arm] = {"estimate": est, "low": lo, "high": hi, "per_seed": diffs}
    reach = {arm: iterations_to_reach([(p["step"], p["accuracy"]) for p in m], base_final) for arm, m in mean.items()}
    base_steps = reach[baseline] or mean[baseline][-1]["step"]
    ratio = {arm: (base_steps / r if r else None) for arm, r in reach.items()}
    return {
        "curves": mean,
        "final_accuracy": {arm: t_interval(v)[0] for arm, v in finals.items()},
        "final_accuracy_interval": {arm: t_interval(v) for arm, v in finals.items()},
        "gain_over_outcome": gains,
        "accuracy_gain": gains[method]["estimate"],
        "accuracy_gain_interval": [gains[method]["low"], gains[method]["high"]],
        "steps_to_outcome_final": reach,
        "sample_efficiency_ratio": ratio[method],
        "sample_efficiency_ratios": ratio,
        "seeds": len(next(iter(curves.values()))),
    }
