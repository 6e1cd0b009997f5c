"""A running vLLM server as a policy: `trl vllm-serve` (or `vllm serve`) on other GPUs, reached through TRL's
`VLLMClient` (`trl.generation.vllm_client`), so a stage needs no engine of its own.

The requests are those `VLLMPolicy` sends to a local engine, one per prefix group
(`n = group.n, seed = group.seed + group.first`), token-id prompts (one BOS), the step separator as a stop string,
so the same seeds give the same samples on a server as on a local engine of the same model. The server's replies
carry token ids only; finish reasons are read from them: a completion holding the separator stopped there, one that
used its whole token budget (without ending on an end-of-sequence token) was cut, any other finished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..steps import StepFormat
from .vllm import VLLMPolicy

__all__ = ["VLLMServerPolicy", "check_served_model", "make_vllm_client"]


def make_vllm_client(
    base_url: str | None = None, host: str = "0.0.0.0", port: int = 8000, timeout: float = 240.0
) -> Any:
    """TRL's `VLLMClient` for the server at `base_url` (or `host:port`), waiting up to `timeout` seconds for it.

    Raises:
        ImportError: without vLLM and requests (TRL's client needs both: `pip install "trl-pav[vllm]"`).
        ConnectionError: if no server answers within `timeout` (start one with `trl vllm-serve --model PATH`).
    """
    try:
        from trl.generation.vllm_client import VLLMClient
    except ImportError as err:  # trl's module imports requests and vllm helpers when they are installed
        raise ImportError(
            f'the vLLM server client needs TRL\'s VLLMClient: pip install "trl-pav[vllm]" ({err})'
        ) from err
    return VLLMClient(base_url=base_url, host=host, server_port=port, connection_timeout=timeout)


def check_served_model(client: Any, path: str | os.PathLike) -> None:
    """Raise `ValueError` unless the server behind `client` serves the model `path` (the same id, or the same folder
    on this machine): samples from another model would be labeled or searched as this one's.

    Example:
        >>> class Client:
        ...     model, base_url = "Qwen/Qwen2.5-Math-1.5B-Instruct", "http://gpu:8000"
        >>> check_served_model(Client(), "Qwen/Qwen2.5-Math-1.5B-Instruct")
        >>> check_served_model(Client(), "outputs/rft")
        Traceback (most recent call last):
        ...
        ValueError: the vLLM server at http://gpu:8000 serves 'Qwen/Qwen2.5-Math-1.5B-Instruct', not 'outputs/rft': \
start it with trl vllm-serve --model outputs/rft (each policy needs its own server)
    """
    served, wanted = str(getattr(client, "model", "")), str(path)
    same = served == wanted or (
        os.path.exists(served) and os.path.exists(wanted) and os.path.realpath(served) == os.path.realpath(wanted)
    )
    if not same:
        where = getattr(client, "base_url", "(unknown address)")
        raise ValueError(
            f"the vLLM server at {where} serves {served!r}, not {wanted!r}: start it with trl vllm-serve --model "
            f"{wanted} (each policy needs its own server)"
        )


@dataclass(frozen=True)
class _SamplingParams:
    """The fields of `vllm.SamplingParams` that `VLLMPolicy` sets, for a client that needs no vLLM import."""

    n: int = 1
    temperature: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False


@dataclass
class _Completion:
    """What `VLLMPolicy` reads of a vLLM `CompletionOutput`."""

    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: str | None


@dataclass
class _RequestOutput:
    outputs: list[_Completion]


class _ServerEngine:
    """The part of `vllm.LLM` that `VLLMPolicy` uses (`generate`, `get_tokenizer`), answered by a vLLM server."""

    def __init__(self, client: Any, tokenizer: Any, stop_token_ids: set[int], max_concurrency: int):
        self.client, self.tokenizer = client, tokenizer
        self.stop_token_ids, self.max_concurrency = stop_token_ids, max_concurrency

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts: Sequence[Any], params: Sequence[_SamplingParams], use_tqdm: bool = False):
        """One server request per prompt, `max_concurrency` at a time; results in the order of `prompts`."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(prompts)))) as pool:
            return list(pool.map(self._one, prompts, params))

    def _one(self, prompt: Any, p: _SamplingParams) -> _RequestOutput:
        ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else self.tokenizer(prompt)["input_ids"]
        extra: dict[str, Any] = {"seed": p.seed}
        if p.stop:
            # Kept in the reply so that a stop is told from an end of sequence; removed again below.
            extra.update(stop=list(p.stop), include_stop_str_in_output=True)
        reply = self.client.generate(
            [list(ids)], n=p.n, temperature=p.temperature, max_tokens=p.max_tokens, logprobs=None,
            generation_kwargs=extra,
        )  # fmt: skip
        completions = reply["completion_ids"]
        if len(completions) != p.n:
            raise RuntimeError(f"vLLM server returned {len(completions)} completions for a request of n={p.n}")
        return _RequestOutput([self._completion(list(c), p) for c in completions])

    def _completion(self, token_ids: list[int], p: _SamplingParams) -> _Completion:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        for stop in p.stop or ():
            if stop in text:  # the server stops at the first occurrence
                return _Completion(text[: text.index(stop)], token_ids, "stop", stop)
        ended = bool(token_ids) and token_ids[-1] in self.stop_token_ids
        cut = len(token_ids) >= p.max_tokens and not ended
        return _Completion(text, token_ids, "length" if cut else "stop", None)


class VLLMServerPolicy(VLLMPolicy):
    """A `Policy` (and `GroupPolicy`) that generates on a running vLLM server (`trl vllm-serve --model PATH`)
    through TRL's `VLLMClient`: the requests, seeds and step handling of `VLLMPolicy`, sent over HTTP.

    Args:
        client: a `trl.generation.vllm_client.VLLMClient` (or anything with its `generate(prompts, n=...,
            temperature=..., max_tokens=..., logprobs=..., generation_kwargs=...)` and `model`), or the server's base
            URL (`"http://host:8000"`; the client waits `timeout` seconds for it).
        tokenizer: the served model's tokenizer (prompts go as token ids, replies come back as ids), or a path to
            load it from. `None`: loaded from the served model's id (`client.model`).
        step_format: how steps are separated.
        name: id recorded in datasets (defaults to the served model's id).
        temperature: sampling temperature.
        max_new_tokens: token limit of a whole completion (steps already taken count against it).
        max_step_tokens: token limit for one step.
        rendered_prompts: as `VLLMPolicy` (how prompt text becomes token ids).
        stop_token_ids: ids that end a sequence besides the tokenizer's EOS (a chat model's end-of-turn token), to
            tell a completion that ended on its last allowed token from one that was cut there.
        max_concurrency: server requests in flight at once (the server batches them).
        timeout: seconds to wait for the server when `client` is a URL.

    Example:
        >>> from trl_pav.generation import GenerationRequest
        >>> from trl_pav.tokenization import build_char_tokenizer
        >>> tok = build_char_tokenizer("0123456789+=#\\n ")
        >>> class Server:  # a stand-in: every completion is "1+1=2" then EOS
        ...     model = "served-model"
        ...     def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        ...         ids = tok("1+1=2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ...         return {"completion_ids": [ids[:max_tokens]] * (n * len(prompts))}
        >>> policy = VLLMServerPolicy(Server(), tokenizer=tok)
        >>> gen = policy.generate([GenerationRequest("1+1?\\n", seed=3)])[0]
        >>> gen.steps, gen.finished, gen.num_tokens
        (['1+1=2'], True, 6)
    """

    def __init__(
        self,
        client: Any,
        tokenizer: Any = None,
        step_format: StepFormat | None = None,
        *,
        name: str | None = None,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        max_step_tokens: int = 64,
        rendered_prompts: bool | None = None,
        stop_token_ids: Sequence[int] = (),
        max_concurrency: int = 64,
        timeout: float = 240.0,
    ):
        # Not VLLMPolicy.__init__: no engine here, and no vLLM import on this side beyond TRL's client.
        if isinstance(client, str):
            client = make_vllm_client(base_url=client, timeout=timeout)
        served = str(getattr(client, "model", "") or "")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            from ..tokenization import load_tokenizer

            source = tokenizer if tokenizer is not None else served
            if not source:
                raise ValueError("VLLMServerPolicy: the client names no served model; pass tokenizer=")
            tokenizer = load_tokenizer(source)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"VLLMServerPolicy: max_concurrency must be an int >= 1, got {max_concurrency!r}")
        stops = {int(t) for t in stop_token_ids}
        if tokenizer.eos_token_id is not None:
            stops.add(int(tokenizer.eos_token_id))
        self.client = client
        self.served_model = served
        self.llm = _ServerEngine(client, tokenizer, stops, max_concurrency)
        self._sampling_params = _SamplingParams
        self.name = name or served or "vllm-server"
        self.step_format = step_format or StepFormat()
        self.temperature, self.max_new_tokens, self.max_step_tokens = temperature, max_new_tokens, max_step_tokens
        self.rendered_prompts = rendered_prompts
        self.sleep_level = 0  # the server's memory is the server's: sleep() and wake_up() do nothing

    def fingerprint(self) -> dict:
        """What changes this policy's samples: `VLLMPolicy`'s fingerprint of the served model (its files when the id
        is a folder on this machine) and sampling settings."""
        out = super().fingerprint()
        out["class"] = "VLLMServerPolicy"
        return out
