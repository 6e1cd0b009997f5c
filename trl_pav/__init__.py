"""trl_pav: process advantage verifiers (arXiv 2410.08146) on top of Hugging Face TRL.

Example:
    >>> import torch
    >>> from trl_pav import StepFormat, prover_advantages
    >>> StepFormat().split("2*3=6\\nA:6")
    ['2*3=6', 'A:6']
    >>> prover_advantages(torch.tensor([0.2, 0.5, 1.0]), k=4)
    tensor([0.3471, 0.0625])
"""

from . import _quiet  # noqa: F401  (first: filters an import-time notice of a dependency)
from .data import REQUIRED_COLUMNS, TARGETS, StepwiseDataError, from_math_shepherd, from_trl_stepwise, validate_stepwise
from .datasets_io import load_problems
from .distributed import Lockstep
from .generation import Generation, GenerationGroup, GenerationRequest, HFPolicy, Policy
from .grading import (
    ExactMatchGrader,
    Grader,
    GradingWorkerError,
    MathVerifyGrader,
    extract_answer,
    extract_boxed,
    grade_batch,
)
from .hub import labels_dataset_card, pav_model_card
from .labeling import (
    LabelingConfigMismatch,
    MCLabelConfig,
    MCLabeler,
    labeling_settings,
    load_labels,
    validate_problems,
)
from .mc_values import MCScoringStats, MCStepScorer
from .metrics import best_first_error_threshold, first_error_accuracy, step_error_metrics, verifier_metrics
from .modeling import PAVMetadata, PAVVerifier, StepScorer, check_finite_weights
from .prm_adapters import MathShepherdPRM, PublicPRM, QwenMathPRM, RLHFlowPRM, load_public_prm
from .prover_lookahead import LookaheadSelection, ProverLookahead, ProverLookaheadConfig, lookahead_provers
from .prover_selection import ProverCandidate, ProverRanking, ProverSelectionConfig, select_prover
from .reward_funcs import scorer_reward_func
from .step_eval import (
    arithmetic_step_errors,
    evaluate_step_errors,
    from_stepwise_labels,
    load_champ,
    validate_step_errors,
)
from .steps import StepFormat, TokenizedTrace, token_positions, tokenize_trace
from .tokenization import build_char_tokenizer, load_tokenizer, prompt_token_ids
from .trainers import PAVRewardConfig, PAVRewardTrainer
from .values import (
    best_of_k,
    best_of_k_unbiased,
    broadcast_step_values,
    class_balanced_bce,
    class_weights,
    dense_advantages,
    distinguishability,
    effective_reward,
    expected_prover_advantage,
    gae,
    grouped_pairwise_loss,
    kl_penalty,
    leave_one_out_advantages,
    ppo_reward_stream,
    prover_advantages,
    prover_alignment,
    prover_score,
    prover_values,
    rewards_to_go,
    step_advantages,
    whiten,
)

__version__ = "0.1.0"

__all__ = [
    "REQUIRED_COLUMNS",
    "TARGETS",
    "ExactMatchGrader",
    "Generation",
    "GenerationGroup",
    "GenerationRequest",
    "Grader",
    "GradingWorkerError",
    "HFPolicy",
    "LabelingConfigMismatch",
    "Lockstep",
    "LookaheadSelection",
    "MCLabelConfig",
    "MCLabeler",
    "MCScoringStats",
    "MCStepScorer",
    "MathShepherdPRM",
    "MathVerifyGrader",
    "PAVMetadata",
    "PAVRewardConfig",
    "PAVRewardTrainer",
    "PAVVerifier",
    "Policy",
    "ProverCandidate",
    "ProverLookahead",
    "ProverLookaheadConfig",
    "ProverRanking",
    "ProverSelectionConfig",
    "PublicPRM",
    "QwenMathPRM",
    "RLHFlowPRM",
    "StepFormat",
    "StepScorer",
    "StepwiseDataError",
    "TokenizedTrace",
    "__version__",
    "arithmetic_step_errors",
    "best_first_error_threshold",
    "best_of_k",
    "best_of_k_unbiased",
    "broadcast_step_values",
    "build_char_tokenizer",
    "check_finite_weights",
    "class_balanced_bce",
    "class_weights",
    "dense_advantages",
    "distinguishability",
    "effective_reward",
    "evaluate_step_errors",
    "expected_prover_advantage",
    "extract_answer",
    "extract_boxed",
    "first_error_accuracy",
    "from_math_shepherd",
    "from_stepwise_labels",
    "from_trl_stepwise",
    "gae",
    "grade_batch",
    "grouped_pairwise_loss",
    "kl_penalty",
    "labeling_settings",
    "labels_dataset_card",
    "leave_one_out_advantages",
    "load_champ",
    "load_labels",
    "load_problems",
    "load_public_prm",
    "load_tokenizer",
    "lookahead_provers",
    "pav_model_card",
    "ppo_reward_stream",
    "prompt_token_ids",
    "prover_advantages",
    "prover_alignment",
    "prover_score",
    "prover_values",
    "rewards_to_go",
    "scorer_reward_func",
    "select_prover",
    "step_advantages",
    "step_error_metrics",
    "token_positions",
    "tokenize_trace",
    "validate_problems",
    "validate_step_errors",
    "validate_stepwise",
    "verifier_metrics",
    "whiten",
]
