"""Helpers shared by the benchmarks: a base policy to measure with, and the closing JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


def arithmetic_policy_dir(steps: int = 200) -> Path:
    """The demo's cached arithmetic base policy if `make demo` ran, else a quickly trained one (cached too)."""
    demo = ROOT / "outputs" / "demo" / "arithmetic" / "policy"
    if (demo / ".done").exists():
        return demo
    out = ROOT / "outputs" / "bench" / f"arith-policy-{steps}"
    if not (out / "config.json").exists():
        from trl_pav.tasks import ArithmeticTask, TinyPolicyConfig, train_base_policy

        train_base_policy(ArithmeticTask(), out, TinyPolicyConfig(max_steps=steps))
    return out


def emit(result: dict) -> None:
    """Print the benchmark's result as one JSON line (the last line of its output)."""
    print(json.dumps(result), flush=True)
