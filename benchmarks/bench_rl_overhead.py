"""Time per training step of PAVGRPOTrainer vs plain GRPOTrainer, same policy, batch and generation settings.

Final line: {"benchmark": "rl_overhead", "overhead": ...}.
"""

from __future__ import annotations

import tempfile
import time

from _common import arithmetic_policy_dir, emit
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_token_classifier
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

STEPS, WARMUP = 24, 4


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def run(cls, trainer_cls, policy_dir, data, tok, **extra) -> float:
    timer = StepTimer()
    args = cls(
        output_dir=tempfile.mkdtemp(),
        max_steps=STEPS,
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=48,
        learning_rate=1e-4,
        beta=0.001,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
        scale_rewards="none",
        **{k: v for k, v in extra.items() if k in ("pav_alpha", "prover_k")},
    )
    kwargs = {"verifier": extra["verifier"]} if "verifier" in extra else {}
    trainer = trainer_cls(
        policy_dir,
        [grader_reward(ArithmeticTask().grader)],
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[timer],
        **kwargs,
    )
    trainer.train()
    times = sorted(timer.times[WARMUP:])
    return times[len(times) // 2]  # median step time


def main() -> None:
    task = ArithmeticTask()
    tok = task.tokenizer()
    policy_dir = str(arithmetic_policy_dir())  # a trained policy: both trainers see nonzero rewards and update
    probs = task.sample_problems(2000, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    verifier = PAVVerifier(
        tiny_token_classifier(tok, hidden_size=128, num_layers=4, max_positions=128), tok, PAVMetadata()
    )
    plain = run(GRPOConfig, GRPOTrainer, policy_dir, data, tok)
    pav = run(PAVGRPOConfig, PAVGRPOTrainer, policy_dir, data, tok, verifier=verifier, pav_alpha=3.0, prover_k=4)
    print(f"median step: GRPOTrainer {plain * 1000:.0f} ms, PAVGRPOTrainer {pav * 1000:.0f} ms")
    emit(
        {
            "benchmark": "rl_overhead",
            "baseline": "trl.GRPOTrainer, same policy/batch/generation",
            "grpo_step_s": round(plain, 4),
            "pav_grpo_step_s": round(pav, 4),
            "overhead": round(pav / plain, 3),
        }
    )


if __name__ == "__main__":
    main()
