"""Plug a PAV from the Hub into GRPO with your own policy: dense per-step advantages, or a plain reward function.

`PAVGRPOTrainer` adds `α · A^μ` of each step to GRPO's outcome advantage (the paper's PAV-RL); `as_reward_func()`
turns the same verifier into an ordinary `reward_funcs` entry for any TRL trainer. Here a tiny random policy and a
tiny verifier saved to a folder stand in for your model and a Hub id (CPU, under a minute):

    python examples/grpo_with_hub_pav.py

With real models:

    trl-pav rl --model_name_or_path Qwen/Qwen2.5-Math-1.5B-Instruct --verifier_model_name_or_path you/your-pav \\
        --dataset_name my_problems.jsonl --pav_alpha 3.0 --output_dir outputs/pav-rl --bf16 true
"""

import tempfile

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward


def main() -> None:
    task = ArithmeticTask()
    tok = task.tokenizer()
    policy_dir, verifier_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    tiny_causal_lm(tok).save_pretrained(policy_dir)  # your policy
    tok.save_pretrained(policy_dir)
    PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(prover_k=4)).save_pretrained(verifier_dir)  # "you/pav"
    problems = task.sample_problems(16, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems], "gold": [p.gold for p in problems]})
    common = dict(
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=24,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )

    # 1. Dense process advantages (the paper's method).
    args = PAVGRPOConfig(
        output_dir=tempfile.mkdtemp(), verifier_model_name_or_path=verifier_dir, pav_alpha=3.0, **common
    )
    trainer = PAVGRPOTrainer(policy_dir, [grader_reward(task.grader)], args=args, train_dataset=data)
    trainer.train()
    print("PAV-GRPO:", {k: round(v, 4) for k, v in trainer.state.log_history[-2].items() if k.startswith("pav/")})

    # 2. The same verifier as a sequence-level reward function in TRL's own GRPOTrainer.
    verifier = PAVVerifier.from_pretrained(verifier_dir)
    reward_funcs = [grader_reward(task.grader), verifier.as_reward_func(mode="final")]
    plain = GRPOTrainer(
        policy_dir, reward_funcs, args=GRPOConfig(output_dir=tempfile.mkdtemp(), **common), train_dataset=data
    )
    plain.train()
    print("GRPO + PAV reward:", {k: v for k, v in plain.state.log_history[-2].items() if k.startswith("rewards/")})


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
