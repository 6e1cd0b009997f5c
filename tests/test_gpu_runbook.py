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
    assert search["problems"] == 2 and set(search["methods"]) == {"pav_beam", "pav_bon", "majority", "random_pick"}
    assert search["tokens_per_s"] > 0 and search["beam_problems_per_s"] > 0
    assert set(search["versus_base_sampling"]) == {"pav_beam", "pav_bon"}
    assert result["total_s"] >= sum(result[f"{k}_s"] for k in result["stages"])
    for config in ("label", "train_pav", "rl_pav", "search_eval"):  # the derived configs, kept for reruns
        assert (tmp_path / "out" / "configs" / f"{config}.yaml").is_file()


def runbook_module():
    spec = importlib.util.spec_from_file_location("_run_math_tiny", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_below_base_sampling_beyond_noise_is_caught():
    """Search at N against base-policy sampling (random_pick at N), paired over problems."""
    rb = runbook_module()

    def results(beam, base):
        rec = lambda xs: {"n": 4, "accuracy": sum(xs) / len(xs), "per_problem_correct": xs}  # noqa: E731
        return {"methods": {"pav_beam": [rec(beam)], "random_pick": [rec(base)]}}

    # Equal, or above: fine. Below on every problem by 0.5 (no spread): below beyond any noise.
    assert not rb.compare_to_base_sampling(results([1, 0, 1, 0], [0.5, 0, 1, 0]), ("pav_beam",))["pav_beam"][4]["below"]
    out = rb.compare_to_base_sampling(results([0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]), ("pav_beam",))["pav_beam"][4]
    assert out["below"] and out["diff"] == -0.5 and out["se"] == 0.0 and out["base"] == 0.5
    # One problem of four lost (d = [-1, 0, 0, 0]: mean -0.25, SE 0.25): within 2 SEs, not within 0.5.
    lost_one = results([0, 1, 1, 1], [1, 1, 1, 1])
    assert not rb.compare_to_base_sampling(lost_one, ("pav_beam",), z=2.0)["pav_beam"][4]["below"]
    assert rb.compare_to_base_sampling(lost_one, ("pav_beam",), z=0.5)["pav_beam"][4]["below"]
    with pytest.raises(rb.RunbookError, match="no random_pick records"):
        rb.compare_to_base_sampling({"methods": {"pav_beam": []}}, ("pav_beam",))


def test_math500_comes_from_a_file_or_is_fetched_with_a_clear_message(tmp_path):
    proc = run("--cpu-dry-run", "--out", str(tmp_path / "out"), "--math500", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "no MATH-500 file at" in proc.stderr
    # The default is the Hub id, fetched with datasets: offline, one line says how to give the data instead.
    assert runbook_module().parse_args([]).math500 == "HuggingFaceH4/MATH-500"
    proc = run("--cpu-dry-run", "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "could not fetch MATH-500 ('HuggingFaceH4/MATH-500', split test) with datasets" in last
    assert "pass --math500 FILE" in last and "Traceback" not in proc.stderr
