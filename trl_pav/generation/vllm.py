"""vLLM generation backend (optional extra `trl-pav[vllm]`): prefix caching and per-request seeds on GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..steps import StepFormat
from .base import Generation, GenerationRequest, continue_trace, mix_seed

__all__ = ["VLLMPolicy"]


class VLLMPolicy:
    """A vLLM engine as a `Policy`.

    Each request becomes one vLLM request with its own `SamplingParams(seed=...)`, so samples do not depend on how
    requests are batched. Requests that share a prefix (the seed traces of one problem, the rollouts of one prefix)
    reuse its KV cache through vLLM's prefix caching. With `stop_at_step`, generation stops at the step separator.

    Args:
        model: a model path/Hub id (an engine is created with `enable_prefix_caching=True`), or a `vllm.LLM`.
        step_format: how steps are separated.
        name: id recorded in datasets (defaults to the model path).
        temperature: sampling temperature.
        max_new_tokens: token limit of a whole completion; steps already taken count against it (see `HFPolicy`).
        max_step_tokens: token limit for one step.
        **llm_kwargs: passed to `vllm.LLM` when `model` is a path (e.g. `gpu_memory_utilization`).

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
        **llm_kwargs,
    ):
        try:
            from vllm import SamplingParams
        except ImportError as err:
            raise ImportError('VLLMPolicy needs vLLM: pip install "trl-pav[vllm]" (GPU machines only)') from err
        self._sampling_params = SamplingParams
        if isinstance(model, str):
            from vllm import LLM

            self.llm = LLM(model=model, enable_prefix_caching=True, **llm_kwargs)
            self.name = name or model
        else:
            self.llm = model
            self.name = name or type(model).__name__
        self.step_format = step_format or StepFormat()
        self.temperature, self.max_new_tokens, self.max_step_tokens = temperature, max_new_tokens, max_step_tokens

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
        return {
            "class": "VLLMPolicy",
            "model": str(model),
            "files": files,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "max_step_tokens": self.max_step_tokens,
            "step_format": self.step_format.to_dict(),
        }

    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request (see `Policy.generate`).

        With `stop_at_step`, vLLM stops at the first separator, also one the model writes before any step text
        (a completion that opens with a blank line). Such a request is continued past the separator, with the tokens
        it used charged to it, until a step is written or the budget runs out; the HF backend skips leading blank
        lines the same way.
        """
        if not requests:
            return []
        sep = self.step_format.separator
        texts = [continue_trace(r.prompt, r.steps, self.step_format) for r in requests]
        limits = [self._budget(r, t, stop_at_step) for r, t in zip(requests, texts)]
        out = [Generation(truncated=True) for _ in requests]  # no budget left: nothing to generate
        used = [0] * len(requests)  # tokens spent on leading separators
        pending = [i for i, limit in enumerate(limits) if limit > 0]
        attempt = 0
        while pending:
            params = [
                self._sampling_params(
                    n=1,
                    temperature=self.temperature,
                    max_tokens=limits[i] - used[i],
                    seed=requests[i].seed if attempt == 0 else mix_seed(requests[i].seed, attempt),
                    stop=[sep] if stop_at_step else None,
                    include_stop_str_in_output=False,
                )
                for i in pending
            ]
            outputs = self.llm.generate([texts[i] for i in pending], params, use_tqdm=False)
            again = []
            for i, res in zip(pending, outputs):
                completion = res.outputs[0]
                spent = len(completion.token_ids)
                blank = stop_at_step and isinstance(completion.stop_reason, str) and not completion.text.strip()
                if blank and 0 < spent < limits[i] - used[i]:
                    texts[i] += completion.text + sep  # a separator before any step text: go on past it
                    used[i] += spent
                    again.append(i)
                    continue
                if blank:  # the budget ran out on separators: no step
                    out[i] = Generation(num_tokens=used[i] + spent, truncated=True)
                    continue
                gen = self._to_generation(completion, stop_at_step)
                gen.num_tokens += used[i]
                out[i] = gen
            pending, attempt = again, attempt + 1
        return out

    def _budget(self, request: GenerationRequest, text: str, stop_at_step: bool) -> int:
        """Tokens this request may generate: what `max_new_tokens` leaves after the steps already taken (counted
        with the engine's tokenizer when it exposes one), capped at `max_step_tokens` for one step."""
        left = self.max_new_tokens
        get_tokenizer = getattr(self.llm, "get_tokenizer", None)
        if request.steps and get_tokenizer is not None:
            tok = get_tokenizer()
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
