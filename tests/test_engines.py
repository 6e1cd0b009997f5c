"""Engines (issue 25): eval-steps dtype/device, public PRMs under ZeRO-3 in RL, the `trl vllm-serve` client policy."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.cli import main
from trl_pav.metrics import predicted_first_errors, step_error_metrics
from trl_pav.step_eval import StepEvalArguments, arithmetic_step_errors, load_scorer
from trl_pav.testing import tiny_public_prm, tiny_token_classifier


@pytest.fixture()
def saved_scorers(tmp_path, char_tok):
    """A trl_pav verifier and a Math-Shepherd-style PRM, both saved in bfloat16."""
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=5).to(torch.bfloat16), char_tok, PAVMetadata())
    verifier.save_pretrained(tmp_path / "pav")
    model, tok = tiny_public_prm("math-shepherd")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "prm")
    tok.save_pretrained(tmp_path / "prm")
    return tmp_path / "pav", tmp_path / "prm"


@pytest.mark.parametrize("scorer_type", ["pav", "math-shepherd"])
def test_eval_steps_loads_in_the_dtype_and_on_the_device_asked(saved_scorers, scorer_type):
    path = saved_scorers[0] if scorer_type == "pav" else saved_scorers[1]
    for dtype, expected in [("auto", torch.bfloat16), ("float32", torch.float32), ("float16", torch.float16)]:
        args = StepEvalArguments(scorer=str(path), scorer_type=scorer_type, dtype=dtype, device="cpu")
        scorer = load_scorer(args)
        assert {p.dtype for p in scorer.model.parameters()} == {expected}, dtype
        assert {p.device.type for p in scorer.model.parameters()} == {"cpu"}
        assert not any(p.requires_grad for p in scorer.model.parameters())
    # No device named: the GPU when one is visible, else the CPU.
    assert StepEvalArguments(scorer=str(path)).resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_eval_steps_command_takes_dtype_and_device(saved_scorers, tmp_path, capsys):
    rows = arithmetic_step_errors(12, 0.3, seed=4).to_list()
    assert {-1} < {r["label"] for r in rows}  # both correct and erroneous traces (no NaN metric)
    (tmp_path / "pb.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    main(["eval-steps", "--scorer", str(saved_scorers[0]), "--data", str(tmp_path / "pb.jsonl"), "--dtype", "float32",
          "--device", "cpu"])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The report is the float32 scorer's own predictions.
    scorer = PAVVerifier.from_pretrained(saved_scorers[0], dtype=torch.float32)
    values = [v[1:] for v in scorer.score([r["problem"] for r in rows], [r["steps"] for r in rows])]
    expected = step_error_metrics(predicted_first_errors(values, 0.5), np.array([r["label"] for r in rows]))
    assert report["overall"] == expected


def test_eval_steps_rejects_bad_dtype_and_device(saved_scorers, capsys):
    with pytest.raises(ValueError, match=r"dtype must be one of.*'fp8'"):
        StepEvalArguments(scorer="x", dtype="fp8")
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        StepEvalArguments(scorer="x", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' asks for a GPU but none is visible"):
            StepEvalArguments(scorer="x", device="cuda:0")
    with pytest.raises(SystemExit):
        main(["eval-steps", "--scorer", str(saved_scorers[0]), "--dtype", "half"])
    assert "--dtype: invalid choice: 'half'" in capsys.readouterr().err


# ---- a public PRM as the RL verifier under DeepSpeed ZeRO-3 ---------------------------------------------------------
ZERO3_PRM_SCRIPT = """
import json, sys
from trl_pav.scripts.common import launched_with_deepspeed
launched_with_deepspeed()  # the CPU process group first (as the recipes do)
from trl_pav.tasks import ArithmeticTask
from trl_pav.tokenization import load_tokenizer
from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

policy, prm, out = sys.argv[1:4]
task = ArithmeticTask()
args = PAVGRPOConfig(output_dir=out, use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                     max_completion_length=12, max_steps=1, report_to=[], save_strategy="no", logging_steps=1,
                     verifier_model_name_or_path=prm, verifier_type="rlhflow", pav_alpha=3.0)
