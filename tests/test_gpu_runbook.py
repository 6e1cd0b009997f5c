"""The GPU runbook (`benchmarks/gpu/run_math_tiny.py`): a clear one-line refusal without a GPU, and its CPU dry run
(the same recipes, configs and checks with a tiny model and the HF backend) ending in one JSON line."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run_math_tiny.py"
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_refuses_without_gpu_or_vllm_in_one_line(tmp_path, math500_path):
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") and importlib.util.find_spec("deepspeed"):
        pytest.skip("a GPU, vLLM and DeepSpeed are present: the runbook would run")
    proc = run("--out", str(tmp_path / "out"), "--math500", math500_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("run_math_tiny: ") and "--cpu-dry-run" in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_refuses_a_folder_it_did_not_write(tmp_path, math500_path):
    (tmp_path / "mine.txt").write_text("keep")
    proc = run("--cpu-dry-run", "--out", str(tmp_path), "--math500", math500_path)
    assert proc.returncode == 2 and "did not write" in proc.stderr and (tmp_path / "mine.txt").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_dry_run_end_to_end(tmp_path, math500_path):
    proc = run("--cpu-dry-run", "--out", str(tmp_path / "out"), "--math500", math500_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "gpu_math_tiny" and result["mode"] == "cpu-dry-run" and result["backend"] == "hf"
    assert result["zero3"] == (importlib.util.find_spec("deepspeed") is not None)
    assert set(result["stages"]) == {"label", "train_pav", "rl", "search"}
    for name, stage in result["stages"].items():
        assert stage["seconds"] > 0 and result[f"{name}_s"] == stage["seconds"]
    label, pav, rl, search = (result["stages"][k] for k in ("label", "train_pav", "rl", "search"))
    assert label["problems"] == 4 and label["rollouts"] > 0 and label["rollouts_per_s"] > 0
    assert label["tokens_per_s"] > 0 and label["problems_per_s"] > 0
    assert pav["steps"] == 2 and pav["samples_per_s"] > 0
    assert rl["steps"] == 1 and rl["rollouts"] == 4 and rl["rollouts_per_s"] > 0 and rl["pav_metrics"]
    assert search["problems"] == 2 and set(search["methods"]) == {"pav_beam", "pav_bon", "majority"}
    assert search["tokens_per_s"] > 0 and search["beam_problems_per_s"] > 0
    assert result["total_s"] >= sum(result[f"{k}_s"] for k in result["stages"])
    for config in ("label", "train_pav", "rl_pav", "search_eval"):  # the derived configs, kept for reruns
        assert (tmp_path / "out" / "configs" / f"{config}.yaml").is_file()
