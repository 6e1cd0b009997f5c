"""Generation backends behind one small interface (`Policy.generate`)."""

from .base import (
    Generation,
    GenerationGroup,
    GenerationRequest,
    GroupPolicy,
    Policy,
    continue_trace,
    describe,
    generate_groups,
    gumbel_noise,
    member_seed,
    mix_seed,
    policy_fingerprint,
    weights_hash,
)
from .hf import HFPolicy

__all__ = [
    "Generation",
    "GenerationGroup",
    "GenerationRequest",
    "GroupPolicy",
    "HFPolicy",
    "Policy",
    "continue_trace",
    "describe",
    "generate_groups",
    "gumbel_noise",
    "member_seed",
    "mix_seed",
    "policy_fingerprint",
    "weights_hash",
]
