"""Configuration of `PAVRLOOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass

from trl import RLOOConfig

from .pav_rl import PAVRLFields

__all__ = ["PAVRLOOConfig"]


@dataclass
class PAVRLOOConfig(RLOOConfig, PAVRLFields):
    r"""Configuration of [`PAVRLOOTrainer`]: TRL's `RLOOConfig` plus the dense-reward fields of `PAVRLFields`.

    Parameters (besides `RLOOConfig`'s):
        verifier_model_name_or_path, pav_alpha, prover_k, process_reward, process_clip, process_normalize,
        step_separator, verifier_batch_size: see `PAVRLFields`.

    As in RLOO, the KL penalty (`beta`) is folded into each sequence's reward before the leave-one-out baseline,
    so it is part of the outcome advantage.
    """

    def __post_init__(self):
        self._check_pav_fields()
        super().__post_init__()
