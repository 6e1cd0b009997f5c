"""Configuration of `PAVGRPOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from .pav_rl import PAVRLFields

__all__ = ["PAVGRPOConfig"]


@dataclass
class PAVGRPOConfig(GRPOConfig, PAVRLFields):
    r"""Configuration of [`PAVGRPOTrainer`]: TRL's `GRPOConfig` plus the dense-reward fields of `PAVRLFields`.

    Parameters (besides `GRPOConfig`'s):
        verifier_model_name_or_path, pav_alpha, prover_k, process_reward, process_clip, process_normalize,
        step_separator, verifier_batch_size: see `PAVRLFields`.

        scale_rewards (`str`, *optional*, defaults to `"none"`):
            Unlike GRPO's default (`"group"`), rewards are not divided by their group's std, so the outcome part is
            `(G-1)/G` times the leave-one-out advantage and sits on the same scale as the process term.

    Losses that assume one advantage per sequence (`loss_type="vespo"`, `"luspo"`, and
    `importance_sampling_level="sequence"`) are rejected.
    """

    scale_rewards: str = field(default="none", metadata={"help": "'none' (default here), 'group' or 'batch'."})

    def __post_init__(self):
        self._check_pav_fields()
        super().__post_init__()
