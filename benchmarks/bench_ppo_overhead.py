"""Step time of PAV-PPO against plain PPO (the verifier's overhead) and of plain PPO against GRPO (the critic's),
same policy, same generation batch.

One step = generate and score a generation batch of 32 completions (8 per prompt, up to 48 tokens), then one optimizer
update on it, for a 1M-parameter policy and a 1M-parameter verifier:
`PAVPPOTrainer` with a verifier (`pav_alpha=3`), `PAVPPOTrainer` outcome-only (plain PPO: critic, KL reward, GAE) and
TRL's `GRPOTrainer`. The learning rate is 0 so that every arm keeps the same policy: with the same seed per repetition
each arm samples the same completions, and the work differs only by what the trainer adds. Arms are interleaved over
repetitions after a warm-up; ratios are per repetition, reported as median and interquartile range.

Final line: {"benchmark": "ppo_overhead", "pav_ppo_over_ppo": ..., "ppo_over_grpo": ...}.
"""

from __future__ import annotations

import os
import statistics
import tempfile

from _common import RL_STEP_ARGS, ROOT, emit, ready_for_steps, rl_step
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier
from trl_pav.trainers import PAVPPOConfig, PAVPPOTrainer, grader_reward

WARMUP, REPS = (int(x) for x in os.environ.get("BENCH_REPS", "1,6").split(","))
COMMON = RL_STEP_ARGS


def build(kind: str, policy_dir: str, data: Dataset, tok, verifier):
    reward = [grader_reward(ArithmeticTask().grader)]
    out = tempfile.mkdtemp()
    if kind == "grpo":
        args = GRPOConfig(output_dir=out, scale_rewards="none", **COMMON)
        trainer = GRPOTrainer(policy_dir, reward, args=args, train_dataset=data, processing_class=tok)
    else:
        pav = kind == "pav_ppo"
        args = PAVPPOConfig(output_dir=out, num_iterations=1, pav_alpha=3.0 if pav else 0.0, prover_k=4, **COMMON)
        trainer = PAVPPOTrainer(
            policy_dir,
            reward,
            verifier=verifier if pav else None,
            args=args,
            train_dataset=data,
            processing_class=tok,
        )
    return ready_for_steps(trainer)


def summary(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4)
    return {"median": round(statistics.median(xs), 3), "iqr": [round(q[0], 3), round(q[2], 3)]}


def main() -> None:
    task = ArithmeticTask()
    tok = task.tokenizer()
    # A randomly initialised policy of the demo's size (1M parameters): training one costs minutes on 2 busy cores and
    # timing does not need rewards. It rarely stops early, so every arm generates full-length completions.
    policy_dir = ROOT / "outputs" / "bench" / "ppo-overhead-policy"
    if not (policy_dir / "config.json").exists():
        tiny_causal_lm(tok, seed=0, hidden_size=128, num_layers=4, max_positions=128).save_pretrained(policy_dir)
        tok.save_pretrained(policy_dir)
    policy_dir = str(policy_dir)
    probs = task.sample_problems(64, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    verifier = PAVVerifier(
        tiny_token_classifier(tok, hidden_size=128, num_layers=4, max_positions=128), tok, PAVMetadata()
    )
    arms = {kind: build(kind, policy_dir, data, tok, verifier) for kind in ("pav_ppo", "ppo", "grpo")}
    times = {kind: [] for kind in arms}
    for rep in range(WARMUP + REPS):
        start = (rep * 4) % len(probs)
        rows = [data[(start + i) % len(probs)] for i in range(4) for _ in range(8)]  # 4 prompts x 8 completions
        for kind, trainer in arms.items():
            t = rl_step(trainer, rows, seed=rep)
            print(f"rep {rep} {kind}: {t:.2f} s", flush=True)
            if rep >= WARMUP:
                times[kind].append(t)
    pav_over_ppo = [a / b for a, b in zip(times["pav_ppo"], times["ppo"])]
    ppo_over_grpo = [a / b for a, b in zip(times["ppo"], times["grpo"])]
    medians = {kind: statistics.median(ts) for kind, ts in times.items()}
    print("median step: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()))
    emit(
        {
            "benchmark": "ppo_overhead",
            "baseline": "plain PPO (PAVPPOTrainer, pav_alpha=0) and trl.GRPOTrainer; same policy, batch and seeds",
            "repetitions": REPS,
            "step_s": {k: round(v, 4) for k, v in medians.items()},
            "pav_ppo_over_ppo": summary(pav_over_ppo),
            "ppo_over_grpo": summary(ppo_over_grpo),
        }
    )


if __name__ == "__main__":
    main()
