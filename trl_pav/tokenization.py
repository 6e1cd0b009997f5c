"""Character-level tokenizers built locally (no Hub), with offsets, BOS handling and a safe reload path; how prompt
text becomes token ids (one BOS, whether or not a chat template already wrote it)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["adds_bos", "build_char_tokenizer", "load_tokenizer", "prompt_token_ids", "without_added_bos"]

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


def adds_bos(tokenizer) -> bool:
    """Whether `tokenizer(text)` (special tokens on) prepends the BOS token.

    Example:
        >>> adds_bos(build_char_tokenizer("ab")), adds_bos(build_char_tokenizer("ab", add_bos=False))
        (True, False)
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    probe = "a"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    return len(with_special) > len(tokenizer(probe, add_special_tokens=False)["input_ids"]) and with_special[0] == bos


def _starts_with_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return isinstance(bos, str) and bool(bos) and text.startswith(bos)


def prompt_token_ids(tokenizer, text: str, rendered: bool | None = None) -> list[int]:
    """Token ids of a prompt (or of a prompt followed by steps) as a policy should see them: with exactly the special
    tokens its text calls for.

    A chat template writes the model's special tokens itself (Llama 3, Gemma and Mistral templates open with BOS);
    tokenizing its output with the tokenizer's special tokens on adds a second BOS. TRL therefore tokenizes template
    output with `add_special_tokens=False`, and so does this function.

    Args:
        tokenizer: the policy's tokenizer.
        text: the prompt text (plain, or the output of `apply_chat_template(..., tokenize=False)`), possibly followed
            by steps.
        rendered: `True`: `text` was rendered by a chat template, which placed every special token (TRL's rule:
            nothing is added). `False`: plain text, the tokenizer adds its special tokens. `None` (default): plain
            text unless it already starts with the BOS token's text, which is then not added a second time.

    Example:
        >>> tok = build_char_tokenizer("abc<>/s")
        >>> prompt_token_ids(tok, "ab") == [tok.bos_token_id, *tok("ab", add_special_tokens=False)["input_ids"]]
        True
        >>> prompt_token_ids(tok, "<s>ab") == prompt_token_ids(tok, "ab")  # one BOS, not two
        True
        >>> prompt_token_ids(tok, "ab", rendered=True) == tok("ab", add_special_tokens=False)["input_ids"]
        True
    """
    if rendered is None:
        rendered = _starts_with_bos(tokenizer, text)
    return list(tokenizer(text, add_special_tokens=not rendered)["input_ids"])


def without_added_bos(tokenizer, text: str) -> str:
    """`text` without a leading BOS token that `tokenizer` would add again, for code that tokenizes a prompt with
    special tokens on (`trl_pav.steps.tokenize_trace`): a chat template that writes BOS then yields one BOS, not two
    (the ids equal `prompt_token_ids(tokenizer, text)` wherever the tokenizer splits the text after a special token
    as it splits the start of a text, as byte-level BPE does). Other text is returned unchanged.

    Example:
        >>> tok = build_char_tokenizer("abc<>/s")
        >>> without_added_bos(tok, "<s>ab"), without_added_bos(tok, "ab")
        ('ab', 'ab')
        >>> without_added_bos(build_char_tokenizer("abc<>/s", add_bos=False), "<s>ab")  # nothing would add it back
        '<s>ab'
    """
    if _starts_with_bos(tokenizer, text) and adds_bos(tokenizer):
        return text[len(tokenizer.bos_token) :]
    return text
