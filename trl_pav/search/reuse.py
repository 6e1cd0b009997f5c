"""Reuse of samples and scores across the methods and budgets of one search evaluation.

Every sample is seeded by its request (prompt id, depth, beam rank, expansion), so PAV beam and Q-only beam, beam
searches at different N and best-of-N at growing N ask for many identical samples and scores. These wrappers compute
each distinct request once and hand the stored result to every later asker; each method is still charged the
tokens it would have generated alone, so accuracy-vs-compute curves do not change (verifier tokens too, for scorers
that say what one trace reads: see `ReusingScorer`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from ..generation.base import Generation, GenerationRequest, Policy

__all__ = ["ReusingPolicy", "ReusingScorer"]


class ReusingPolicy:
    """A policy that generates each distinct `(request, stop_at_step)` once and returns the stored result after.

    Only for one process: under sharded (ZeRO-3) generation every process must run the same calls.

    Example:
        >>> from trl_pav.tasks import PlantedTask, PlantedProverPolicy
        >>> from trl_pav.generation import GenerationRequest
        >>> policy = ReusingPolicy(PlantedProverPolicy(PlantedTask(), 5.0))
        >>> a = policy.generate([GenerationRequest(">", seed=1), GenerationRequest(">", seed=2)])
        >>> b = policy.generate([GenerationRequest(">", seed=1)])
        >>> a[0] == b[0], policy.reused
        (True, 1)
    """

    def __init__(self, policy: Policy):
        self.policy = policy
        self.reused = 0  # requests answered from the store
        self._store: dict[tuple, Generation] = {}

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("policy", "_store"):  # copy/pickle probe these before __init__ ran
            raise AttributeError(name)
        return getattr(self.policy, name)  # name, step_format, tokenizer, ... of the wrapped policy

    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request (see `Policy.generate`)."""
        keys = [(r.prompt, tuple(r.steps), r.seed, bool(stop_at_step)) for r in requests]
        first = {k: r for k, r in zip(keys, requests)}
        todo = list(dict.fromkeys(k for k in keys if k not in self._store))
        self.reused += len(keys) - len(todo)
        if todo:
            out = self.policy.generate([first[k] for k in todo], stop_at_step=stop_at_step)
            if len(out) != len(todo):
                raise RuntimeError(f"policy {self.policy.name!r} returned {len(out)} results for {len(todo)} requests")
            self._store.update(zip(todo, out))
        return [replace(self._store[k], steps=list(self._store[k].steps)) for k in keys]


class ReusingScorer:
    """A step scorer that scores each distinct `(prompt, steps)` once and returns the stored values after.

    It counts `verifier_tokens` as the wrapped scorer would: a stored trace is charged again when asked again, at
    the wrapped scorer's `trace_tokens(prompt, steps)` (`PAVVerifier`, the public PRM adapters), or else at its share
    by characters of the tokens its first batch read. Only for one process (see `ReusingPolicy`).

    Example:
        >>> from trl_pav.tasks import PlantedTask, PlantedOracleScorer
        >>> scorer = ReusingScorer(PlantedOracleScorer(PlantedTask(), 5.0))
        >>> scorer.score([">", ">"], [[], ["3"]]) == scorer.score([">", ">"], [[], ["3"]]), scorer.reused
        (True, 2)
    """

    def __init__(self, scorer):
        self.scorer = scorer
        self.reused = 0
        self.verifier_tokens = 0
        self._store: dict[tuple[tuple[str, str], tuple[str, ...]], tuple[list[float], float]] = {}

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("scorer", "_store"):  # copy/pickle probe these before __init__ ran
            raise AttributeError(name)
        return getattr(self.scorer, name)  # drain, tokenizer, ... of the wrapped scorer

    def score(self, prompts: Sequence, steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Values of every prefix of every trace (see `StepScorer.score`)."""
        if len(prompts) != len(steps):
            raise ValueError(f"{len(prompts)} prompts but {len(steps)} step lists")
        keys = [(_prompt_key(p), tuple(s)) for p, s in zip(prompts, steps)]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        todo = [k for k in dict.fromkeys(keys) if k not in self._store]
        self.reused += len(keys) - len(todo)
        if todo:
            before = getattr(self.scorer, "verifier_tokens", 0)
            new_prompts, new_steps = [prompts[first[k]] for k in todo], [list(steps[first[k]]) for k in todo]
            values = self.scorer.score(new_prompts, new_steps)
            if len(values) != len(todo):
                raise RuntimeError(f"scorer returned {len(values)} results for {len(todo)} traces")
            read = getattr(self.scorer, "verifier_tokens", 0) - before
            if callable(getattr(self.scorer, "trace_tokens", None)):
                costs = [float(self.scorer.trace_tokens(p, st)) for p, st in zip(new_prompts, new_steps)]
            else:  # the batch's count, split by characters
                chars = [len(k[0][1]) + sum(len(x) for x in k[1]) + 1 for k in todo]
                costs = [read * c / sum(chars) for c in chars]
            for k, v, c in zip(todo, values, costs):
                self._store[k] = (list(v), c)
        # Every asked trace is charged, a repeated one too, so a method's count does not depend on what ran before.
        self.verifier_tokens += round(sum(self._store[k][1] for k in keys))
        return [list(self._store[k][0]) for k in keys]


def _prompt_key(prompt) -> tuple[str, str]:
    """A hashable key of a prompt; a text prompt never equals a message list that serialises to the same string."""
    return ("text", prompt) if isinstance(prompt, str) else ("messages", json.dumps(prompt, sort_keys=True))
