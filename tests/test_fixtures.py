import torch

from trl_pav import load_tokenizer
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier


def test_tiny_models_build_and_roundtrip(char_tok, bpe_tok, tmp_path):
    for tok in (char_tok, bpe_tok):
        for arch in ("llama", "qwen2"):
            lm = tiny_causal_lm(tok, arch)
            cls = tiny_token_classifier(tok, arch)
            n = sum(p.numel() for p in lm.parameters() if p.requires_grad)
            assert n < 2_000_000, n
            ids = torch.tensor([tok("1+1=2")["input_ids"]])
            assert lm(ids).logits.shape == (1, ids.shape[1], len(tok))
            assert cls(ids).logits.shape == (1, ids.shape[1], 1)


def test_char_tokenizer_reload_keeps_whitespace(char_tok, tmp_path):
    text = "Q: 1 + 2?\n1+2=3\n\nA:3"
    char_tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(text)["input_ids"] == char_tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == text
    assert again.padding_side == "left"


def test_bpe_tokenizer_is_real(bpe_tok):
    assert len(bpe_tok) > 40_000
    enc = bpe_tok("The answer is 19.", return_offsets_mapping=True)
    assert any(e - s > 1 for s, e in enc["offset_mapping"])  # multi-character tokens exist
