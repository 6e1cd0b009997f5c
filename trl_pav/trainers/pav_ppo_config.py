"""Configuration of `PAVPPOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from ..values import KL_ESTIMATORS
from .pav_rl import PAVRLFields

__all__ = ["PAVPPOConfig"]

CRITIC_BACKBONES = ("separate", "shared")
PROCESS_CREDITS = ("advantage", "reward")


@dataclass
class PAVPPOConfig(GRPOConfig, PAVRLFields):
    r"""Configuration of [`PAVPPOTrainer`]: PPO with a learned critic over a per-token reward stream of KL terms and
    the outcome reward, with the PAV step terms `α·Â^μ_h` credited per step (`process_credit`).

    It extends TRL's `GRPOConfig` (generation, vLLM modes, reward functions, reference model, logging are GRPO's) and
    the dense-reward fields of `PAVRLFields`. Several GRPO fields take their PPO meaning:

    - `beta` is the KL coefficient β of the reward stream (not a loss term); the reference model exists iff β ≠ 0.
    - `num_iterations` is the number of PPO epochs over each generation batch, `steps_per_generation` the number of
      mini-batches it is split into, `epsilon` / `epsilon_high` the policy-ratio clip range.
    - `num_generations` only groups samples per prompt (PPO needs no group baseline; GRPO's minimum of 2 applies).
    - `loss_type`, `scale_rewards` and `multi_objective_aggregation` do not enter the loss; the loss is PPO's
      token-level surrogate plus `vf_coef` times the clipped value loss, both normalised by the generation batch's
      token count (as GRPO's `"dapo"`), so the result does not depend on the number of processes.

    Parameters (besides `GRPOConfig`'s and `PAVRLFields`'s):
        process_credit (`str`, *optional*, defaults to `"advantage"`):
            Where the step terms `α·Â^μ_h` enter. `"advantage"` (the paper's PAV-RL): added to the advantage of every
            token of step h after GAE over the KL + outcome rewards (as the GRPO/RLOO variants do); the critic learns
            the value of that stream. `"reward"` (the classic RLHF layout): paid as a reward on the last token of
            step h and propagated by GAE. With `gamma = lam = 1` the step terms of a trace then telescope (their sum
            from step h on is `f(outcome) - f(Q̂_{h-1})`, a state-dependent shift) and carry no credit to the step
            that earned them; they act only through bootstrapping with `lam < 1`. See docs/deviations.md.
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount of GAE (per token).
        lam (`float`, *optional*, defaults to `0.95`):
            λ of GAE. `gamma = lam = 1` gives Monte-Carlo returns (REINFORCE with the critic as baseline).
        vf_coef (`float`, *optional*, defaults to `0.1`):
            Weight of the value loss in the joint loss.
        cliprange_value (`float` or `None`, *optional*, defaults to `0.2`):
            Clip of the value update around the rollout-time value; `None` for the plain squared error.
        whiten_advantages (`bool`, *optional*, defaults to `True`):
            Normalise the advantages to zero mean and unit variance over the generation batch (all processes).
        kl_estimator (`str`, *optional*, defaults to `"k1"`):
            Per-token KL estimate in the reward: `"k1"` (`log π - log π_ref`, classic RLHF), `"k2"` or `"k3"`.
        critic_backbone (`str`, *optional*, defaults to `"separate"`):
            `"separate"`: the critic is its own token-classification model (backbone plus a one-output head).
            `"shared"`: a linear value head on the policy's last hidden state (one backbone, cheaper; the value loss
            then also moves the policy's backbone).
        critic_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Where a separate critic's backbone comes from: a trl_pav PAV/ORM checkpoint or any causal-LM folder/Hub id
            with the policy's tokenizer. `None`: the policy itself. The head is always initialised to zero (values
            start at 0; a verifier's head predicts a logit of `Q^π`, not a value in reward units).
        critic_learning_rate (`float` or `None`, *optional*, defaults to `None`):
            Learning rate of the critic's parameters (its own parameter group in the one optimizer). `None`: the
            policy's `learning_rate`. With `learning_rate=0` the policy is frozen and only the critic learns.

        beta (`float`, *optional*, defaults to `0.05`):
            KL coefficient of the reward stream (the paper's RL uses 0.001: see `PAVPPOConfig.paper_preset`).
        num_iterations (`int`, *optional*, defaults to `4`):
            PPO epochs per generation batch.

    Example:
        >>> cfg = PAVPPOConfig(output_dir="out", pav_alpha=3.0, report_to="none", use_cpu=True)
        >>> cfg.gamma, cfg.lam, cfg.num_iterations, cfg.critic_backbone
        (1.0, 0.95, 4, 'separate')
    """

    process_credit: str = field(
        default="advantage", metadata={"help": "'advantage' (per-step, the paper's) or 'reward' (in the return)."}
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount (per token)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (1 with gamma 1: Monte-Carlo returns)."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    cliprange_value: float | None = field(
        default=0.2, metadata={"help": "Clip of the value update around the rollout value (None: no clip)."}
    )
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over the generation batch."})
    kl_estimator: str = field(default="k1", metadata={"help": "KL estimate in the reward: 'k1', 'k2' or 'k3'."})
    critic_backbone: str = field(
        default="separate", metadata={"help": "'separate' (own backbone) or 'shared' (head on the policy)."}
    )
    critic_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Backbone of a separate critic: PAV/ORM or causal LM (None: the policy)."}
    )
    critic_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the critic (None: learning_rate)."}
    )
    beta: float = field(default=0.05, metadata={"help": "KL coefficient of the per-token reward."})
    num_iterations: int = field(default=4, metadata={"help": "PPO epochs per generation batch."})

    def __post_init__(self):
        self._check_pav_fields()
        if self.process_credit not in PROCESS_CREDITS:
            raise ValueError(f"process_credit must be one of {PROCESS_CREDITS}, got {self.process_credit!r}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")
        if self.cliprange_value is not None and self.cliprange_value <= 0:
            raise ValueError(f"cliprange_value must be > 0 or None, got {self.cliprange_value}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.critic_backbone not in CRITIC_BACKBONES:
            raise ValueError(f"critic_backbone must be one of {CRITIC_BACKBONES}, got {self.critic_backbone!r}")
        if self.critic_backbone == "shared" and self.critic_model_name_or_path is not None:
            raise ValueError("critic_model_name_or_path is for a separate critic; unset it or use critic_backbone")
        if self.critic_learning_rate is not None and self.critic_learning_rate < 0:
            raise ValueError(f"critic_learning_rate must be >= 0, got {self.critic_learning_rate}")
        super().__post_init__()

    @classmethod
    def paper_preset(cls, **overrides) -> PAVPPOConfig:
        """The paper's RL setting: REINFORCE with a learned value baseline and a KL penalty of 0.001.

        `gamma = lam = 1` (advantage = Monte-Carlo return minus the critic's value), one update per generation batch
        (`num_iterations = 1` and `steps_per_generation = gradient_accumulation_steps`, so every update is on-policy
        and the ratio clip never binds), no value clipping, no advantage whitening, `beta = 0.001`. Any field can be
        overridden.

        Example:
            >>> cfg = PAVPPOConfig.paper_preset(output_dir="out", report_to="none", use_cpu=True)
            >>> cfg.gamma, cfg.lam, cfg.num_iterations, cfg.beta, cfg.cliprange_value, cfg.whiten_advantages
            (1.0, 1.0, 1, 0.001, None, False)
        """
        preset = dict(gamma=1.0, lam=1.0, num_iterations=1, beta=0.001, cliprange_value=None, whiten_advantages=False)
        kwargs = {**preset, **overrides}
        kwargs.setdefault("steps_per_generation", kwargs.get("gradient_accumulation_steps", 1))
        return cls(**kwargs)
