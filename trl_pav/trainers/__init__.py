"""TRL-style config/trainer pairs."""

from .pav_reward_config import PAVRewardConfig
from .pav_reward_trainer import PAVRewardTrainer, StepwiseCollator, tokenize_stepwise_row

__all__ = ["PAVRewardConfig", "PAVRewardTrainer", "StepwiseCollator", "tokenize_stepwise_row"]