trainer = PAVGRPOTrainer(model=policy, reward_funcs=[grader_reward(task.grader, "gold")], args=args,
                         train_dataset=task.problems_dataset(8, seed=0), processing_class=load_tokenizer(policy))
v = trainer.verifier
q = v.score(["Q:1+2?\\n", "Q:3*4?\\n"], [["1+2=3", "#### 3"], ["3*4=12"]])
result = trainer.train()
partitioned = any(hasattr(p, "ds_id") for p in v.model.parameters())
print(json.dumps({"engine": type(v.model).__name__, "partitioned": partitioned,
                  "lockstep": getattr(v, "lockstep", None) is not None, "q": q, "step": result.global_step}))
"""


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed: trl-pav[deepspeed]")
def test_public_prm_rl_verifier_is_sharded_by_zero3_and_scores_as_unsharded(tmp_path):
    """PAV-GRPO under ZeRO-3 (one CPU process) with a public PRM as the verifier: the PRM, which transformers loads
    inside `zero.Init` (partitioned), is prepared by DeepSpeed like the PAV (sharded, run in lockstep) and scores
    exactly as the same PRM loaded whole; then a training step runs."""
    import os
    import socket
    import subprocess
    import sys

    from trl_pav.prm_adapters import load_public_prm
    from trl_pav.testing import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer()
    tiny_causal_lm(tok, seed=1).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    model, prm_tok = tiny_public_prm("rlhflow", seed=2)
    model.save_pretrained(tmp_path / "prm")
    prm_tok.save_pretrained(tmp_path / "prm")
    (tmp_path / "run.py").write_text(ZERO3_PRM_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    config = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs" / "zero3_cpu.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "1"]
    cmd += ["--main_process_port", port, str(tmp_path / "run.py"), str(tmp_path / "policy"), str(tmp_path / "prm")]
    cmd += [str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith('{"')]
    out = json.loads(line)
    assert out["partitioned"] and out["lockstep"] and out["step"] == 1
    whole = load_public_prm("rlhflow", tmp_path / "prm")
    expected = whole.score(["Q:1+2?\n", "Q:3*4?\n"], [["1+2=3", "#### 3"], ["3*4=12"]])
    for got, want in zip(out["q"], expected):
        assert got == pytest.approx(want, abs=1e-5)


def _lockstep_worker(rank: int, port: int, traces: list[int], out_dir: str) -> None:
    """One of two gloo processes: score `traces[rank]` traces one per pass through a lockstep PRM; write the passes
    its model ran and the scores."""
    import os

    import torch.distributed as dist

    from trl_pav.distributed import Lockstep
    from trl_pav.prm_adapters import RLHFlowPRM
    from trl_pav.trainers.pav_rl import _run_in_lockstep

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        prm = RLHFlowPRM(*tiny_public_prm("rlhflow", seed=2), batch_size=1)
        passes = []
        prm.model.register_forward_hook(lambda *_: passes.append(1))
        _run_in_lockstep(prm, Lockstep("cpu"))
        prompts = [f"Q:{i}+1?\n" for i in range(traces[rank])]
        scores = prm.score(prompts, [["1+1=2"]] * len(prompts))
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"passes": len(passes), "scores": scores}))
    finally:
        dist.destroy_process_group()


def test_lockstep_prm_runs_as_many_passes_on_every_process(tmp_path):
    """Two processes with 3 and 0 traces to score: both run 3 forward passes (the idle one dummy passes, so a ZeRO-3
    gather never waits forever), and the scores are those of the PRM without lockstep."""
    import socket

    import torch.multiprocessing as mp

    from trl_pav.prm_adapters import RLHFlowPRM

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers need no fresh interpreter (importing torch again costs tens of seconds here)
    mp.start_processes(_lockstep_worker, args=(port, [3, 0], str(tmp_path)), nprocs=2, start_method="fork")
    busy, idle = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert busy["passes"] == idle["passes"] == 3 and idle["scores"] == []
    plain = RLHFlowPRM(*tiny_public_prm("rlhflow", seed=2), batch_size=1)
    expected = plain.score([f"Q:{i}+1?\n" for i in range(3)], [["1+1=2"]] * 3)
    assert len(busy["scores"]) == 3
    for got, want in zip(busy["scores"], expected):
        assert got == pytest.approx(want)
