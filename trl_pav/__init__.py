"""trl_pav: process advantage verifiers (arXiv 2410.08146) on top of Hugging Face TRL.

Example:
    >>> import torch
    >>> from trl_pav import StepFormat, prover_advantages
    >>> StepFormat().split("2*3=6\\nA:6")
    ['2*3=6', 'A:6']
    >>> prover_advantages(torch.tensor([0.2, 0.5, 1.0]), k=4)
    tensor([0.3471, 0.0625])
"""

from .data import REQUIRED_COLUMNS, TARGETS, StepwiseDataError, from_math_shepherd, from_trl_stepwise, validate_stepwise
from .datasets_io import load_problems
from .distributed import Lockstep
from .generation import Generation, GenerationRequest, HFPolicy, Policy
from .grading import (
    ExactMatchGrader,
    Grader,
    GradingWorkerError,
    MathVerifyGrader,
    extract_answer,
    extract_boxed,
    grade_batch,
)
from .labeling import (
    LabelingConfigMismatch,
    MCLabelConfig,
    MCLabeler,
    labeling_settings,
    load_labels,
    validate_problems,
)
from .metrics import first_error_accuracy, verifier_metrics
from .modeling import PAVMetadata, PAVVerifier, StepScorer, check_finite_weights
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
    leave_one_out_advantages,
    prover_advantages,
    prover_alignment,
    prover_values,
    step_advantages,
)

__version__ = "0.1.0"

__all__ = [
    "REQUIRED_COLUMNS",
    "TARGETS",
    "ExactMatchGrader",
    "Generation",
    "GenerationRequest",
    "Grader",
    "GradingWorkerError",
    "HFPolicy",
    "LabelingConfigMismatch",
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
    "check_finite_weights",
    "class_balanced_bce",
    "dense_advantages",
    "distinguishability",
    "effective_reward",
    "extract_answer",
    "extract_boxed",
    "first_error_accuracy",
    "from_math_shepherd",
    "from_trl_stepwise",
    "grade_batch",
    "labeling_settings",
    "leave_one_out_advantages",
    "load_labels",
    "load_problems",
    "load_tokenizer",
    "prover_advantages",
    "prover_alignment",
    "prover_values",
    "step_advantages",
    "token_positions",
    "tokenize_trace",
    "validate_problems",
    "validate_stepwise",
    "verifier_metrics",
]
