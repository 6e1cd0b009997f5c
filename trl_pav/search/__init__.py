"""Verifier-guided test-time search: one algorithm per file, a shared compute ledger, an evaluation runner."""

from .base import ComputeLedger, SearchResult, is_answered
from .beam_search import BeamSearchConfig, beam_search
from .best_of_n import (
    best_of_n,
    majority_vote,
    pass_at_n,
    sample_candidates,
    selection_pools,
    vote_key,
    weighted_majority,
)
from .reuse import ReusingPolicy, ReusingScorer
from .runner import (
    METHODS,
    SearchEvalConfig,
    compare_curves,
    compare_to_baselines,
    evaluate_search,
    merge_search_results,
    plot_search_results,
    summarize_curve,
)

__all__ = [
    "METHODS",
    "BeamSearchConfig",
    "ComputeLedger",
    "ReusingPolicy",
    "ReusingScorer",
    "SearchEvalConfig",
    "SearchResult",
    "beam_search",
    "best_of_n",
    "compare_curves",
    "compare_to_baselines",
    "evaluate_search",
    "is_answered",
    "majority_vote",
    "merge_search_results",
    "pass_at_n",
    "plot_search_results",
    "sample_candidates",
    "selection_pools",
    "summarize_curve",
    "vote_key",
    "weighted_majority",
]
