"""Subclassing `PAVPPOTrainer` to change where step rewards enter the per-token reward stream.

With `process_credit="reward"` each step's process term `α·Â^μ_h` is paid as a reward on the step's last token (the
classic RLHF layout). Here it is spread evenly over the step's tokens instead; the KL terms and the outcome reward stay
as they are. (With the default `process_credit="advantage"` the terms go to the advantages instead: override
`combine_advantages` to change that.) Run on the CPU
with a tiny random policy on the planted-subsequence task, its exact γ=10 prover values as the verifier:

    python examples/ppo_custom_rewards.py
"""

import tempfile

import torch
from datasets import Dataset

from trl_pav.tasks import PlantedOracleScorer, PlantedTask
from trl_pav.testing import tiny_causal_lm
from trl_pav.trainers import PAVPPOConfig, PAVPPOTrainer, grader_reward
from trl_pav.values import broadcast_step_values, ppo_reward_stream


class SpreadStepRewardPPOTrainer(PAVPPOTrainer):
    def combine_rewards(self, outcome_rewards, process_terms, token_step, completion_mask, kl):
        # KL terms and the outcome, without step rewards (alpha = 0)...
        rewards = ppo_reward_stream(outcome_rewards, process_terms, token_step, completion_mask, 0.0, kl, self.beta)
        # ...plus each step's term divided among its tokens.
        in_step = ((token_step >= 0) & completion_mask.bool()).to(rewards.dtype)
        counts = torch.zeros_like(process_terms).scatter_add_(1, token_step.clamp(min=0), in_step)
        per_token = broadcast_step_values(process_terms / counts.clamp(min=1), token_step) * in_step
        return rewards + self.args.pav_alpha * per_token


def main() -> None:
    task = PlantedTask()
    tok = task.tokenizer()
    policy_dir = tempfile.mkdtemp()
    tiny_causal_lm(tok).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    args = PAVPPOConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=24,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        pav_alpha=3.0,
        prover_k=1,
        process_credit="reward",
        lam=0.95,  # with lam = 1 step rewards in the return telescope (see PAVPPOConfig.process_credit)
    )
    trainer = SpreadStepRewardPPOTrainer(
        policy_dir,
        [grader_reward(task.grader)],
        verifier=PlantedOracleScorer(task, gamma=10.0),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [task.prompt] * 64, "gold": [""] * 64}),
        processing_class=tok,
    )
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith(("pav/", "ppo/"))})


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
