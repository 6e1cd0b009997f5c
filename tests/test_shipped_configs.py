"""Every shipped recipe config parses with its recipe's parser (no model is loaded): a key that the pinned TRL or
transformers no longer knows fails here, not on the first GPU hour of a user's run."""

import importlib
import os
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*/*.yaml"))
STAGES = {"label": "label", "search_eval": "search_eval", "sft": "sft", "train_pav": "train_verifier"}
STAGES["train_orm"] = "train_verifier"


def stage_of(path: Path) -> str:
    return "rl" if path.stem.startswith("rl_") else STAGES[path.stem]


@pytest.fixture
def restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_every_config_is_covered():
    assert {p.parent.name for p in CONFIGS} >= {"arithmetic", "math_1.5b"}
    assert all(stage_of(p) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_parses(path, restore_environ):
    module = importlib.import_module(f"trl_pav.scripts.{stage_of(path)}")
    argv = ["--config", str(path)]
    if yaml.safe_load(path.read_text()).get("bf16") and not torch.cuda.is_available():
        argv += ["--bf16", "false"]  # the GPU configs' bf16 is refused on a CPU by transformers itself
    parsed = module.make_parser(argv).parse_args_and_config(args=argv)
    assert len(parsed) == 3
