"""Generation backends behind one small interface (`Policy.generate`)."""

from .base import (
    Generation,
    GenerationRequest,
    Policy,
    continue_trace,
    describe,
    gumbel_noise,
    mix_seed,
    policy_fingerprint,
    weights_hash,
)
from .hf import HFPolicy

__all__ = [
    "Generation",
    "GenerationRequest",
    "HFPolicy",
    "Policy",
    "continue_trace",
    "describe",
    "gumbel_noise",
    "mix_seed",
    "policy_fingerprint",
    "weights_hash",
]
