"""Step time of PAVGRPOTrainer against plain GRPOTrainer: the verifier's overhead per RL step.

One step = generate and score a generation batch of 32 completions (8 per prompt, up to 48 tokens), then one optimizer
update on it, same policy, same batch and seeds for both arms; the PAV arm adds locating steps, the verifier's forward
and the dense advantages (1M-parameter policy and verifier). The learning rate is 0 so both arms keep the same policy
and sample the same completions. The arms are interleaved over repetitions after a warm-up; the overhead is the median
of per-repetition ratios with its spread.

Final line: {"benchmark": "rl_overhead", "overhead": {"median": ..., "min": ..., "max": ...}, ...}.
"""

from __future__ import annotations

import argparse
import tempfile

from _common import RL_STEP_ARGS, arithmetic_policy_dir, emit, interleave, ratio_summary, ready_for_steps, rl_step
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_token_classifier
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

COMMON = {**RL_STEP_ARGS, "scale_rewards": "none"}


def build(pav: bool, policy_dir: str, data: Dataset, tok, verifier):
    reward = [grader_reward(ArithmeticTask().grader)]
    common = {"args": None, "train_dataset": data, "processing_class": tok}
    if pav:
        common["args"] = PAVGRPOConfig(output_dir=tempfile.mkdtemp(), pav_alpha=3.0, prover_k=4, **COMMON)
        trainer = PAVGRPOTrainer(policy_dir, reward, verifier=verifier, **common)
    else:
        common["args"] = GRPOConfig(output_dir=tempfile.mkdtemp(), **COMMON)
        trainer = GRPOTrainer(policy_dir, reward, **common)
    return ready_for_steps(trainer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    task = ArithmeticTask()
    tok = task.tokenizer()
    policy_dir = str(arithmetic_policy_dir())  # a trained policy: completions end and hold steps, as in training
    probs = task.sample_problems(64, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    verifier = PAVVerifier(
        tiny_token_classifier(tok, hidden_size=128, num_layers=4, max_positions=128), tok, PAVMetadata()
    )
    trainers = {
        "grpo": build(False, policy_dir, data, tok, verifier),
        "pav_grpo": build(True, policy_dir, data, tok, verifier),
    }

    def batch(rep: int) -> list[dict]:
        start = (rep * 4) % len(probs)
        return [data[(start + i) % len(probs)] for i in range(4) for _ in range(8)]  # 4 prompts x 8 completions

    times = interleave(
        {name: (lambda rep, t=t: rl_step(t, batch(rep), seed=rep)) for name, t in trainers.items()},
        args.reps,
        args.warmup,
        log=print,
    )
    overhead = ratio_summary(times["pav_grpo"], times["grpo"])
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(
        f"median step: GRPOTrainer {med['grpo'] * 1000:.0f} ms, PAVGRPOTrainer {med['pav_grpo'] * 1000:.0f} ms; "
        f"overhead median {overhead['median']} [{overhead['min']}, {overhead['max']}]"
    )
    emit(
        {
            "benchmark": "rl_overhead",
            "baseline": "trl.GRPOTrainer, same policy/batch/generation seeds",
            "grpo_step_s": round(med["grpo"], 4),
            "pav_grpo_step_s": round(med["pav_grpo"], 4),
            "overhead": overhead,
        }
    )


if __name__ == "__main__":
    main()
