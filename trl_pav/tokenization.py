"""Character-level tokenizers built locally (no Hub), with offsets, BOS handling and a safe reload path."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["build_char_tokenizer", "load_tokenizer"]

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"


def build_char_tokenizer(alphabet: Iterable[str], add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer with one token per character of `alphabet`, plus `<pad>`, `<s>`, `</s>`, `<unk>`.

    Offsets are exact (one character per token), decoding concatenates characters, and BOS is prepended on encoding
    (tiny models trained here learn far better with it).

    Example:
        >>> tok = build_char_tokenizer("0123456789+-*=")
        >>> tok("12+3")["input_ids"][:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("1")]
        True
        >>> tok.decode(tok("12+3")["input_ids"], skip_special_tokens=True)
        '12+3'
    """
    chars = sorted(set(alphabet))
    if not chars:
        raise ValueError("build_char_tokenizer: alphabet is empty")
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK, *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character is its own pre-token; `[\s\S]` also matches newlines.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left"
    )


def load_tokenizer(path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by trl_pav (or any fast tokenizer) without letting the model type rebuild it.

    `AutoTokenizer` can rebuild a custom tokenizer as the architecture's default tokenizer class (for a `qwen2`
    config, byte-level BPE that drops spaces and newlines of a character vocabulary). Loading the serialized
    `tokenizer.json` directly avoids that.
    """
    return PreTrainedTokenizerFast.from_pretrained(path, **kwargs)
