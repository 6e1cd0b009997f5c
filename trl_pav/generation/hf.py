"""Hugging Face transformers generation backend: batched, left-padded, stops at step boundaries, per-request seeds."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from transformers import GenerationConfig, LogitsProcessor, PreTrainedModel, StoppingCriteria

from ..steps import StepFormat
from ..tokenization import prompt_token_ids
from .base import Generation, GenerationRequest, continue_trace, gumbel_noise, weights_hash

__all__ = ["HFPolicy"]


class _SeededSampler(LogitsProcessor):
    """Turns greedy decoding into sampling at `temperature` with per-row counter-based Gumbel noise."""

    def __init__(self, seeds: torch.Tensor, input_len: int, temperature: float):
        self.seeds, self.input_len, self.temperature = seeds, input_len, temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.input_len
        noise = gumbel_noise(self.seeds, step, scores.shape[-1], device=scores.device)
        return scores.float() / self.temperature + noise


class _StepBoundary(StoppingCriteria):
    """Marks a row done once its new text holds the separator after some non-whitespace text."""

    def __init__(self, tokenizer, step_format: StepFormat, input_len: int, holds_last_char: torch.Tensor):
        self.tokenizer, self.step_format, self.input_len = tokenizer, step_format, input_len
        self.holds_last_char = holds_last_char  # (V,) bool: tokens whose text contains the separator's last char
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1]
        in_vocab = last < self.holds_last_char.numel()
        # Ids beyond the tokenizer's vocabulary are checked by decoding, as in `HFPolicy._tokens_to_boundary`.
        holds = self.holds_last_char[last.clamp(max=self.holds_last_char.numel() - 1)]
        maybe = (~in_vocab | holds) & ~self.done
        for b in maybe.nonzero().flatten().tolist():
            text = self.tokenizer.decode(input_ids[b, self.input_len :], skip_special_tokens=True)
            if self.step_format.complete_spans(text):
                self.done[b] = True
        return self.done.clone()


def _end_tokens(model, tokenizer) -> list[int]:
    """The tokens that end a trace: the tokenizer's EOS, then any other the checkpoint's `generation_config` names.

    Chat checkpoints often end a turn with a token their tokenizer does not call EOS (Llama 3.1 Instruct: `<|eot_id|>`
    and `<|eom_id|>` besides `<|end_of_text|>`; Qwen2.5 Instruct: `<|endoftext|>` besides `<|im_end|>`); without them
    a finished answer runs on to the token limit and counts as unfinished.
    """
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    extra = getattr(getattr(inner, "generation_config", None), "eos_token_id", None)
    for tok in [extra] if isinstance(extra, int) else list(extra or []):
        if isinstance(tok, int) and tok not in ids:
            ids.append(tok)
    return ids


@contextmanager
def _plain_generation_defaults(model):
    """Hide the checkpoint's `generation_config` from `generate` for the duration of the call.

    transformers fills every setting a `GenerationConfig` leaves unset from the model's own `generation_config.json`;
    instruct checkpoints ship logit-changing settings there (Qwen2.5-Math-1.5B-Instruct: `repetition_penalty`
    1.05), which would apply even in the greedy-plus-Gumbel decoding below and silently change the policy sampled
    from (its labels, its fingerprint). `HFPolicy` samples from the model's plain distribution at its own temperature.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the HF model
    saved = getattr(inner, "generation_config", None)
    if saved is None:
        yield
        return
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


