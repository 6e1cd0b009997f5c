"""Configuration of `PAVGRPOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig

from .pav_rl import PAVRLFields

__all__ = ["PAVGRPOConfig"]


@dataclass
class PAVGRPOConfig(GRPOConfig, PAVRLFields):
    r"""Configuration of [`PAVGRPOTrainer`]: TRL's `GRPOConfig` plus the dense-reward fields of `PAVRLFields`.

    Parameters (besides `GRPOConfig`'s):
        verifier_model_name_or_path, pav_alpha, prover_k, process_reward, process_clip, process_normalize,
        step_separator, verifier_batch_size: see `PAVRLFields`.

    Losses that assume one advantage per sequence (`loss_type="vespo"`, `"luspo"`, and
    `importance_sampling_level="sequence"`) are rejected.
    """

    def __post_init__(self):
        self._check_pav_fields()
        super().__post_init__()
