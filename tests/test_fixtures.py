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


def test_strip_gguf_quantization_makes_a_dequantized_gguf_model_saveable(char_tok, tmp_path):
    """A model loaded with `gguf_file=` is dequantized on the CPU but keeps the GGUF quantizer and config, so
    `save_pretrained` refuses it and trainers treat it as quantized; `strip_gguf_quantization` makes it plain."""
    import pytest
    from transformers import AutoModelForCausalLM
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training
    from transformers.utils.quantization_config import GgufConfig

    from trl_pav.testing import strip_gguf_quantization

    model = tiny_causal_lm(char_tok)
    # The state `from_pretrained(folder, gguf_file=...)` leaves behind (transformers 5.x, no `kernels`).
    config = GgufConfig(gguf_file="model.gguf")
    model.hf_quantizer = GgufHfQuantizer(config)
    model.is_quantized, model.quantization_method = True, config.quant_method
    model.config.quantization_config = config
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "before")
    with pytest.raises(ValueError, match="quantized"):  # what every Trainer checks first
        validate_quantization_for_training(model)
    assert strip_gguf_quantization(model) is model
    validate_quantization_for_training(model)
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized
    model.save_pretrained(tmp_path / "after")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "after")
    assert getattr(again.config, "quantization_config", None) is None
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_strip_gguf_quantization_refuses_packed_weights(char_tok):
    import pytest

    from trl_pav.testing import strip_gguf_quantization

    model = tiny_causal_lm(char_tok)
    model.model.norm.weight = torch.nn.Parameter(torch.zeros(4, dtype=torch.uint8), requires_grad=False)
    with pytest.raises(ValueError, match="packed"):
        strip_gguf_quantization(model)
