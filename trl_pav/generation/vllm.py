"""vLLM generation backend (optional extra `trl-pav[vllm]`): one request per prefix group, prefix caching, sleep mode.

A `GenerationGroup` (the labeler's `n_mc` rollouts of a prefix) is sent as ONE vLLM request,
`SamplingParams(n=n, seed=seed + first)`: vLLM prefills the prefix once and seeds its children `seed + first + k`,
so sample r of a group depends on (group seed, r) alone, whatever the batch. Single requests are groups of one.
Prompts go to the engine as token ids (`{"prompt_token_ids": ...}`, see `trl_pav.tokenization.prompt_token_ids`):
a chat template's BOS is not doubled by the engine's own tokenization.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ..steps import StepFormat
from .base import Generation, GenerationGroup, GenerationRequest, continue_trace, mix_seed

__all__ = ["VLLMPolicy"]

logger = logging.getLogger(__name__)


def _sleep_mode_available() -> bool:
    """Whether vLLM's sleep mode can be enabled here: a platform that supports it, and a CUDA allocator setting it
    tolerates (vLLM refuses expandable segments with its memory pool)."""
    if "expandable_segments:true" in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "").replace(" ", "").lower():
        return False
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    check = getattr(current_platform, "is_sleep_mode_available", None)
    return bool(check()) if callable(check) else False


class VLLMPolicy:
    """A vLLM engine as a `Policy` (and a `GroupPolicy`: `generate_groups` sends one request per group).

    Each request becomes one vLLM request with its own `SamplingParams(seed=...)`, and each `GenerationGroup` one
    request with `SamplingParams(n=group.n, seed=...)`, so samples do not depend on how requests are batched.
    Requests that share a prefix (the seed traces of one problem, the rollouts of one prefix) reuse its KV cache
    through vLLM's prefix caching. With `stop_at_step`, generation stops at the step separator.

    Between stages, `sleep()` hands the engine's GPU memory back (vLLM's sleep mode) and `wake_up()` (or the next
    `generate`) takes it again; engines without sleep mode ignore both.

    Args:
        model: a model path/Hub id (an engine is created with `enable_prefix_caching=True`, and with
            `enable_sleep_mode=True` where the platform supports it), or a `vllm.LLM`.
        step_format: how steps are separated.
        name: id recorded in datasets (defaults to the model path).
        temperature: sampling temperature.
        max_new_tokens: token limit of a whole completion; steps already taken count against it (see `HFPolicy`).
        max_step_tokens: token limit for one step.
        rendered_prompts: how prompt text becomes the token ids sent to the engine
            (`trl_pav.tokenization.prompt_token_ids`): `True` for chat-template output (no special token added),
            `False` for plain prompts, `None` (default) plain unless the text already starts with BOS. Engines that
            expose no tokenizer are sent the text.
        **llm_kwargs: passed to `vllm.LLM` when `model` is a path (e.g. `gpu_memory_utilization`,
            `enable_sleep_mode=False`).

    Raises:
        ImportError: if vLLM is not installed (`pip install "trl-pav[vllm]"`).
    """

    def __init__(
        self,
        model: Any,
        step_format: StepFormat | None = None,
        *,
        name: str | None = None,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        max_step_tokens: int = 64,
        rendered_prompts: bool | None = None,
        **llm_kwargs,
    ):
        try:
            from vllm import SamplingParams
        except ImportError as err:
            raise ImportError('VLLMPolicy needs vLLM: pip install "trl-pav[vllm]" (GPU machines only)') from err
        self._sampling_params = SamplingParams
        if isinstance(model, str):
            from vllm import LLM

            llm_kwargs.setdefault("enable_sleep_mode", _sleep_mode_available())
            self.llm = LLM(model=model, enable_prefix_caching=True, **llm_kwargs)
            self.name = name or model
        else:
            self.llm = model
            self.name = name or type(model).__name__
        self.step_format = step_format or StepFormat()
        self.temperature, self.max_new_tokens, self.max_step_tokens = temperature, max_new_tokens, max_step_tokens
        self.rendered_prompts = rendered_prompts
        self.sleep_level = 0  # 0: awake; else the level `sleep` put the engine to

    def fingerprint(self) -> dict:
        """What changes this policy's samples: sampling settings and a hash of the model folder's files (config,
        tokenizer and weights), or the model id when it is not a local folder."""
        import hashlib
        from pathlib import Path

        model_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        model = getattr(model_config, "model", None) or self.name
        files = {}
        folder = Path(str(model))
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                h = hashlib.blake2b(digest_size=16)
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 24), b""):
                        h.update(block)
                files[str(path.relative_to(folder))] = h.hexdigest()
        out = {
            "class": "VLLMPolicy",
            "model": str(model),
            "files": files,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "max_step_tokens": self.max_step_tokens,
            "step_format": self.step_format.to_dict(),
        }
        if self.rendered_prompts is not None:  # only then: earlier fingerprints stay valid
            out["rendered_prompts"] = self.rendered_prompts
        return out

    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request (see `Policy.generate`): each is a group of one (`generate_groups`).

        With `stop_at_step`, vLLM stops at the first separator, also one the model writes before any step text
        (a completion that opens with a blank line). Such a request is continued past the separator, with the tokens
        it used charged to it, until a step is written or the budget runs out; the HF backend skips leading blank
        lines the same way.
        """
        groups = [GenerationGroup(r.prompt, tuple(r.steps), r.seed, 1) for r in requests]
        return [gens[0] for gens in self.generate_groups(groups, stop_at_step)]

    def generate_groups(self, groups: Sequence[GenerationGroup], stop_at_step: bool = False) -> list[list[Generation]]:
        """`group.n` continuations per group, ONE engine request per group: `SamplingParams(n=group.n,
        seed=group.seed + group.first)`, so the prefix is prefilled once and sample r is vLLM's child seeded
        `group.seed + r`.

        A sample that stopped at a leading separator (see `generate`) is continued on its own, as a request of one
        seeded `mix_seed(group.seed + r, attempt)`.
        """
        if not groups:
            return []
        self._wake_for_generation()
        sep = self.step_format.separator
        texts = [continue_trace(g.prompt, g.steps, self.step_format) for g in groups]
        limits = [self._budget(g, t, stop_at_step) for g, t in zip(groups, texts)]
        out = [[Generation(truncated=True) for _ in range(g.n)] for g in groups]  # no budget left: no generation
        # First attempt: one request per group. Later attempts: one request per sample still owed a step.
        pending: list[tuple[int, int | None]] = [(k, None) for k, limit in enumerate(limits) if limit > 0]
        member_text: dict[tuple[int, int], str] = {}
        used: dict[tuple[int, int], int] = {}  # tokens a sample spent on leading separators
        attempt = 0
        while pending:
            prompts, params = [], []
            for k, r in pending:
                g = groups[k]
                if r is None:
                    text, n, seed, left = texts[k], g.n, g.seed + g.first, limits[k]
                else:
                    text, n, left = member_text[(k, r)], 1, limits[k] - used[(k, r)]
                    seed = mix_seed(g.seed + g.first + r, attempt)
                prompts.append(self._engine_prompt(text))
                params.append(
                    self._sampling_params(
                        n=n,
                        temperature=self.temperature,
                        max_tokens=left,
                        seed=seed,
                        stop=[sep] if stop_at_step else None,
                        include_stop_str_in_output=False,
                    )
                )
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            if len(outputs) != len(prompts):
                raise RuntimeError(f"vLLM engine {self.name!r} returned {len(outputs)} outputs for {len(prompts)}")
            again = []
            for (k, r), res in zip(pending, outputs):
                members = range(groups[k].n) if r is None else [r]
                completions = list(res.outputs)
                if len(completions) != len(members):
                    raise RuntimeError(
                        f"vLLM engine {self.name!r} returned {len(completions)} completions for a request of "
                        f"{len(members)} samples (group {k})"
                    )
                for m, completion in zip(members, completions):
                    spent, before = len(completion.token_ids), used.get((k, m), 0)
                    text = texts[k] if r is None else member_text[(k, m)]
                    blank = stop_at_step and isinstance(completion.stop_reason, str) and not completion.text.strip()
                    if blank and 0 < spent < limits[k] - before:
                        member_text[(k, m)] = text + completion.text + sep  # a separator before any step: go on
                        used[(k, m)] = before + spent
                        again.append((k, m))
                        continue
                    if blank:  # the budget ran out on separators: no step
                        out[k][m] = Generation(num_tokens=before + spent, truncated=True)
                        continue
                    gen = self._to_generation(completion, stop_at_step)
                    gen.num_tokens += before
                    out[k][m] = gen
            pending, attempt = again, attempt + 1
        return out

    def _engine_prompt(self, text: str) -> str | dict:
        """What the engine is sent: token ids when it exposes its tokenizer (one BOS, see `rendered_prompts`), else
        the text."""
        tokenizer = self._tokenizer()
        if tokenizer is None:
            return text
        from ..tokenization import prompt_token_ids

        return {"prompt_token_ids": prompt_token_ids(tokenizer, text, self.rendered_prompts)}

    def _tokenizer(self):
        get_tokenizer = getattr(self.llm, "get_tokenizer", None)
        return get_tokenizer() if callable(get_tokenizer) else None

    # ---- sleep mode ------------------------------------------------------------------------------------------------
    def _sleep_mode_enabled(self) -> bool:
        """Whether the engine can sleep: it has `sleep`/`wake_up`, and its config (when readable) enables sleep mode
        (vLLM refuses `sleep` otherwise)."""
        if not (callable(getattr(self.llm, "sleep", None)) and callable(getattr(self.llm, "wake_up", None))):
            return False
        engine = getattr(self.llm, "llm_engine", None)
        for config in (
            getattr(engine, "model_config", None),
            getattr(getattr(engine, "vllm_config", None), "model_config", None),
        ):
            enabled = getattr(config, "enable_sleep_mode", None)
            if isinstance(enabled, bool):
                return enabled
        return True

    def sleep(self, level: int = 1) -> bool:
        """Hand the engine's GPU memory back until it is needed again (vLLM's `LLM.sleep`).

        Level 1 moves the weights to CPU memory and drops the KV cache (`wake_up`, or the next `generate`, restores
        them); level 2 drops the weights too, for an engine that will not generate again. An engine without sleep
        mode (not enabled, or a vLLM without it) is left as it is, with a debug log.

        Returns:
            Whether the engine went to sleep.

        Raises:
            ValueError: for a level other than 1 or 2.
        """
        if level not in (1, 2):
            raise ValueError(f"VLLMPolicy.sleep: level must be 1 or 2, got {level!r}")
        if self.sleep_level:
            return True
        if not self._sleep_mode_enabled():
            logger.debug(f"VLLMPolicy {self.name!r}: the engine has no sleep mode enabled; it keeps its memory")
            return False
        self.llm.sleep(level=level)
        self.sleep_level = level
        return True

    def wake_up(self) -> bool:
        """Take the GPU memory back after `sleep(level=1)` (vLLM's `LLM.wake_up`); a no-op for an awake engine.

        Returns:
            Whether the engine was asleep.

        Raises:
            RuntimeError: after `sleep(level=2)`, whose weights are gone.
        """
        if not self.sleep_level:
            return False
        if self.sleep_level == 2:
            raise RuntimeError(
                f"VLLMPolicy {self.name!r} slept at level 2 and dropped its weights: create a new engine to generate"
            )
        self.llm.wake_up()
        self.sleep_level = 0
        return True

    def _wake_for_generation(self) -> None:
        if self.sleep_level:
            self.wake_up()

    def _budget(self, request: GenerationRequest | GenerationGroup, text: str, stop_at_step: bool) -> int:
        """Tokens this request may generate: what `max_new_tokens` leaves after the steps already taken (counted
        with the engine's tokenizer when it exposes one), capped at `max_step_tokens` for one step."""
        left = self.max_new_tokens
        tok = self._tokenizer() if request.steps else None
        if tok is not None:
            left -= len(tok(text)["input_ids"]) - len(tok(request.prompt)["input_ids"])
        return max(0, min(left, self.max_step_tokens) if stop_at_step else left)

    def _to_generation(self, completion, stop_at_step: bool) -> Generation:
        steps = self.step_format.split(completion.text)
        num_tokens = len(completion.token_ids)
        if completion.finish_reason == "length":
            return Generation(steps=steps[:1] if stop_at_step else steps, num_tokens=num_tokens, truncated=True)
        # finish_reason "stop": a stop string (the separator) or the end of sequence (stop_reason None or EOS id).
        at_separator = isinstance(completion.stop_reason, str)
        finished = not at_separator
        return Generation(steps=steps[:1] if stop_at_step else steps, finished=finished, num_tokens=num_tokens)
