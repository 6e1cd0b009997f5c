"""trl_pav: process advantage verifiers (arXiv 2410.08146) on top of Hugging Face TRL.

Example:
    >>> import torch
    >>> from trl_pav import StepFormat, prover_advantages
    >>> StepFormat().split("2*3=6\\nA:6")
    ['2*3=6', 'A:6']
    >>> prover_advantages(torch.tensor([0.2, 0.5, 1.0]), k=4)
    tensor([0.3471, 0.0625])
"""

from .data import REQUIRED_COLUMNS, StepwiseDataError, from_math_shepherd, from_trl_stepwise, validate_stepwise
from .datasets_io import load_problems
from .distributed import Lockstep
from .generation import Generation, GenerationRequest, HFPolicy, Policy
from .grading import ExactMatchGrader, Grader, MathVerifyGrader, extract_answer, extract_boxed, grade_batch
from .labeling import MCLabelConfig, MCLabeler, load_labels
from .metrics import first_error_accuracy, verifier_metrics
from .modeling import PAVMetadata, PAVVerifier, StepScorer
from .steps import StepFormat, TokenizedTrace, token_positions, tokenize_trace
from .tokenization import build_char_tokenizer, load_tokenizer
from .trainers import PAVRewardConfig, PAVRewardTrainer
from .values import (
    best_of_k,
    broadcast_step_values,
    class_balanced_bce,
    dense_advantages,
    distinguishability,
    effective_reward,
    gae,
    kl_penalty,
    leave_one_out_advantages,
    ppo_reward_stream,
    prover_advantages,
    prover_alignment,
    prover_values,
    step_advantages,
    whiten,
)

__version__ = "0.1.0"

__all__ = [
    "REQUIRED_COLUMNS",
    "ExactMatchGrader",
    "Generation",
    "GenerationRequest",
    "Grader",
    "HFPolicy",
    "Lockstep",
    "MCLabelConfig",
    "MCLabeler",
    "MathVerifyGrader",
    "PAVMetadata",
    "PAVRewardConfig",
    "PAVRewardTrainer",
    "PAVVerifier",
    "Policy",
    "StepFormat",
    "StepScorer",
    "StepwiseDataError",
    "TokenizedTrace",
    "__version__",
    "best_of_k",
    "broadcast_step_values",
    "build_char_tokenizer",
    "class_balanced_bce",
    "dense_advantages",
    "distinguishability",
    "effective_reward",
    "extract_answer",
    "extract_boxed",
    "first_error_accuracy",
    "from_math_shepherd",
    "from_trl_stepwise",
    "gae",
    "grade_batch",
    "kl_penalty",
    "leave_one_out_advantages",
    "load_labels",
    "load_problems",
    "load_tokenizer",
    "ppo_reward_stream",
    "prover_advantages",
    "prover_alignment",
    "prover_values",
    "step_advantages",
    "token_positions",
    "tokenize_trace",
    "validate_stepwise",
    "verifier_metrics",
    "whiten",
]
