"""TRL-style config/trainer pairs."""

from .pav_grpo_config import PAVGRPOConfig
from .pav_grpo_trainer import PAVGRPOTrainer
from .pav_ppo_config import PAVPPOConfig
from .pav_ppo_trainer import PAVPPOTrainer, ValueHead, load_critic_state
from .pav_reward_config import PAVRewardConfig
from .pav_reward_trainer import (
    GroupedRowSampler,
    NonFiniteGradientCheck,
    PAVRewardTrainer,
    StepwiseCollator,
    tokenize_stepwise_row,
)
from .pav_rl import PAVRLFields, grader_reward, locate_steps
from .pav_rloo_config import PAVRLOOConfig
from .pav_rloo_trainer import PAVRLOOTrainer

__all__ = [
    "GroupedRowSampler",
    "NonFiniteGradientCheck",
    "PAVGRPOConfig",
    "PAVGRPOTrainer",
    "PAVPPOConfig",
    "PAVPPOTrainer",
    "PAVRLFields",
    "PAVRLOOConfig",
    "PAVRLOOTrainer",
    "PAVRewardConfig",
    "PAVRewardTrainer",
    "StepwiseCollator",
    "ValueHead",
    "grader_reward",
    "load_critic_state",
    "locate_steps",
    "tokenize_stepwise_row",
]
