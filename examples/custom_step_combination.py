"""Subclassing a PAV trainer to change how step rewards combine with the outcome advantage.

Here: only steps with negative progress are penalised (a "pessimistic" process term), and the outcome advantage is
kept as is. Run on the CPU with a tiny random policy, and the arithmetic task's exact values as the verifier:

    python examples/custom_step_combination.py
"""

import tempfile

import torch
from datasets import Dataset

from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_causal_lm
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward
from trl_pav.values import dense_advantages


class PessimisticPAVTrainer(PAVGRPOTrainer):
    def combine_advantages(self, outcome_advantages, process_terms, token_step, completion_mask):
        negative_only = process_terms.clamp(max=0.0)
        return dense_advantages(outcome_advantages, negative_only, token_step, self.args.pav_alpha, completion_mask)


def main() -> None:
    task = ArithmeticTask()
    tok = task.tokenizer()
    policy_dir = tempfile.mkdtemp()
    tiny_causal_lm(tok).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    probs = task.sample_problems(64, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    args = PAVGRPOConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=2,
        logging_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=32,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        pav_alpha=3.0,
        prover_k=4,
    )
    trainer = PessimisticPAVTrainer(
        policy_dir,
        [grader_reward(task.grader)],
        verifier=NoisyArithmeticPolicy(task, 0.2),
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("pav/")})


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
