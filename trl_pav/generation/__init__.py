"""Generation backends behind one small interface (`Policy.generate`)."""

from .base import Generation, GenerationRequest, Policy, continue_trace, gumbel_noise, mix_seed
from .hf import HFPolicy

__all__ = ["Generation", "GenerationRequest", "HFPolicy", "Policy", "continue_trace", "gumbel_noise", "mix_seed"]
