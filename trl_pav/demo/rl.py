"""Arithmetic experiment, part 3: online RL. Outcome-only GRPO against PAV-GRPO (dense Bo4 prover advantages,
α = `rl_alpha`), the latter with the learned PAV and with exact checker-derived values, over several seeds."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..evaluation import AccuracyCurveCallback, iterations_to_reach
from .arithmetic import checker_scorer
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
        pol = HFPolicy(model, tok, task.step_format, max_new_tokens=64, batch_size=256)
        return sampled_accuracy(pol, [p.prompt for p in held], [p.gold for p in held], task.grader, seed=7)

    learned = f"pav_bo{cfg.prover_k}"
    arms = {
        "outcome": None,
        learned: lambda: PAVVerifier.from_pretrained(arith["verifiers"]["pav"]),
        f"pav_bo{cfg.prover_k}_exact": lambda: checker_scorer(task, arith["step_accuracy"]),
    }
    curves: dict[str, list[list[tuple[int, float]]]] = {arm: [] for arm in arms}
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
                "step_accuracy": arith["step_accuracy"],
            }
            if arm == learned:  # only this arm depends on the learned PAV
                key["verifier"] = (Path(arith["verifiers"]["pav"]) / ".done").read_text()

            def train_arm(arm=arm, build=build, seed=seed):
                curve = AccuracyCurveCallback(evaluate, cfg.rl_eval_every)
                run_dir = out / "arithmetic" / "rl" / f"{arm}-{seed}"
                common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve]}
                if build is None:
                    args = rl_args(
                        GRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        scale_rewards="none",
                        learning_rate=cfg.rl_learning_rate,
                    )
                    trainer = GRPOTrainer(str(arith["policy_dir"]), [grader_reward(task.grader)], args=args, **common)
                else:
                    args = rl_args(
                        PAVGRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        pav_alpha=cfg.rl_alpha,
                        prover_k=cfg.prover_k,
                        learning_rate=cfg.rl_learning_rate,
                    )
                    trainer = PAVGRPOTrainer(
                        str(arith["policy_dir"]), [grader_reward(task.grader)], verifier=build(), args=args, **common
                    )
                trainer.remove_callback(PrinterCallback)  # progress goes through the demo's log, not stdout
                trainer.train()
                shutil.rmtree(run_dir, ignore_errors=True)
                return curve.points

            points = cached_json(out / "arithmetic" / "rl" / f"{arm}-{seed}.json", key, train_arm)
            curves[arm].append([tuple(p) for p in points])
    return summarize_arms(curves, "outcome", f"pav_bo{cfg.prover_k}")


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