class HFPolicy:
    """A transformers causal LM as a `Policy`: batched sampling with per-request seeds and step-boundary stops.

    Args:
        model: a causal LM (`AutoModelForCausalLM`).
        tokenizer: its fast tokenizer (needs a pad token; left padding is applied here).
        step_format: how steps are separated.
        name: an id recorded in datasets it helps build (defaults to the model's `name_or_path`).
        temperature: sampling temperature; 0 decodes greedily.
        max_new_tokens: token limit of a whole completion. Steps already taken count against it, so a rollout
            from a prefix stops where a trace sampled from the prompt would, and every state is valued under the
            same length budget.
        max_step_tokens: token limit for a single step (within what is left of `max_new_tokens`).
        batch_size: rows per `generate` call.
        rendered_prompts: how prompt text becomes token ids (`trl_pav.tokenization.prompt_token_ids`). `True`: the
            prompts were rendered by a chat template, which wrote every special token, so none is added (TRL's rule:
            the ids equal what its trainers feed the model for the same messages). `False`: plain prompts, the
            tokenizer's special tokens are added. `None` (default): plain, except that a prompt whose text already
            starts with BOS does not get a second one.

    Example:
        >>> from trl_pav.testing import char_tokenizer, tiny_causal_lm
        >>> tok = char_tokenizer()
        >>> policy = HFPolicy(tiny_causal_lm(tok), tok, max_new_tokens=8)
        >>> out = policy.generate([GenerationRequest("Q:1+1?\\n", seed=s) for s in range(3)])
        >>> len(out), all(g.num_tokens <= 8 for g in out)
        (3, True)
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        step_format: StepFormat | None = None,
        *,
        name: str | None = None,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        max_step_tokens: int = 64,
        batch_size: int = 64,
        rendered_prompts: bool | None = None,
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("HFPolicy: the tokenizer has no pad token; set tokenizer.pad_token first")
        if temperature < 0:
            raise ValueError(f"HFPolicy: temperature must be >= 0, got {temperature}")
        self.model, self.tokenizer = model, tokenizer
        self.step_format = step_format or StepFormat()
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        self.temperature, self.batch_size = temperature, batch_size
        self.max_new_tokens, self.max_step_tokens = max_new_tokens, max_step_tokens
        self.rendered_prompts = rendered_prompts
        self.eos_token_ids = _end_tokens(model, tokenizer)
        vocab = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        last_char = self.step_format.separator[-1]
        self._holds_last_char = torch.tensor([last_char in t for t in vocab], dtype=torch.bool, device=model.device)

    def fingerprint(self) -> dict:
        """What changes this policy's samples: sampling settings, a hash of the weights, and the tokenizer's vocab
        (the batch size does not: every request has its own seed)."""
        import hashlib
        import json

        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        out = {
            "class": "HFPolicy",
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "max_step_tokens": self.max_step_tokens,
            "step_format": self.step_format.to_dict(),
            "weights": weights_hash(self.model),
            "tokenizer": hashlib.blake2b(vocab.encode(), digest_size=16).hexdigest(),
        }
        if self.eos_token_ids != [self.tokenizer.eos_token_id]:  # only then: earlier fingerprints stay valid
            out["end_tokens"] = list(self.eos_token_ids)
        if self.rendered_prompts is not None:  # likewise: the default leaves plain prompts' ids as they were
            out["rendered_prompts"] = self.rendered_prompts
        return out

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request (see `Policy.generate`)."""
        texts = [continue_trace(r.prompt, r.steps, self.step_format) for r in requests]
        encoded = [self._token_ids(t) for t in texts]
        prompt_tokens = {p: len(self._token_ids(p)) for p in {r.prompt for r in requests if r.steps}}
        limits = []
        for r, ids in zip(requests, encoded):
            left = self.max_new_tokens - (len(ids) - prompt_tokens[r.prompt] if r.steps else 0)
            limits.append(max(0, min(left, self.max_step_tokens) if stop_at_step else left))
        out: list[Generation | None] = [
            None if limit else Generation(truncated=True) for limit in limits
        ]  # no budget left: nothing to generate
        # Similar lengths together: less padding. Results do not depend on the grouping (per-request seeds).
        order = sorted((i for i in range(len(requests)) if limits[i]), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self._generate_batch(
                [encoded[i] for i in chunk], [requests[i].seed for i in chunk], stop_at_step, [limits[i] for i in chunk]
            )
            for i, gen in zip(chunk, batch):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _token_ids(self, text: str) -> list[int]:
        """The ids the model sees for a prompt (and steps): a chat template's own BOS is never doubled."""
        return prompt_token_ids(self.tokenizer, text, self.rendered_prompts)

    def _generate_batch(
        self, ids: list[list[int]], seeds: list[int], stop_at_step: bool, limits: list[int]
    ) -> list[Generation]:
        device = self.model.device
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            # Past the position table a model crashes (absolute positions) or silently extrapolates (RoPE).
            if width >= positions:
                raise ValueError(
                    f"HFPolicy: a request is {width} tokens long, at or over the model's max_position_embeddings "
                    f"{positions}: shorten the prompt or the steps"
                )
            limits = [min(limit, positions - width) for limit in limits]
        config = GenerationConfig(
            max_new_tokens=max(limits),
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=self.eos_token_ids or None,
            num_beams=1,
            use_cache=True,
        )
        processors = []
        if self.temperature > 0:
            seed_tensor = torch.tensor(seeds, dtype=torch.int64, device=device)
            processors.append(_SeededSampler(seed_tensor, width, self.temperature))
        criteria = []
        if stop_at_step:
            criteria.append(_StepBoundary(self.tokenizer, self.step_format, width, self._holds_last_char))
        was_training = self.model.training
        self.model.eval()
        try:
            with _plain_generation_defaults(self.model):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=criteria,
                    synced_gpus=self._synced_gpus(),
                )
        finally:
            self.model.train(was_training)
        return [
            self._decode_row(row[width:].tolist()[:limit], stop_at_step, limit) for row, limit in zip(output, limits)
        ]

    def _synced_gpus(self) -> bool | None:
        """`False` for a whole model while a ZeRO-3 config is registered, else transformers' default (`None`).

        transformers keeps the processes in step during generation whenever a ZeRO-3 config is registered, even for
        a model that ZeRO-3 did not partition (search under ZeRO-3: sharded verifiers, a whole policy per process);
        its extra collectives then mismatch the verifiers'. Only partitioned weights (`ds_id`) need it.
        """
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled() and not any(hasattr(p, "ds_id") for p in self.model.parameters()):
            return False
        return None

    def _decode_row(self, new_ids: list[int], stop_at_step: bool, limit: int) -> Generation:
        eos_at = next((i for i, tok in enumerate(new_ids) if tok in self.eos_token_ids), None)
        # Padding after a finished row may reuse the EOS id, so look for a step boundary before the first EOS only.
        before_eos = new_ids if eos_at is None else new_ids[:eos_at]
        if stop_at_step:
            boundary = self._tokens_to_boundary(before_eos)
            if boundary is not None:
                text = self.tokenizer.decode(new_ids[:boundary], skip_special_tokens=True)
                return Generation(steps=self.step_format.split(text)[:1], finished=False, num_tokens=boundary)
        finished = eos_at is not None
        used = new_ids[: eos_at + 1] if finished else new_ids[:limit]
        # The end token is not text (an end token that is no special token would otherwise be decoded into it).
        text = self.tokenizer.decode(before_eos if finished else used, skip_special_tokens=True)
        steps = self.step_format.split(text)
        if stop_at_step:
            steps = steps[:1]
        return Generation(steps=steps, finished=finished, num_tokens=len(used), truncated=not finished)

    def _tokens_to_boundary(self, new_ids: list[int]) -> int | None:
        """Number of tokens up to the one that completes the first step boundary, or None if there is none."""
        vocab = self._holds_last_char.numel()
        for n, tok in enumerate(new_ids, start=1):
            if tok < vocab and not self._holds_last_char[tok]:
                continue
            if self.step_format.complete_spans(self.tokenizer.decode(new_ids[:n], skip_special_tokens=True)):
                return n
        return None
