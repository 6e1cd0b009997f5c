"""Engines (issue 25): eval-steps dtype/device, public PRMs under ZeRO-3 in RL, the `trl vllm-serve` client policy."""

import importlib.util
import json
import time
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
    # spawn, not fork: a fork of a process whose torch thread pool has run (the rest of the suite) deadlocks.
    context = mp.start_processes(
        _lockstep_worker, args=(port, [3, 0], str(tmp_path)), nprocs=2, start_method="spawn", join=False
    )
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the two lockstep processes did not finish within 300 s (a missed collective hangs)")
    busy, idle = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert busy["passes"] == idle["passes"] == 3 and idle["scores"] == []
    plain = RLHFlowPRM(*tiny_public_prm("rlhflow", seed=2), batch_size=1)
    expected = plain.score([f"Q:{i}+1?\n" for i in range(3)], [["1+1=2"]] * 3)
    assert len(busy["scores"]) == 3
    for got, want in zip(busy["scores"], expected):
        assert got == pytest.approx(want)


# ---- a running vLLM server (`trl vllm-serve`) as the policy --------------------------------------------------------
class StandInServer:
    """TRL's `VLLMClient` as far as the policy uses it, answering like a vLLM server: child k of a request seeded s
    writes `script(prompt text, s + k)` token by token and stops at the first stop string (kept in the reply with
    `include_stop_str_in_output`), at EOS (kept in the ids), or after `max_tokens`. Records every request."""

    def __init__(self, tokenizer, script, model="served-policy"):
        self.tok, self.script, self.model, self.base_url = tokenizer, script, model, "http://stand-in:8000"
        self.calls = []

    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, logprobs=0, generation_kwargs=None, **kw):
        extra = dict(generation_kwargs or {})
        self.calls.append({"prompts": prompts, "n": n, "max_tokens": max_tokens, "logprobs": logprobs, **extra})
        stops = extra.get("stop") or []
        assert not stops or extra.get("include_stop_str_in_output") is True
        out = []
        for ids in prompts:
            text = self.tok.decode(ids, skip_special_tokens=True)
            for k in range(n):
                body, ends = self.script(text, extra["seed"] + k)
                planned = self.tok(body, add_special_tokens=False)["input_ids"] + (
                    [self.tok.eos_token_id] if ends else []
                )
                got = []
                for t in planned:
                    got.append(t)
                    written = self.tok.decode(got, skip_special_tokens=True)
                    if len(got) >= max_tokens or any(s in written for s in stops):
                        break
                out.append(got)
        return {"prompt_ids": prompts, "completion_ids": out, "logprobs": None, "logprob_token_ids": None}


def scripted(text, seed):
    """Seed 0: a whole trace then EOS; 1: a blank line before its step; 2: never ends; else: one step then EOS."""
    if seed == 0:
        return "2*3=6\n6+1=7\n#### 7", True
    if seed == 1 or text.endswith("?\n\n"):
        return ("\n" if not text.endswith("?\n\n") else "") + "2*3=6\n#### 6", True
    if seed == 2:
        return "1" * 100, False
    return "1+1=2", True


def test_server_policy_reads_finish_reasons_from_the_reply(char_tok):
    from trl_pav.generation import GenerationRequest
    from trl_pav.generation.vllm_server import VLLMServerPolicy
    from trl_pav.tokenization import prompt_token_ids

    server = StandInServer(char_tok, scripted)
    policy = VLLMServerPolicy(server, tokenizer=char_tok, max_new_tokens=40, max_step_tokens=12)
    whole, cut = policy.generate([GenerationRequest("Q:2*3+1?\n", seed=0), GenerationRequest("Q:1?\n", seed=2)])
    assert (whole.steps, whole.finished, whole.truncated, whole.num_tokens) == (
        ["2*3=6", "6+1=7", "#### 7"], True, False, len("2*3=6\n6+1=7\n#### 7") + 1,
    )  # fmt: skip
    assert (cut.finished, cut.truncated, cut.num_tokens) == (False, True, 40)
    # Token-id prompts with one BOS, no logprobs, the request's own seed, no stop string for whole traces.
    assert server.calls[0]["prompts"] == [prompt_token_ids(char_tok, "Q:2*3+1?\n")]
    assert (server.calls[0]["seed"], server.calls[0]["logprobs"], server.calls[0].get("stop")) == (0, None, None)
    # One step at a time: the separator is a stop string, removed from the step; a step is not the end of the trace.
    server.calls.clear()
    step, ends, capped = policy.generate(
        [GenerationRequest("Q:2*3+1?\n", seed=0), GenerationRequest("Q:1+1?\n", seed=5),
         GenerationRequest("Q:1?\n", seed=2)], stop_at_step=True,
    )  # fmt: skip
    assert (step.steps, step.finished, step.num_tokens) == (["2*3=6"], False, 6)
    assert (ends.steps, ends.finished, ends.truncated, ends.num_tokens) == (["1+1=2"], True, False, 6)
    assert (capped.truncated, capped.num_tokens) == (True, 12)
    assert all(c["stop"] == ["\n"] and c["max_tokens"] == 12 for c in server.calls)
    # A blank line before the step: continued past it (as the local engine is), its token charged to the sample.
    server.calls.clear()
    (blank,) = policy.generate([GenerationRequest("Q:2*3?\n", seed=1)], stop_at_step=True)
    assert (blank.steps, blank.finished, blank.num_tokens) == (["2*3=6"], False, 1 + 6)
    assert len(server.calls) == 2 and server.calls[1]["max_tokens"] == 11
    assert char_tok.decode(server.calls[1]["prompts"][0], skip_special_tokens=True) == "Q:2*3?\n\n"


def test_server_policy_sends_one_request_per_group(char_tok):
    from trl_pav.generation import GenerationGroup, generate_groups
    from trl_pav.generation.vllm_server import VLLMServerPolicy

    server = StandInServer(char_tok, lambda text, seed: (f"{seed}+0={seed}", True))
    policy = VLLMServerPolicy(server, tokenizer=char_tok, max_new_tokens=20, max_concurrency=2)
    groups = [GenerationGroup("Q:1?\n", seed=10, n=3, first=2), GenerationGroup("Q:2?\n", ("2+0=2",), seed=20, n=2)]
    out = generate_groups(policy, groups)
    # One request per group, n = group.n, seeded group.seed + first: child r is the server's sample seed + r.
    assert sorted((c["n"], c["seed"]) for c in server.calls) == [(2, 20), (3, 12)]
    assert [[g.steps for g in gens] for gens in out] == [
        [["12+0=12"], ["13+0=13"], ["14+0=14"]],
        [["20+0=20"], ["21+0=21"]],
    ]
    assert policy.fingerprint()["class"] == "VLLMServerPolicy" and policy.name == "served-policy"
    with pytest.raises(ValueError, match="max_concurrency must be an int >= 1"):
        VLLMServerPolicy(server, tokenizer=char_tok, max_concurrency=0)


def exact_arithmetic(text, seed):
    """The arithmetic task's correct continuation of whatever prefix the prompt text holds."""
    from trl_pav.generation import GenerationRequest
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy

    prompt, _, rest = text.partition("?\n")
    steps = tuple(s for s in rest.split("\n") if s)
    (gen,) = NoisyArithmeticPolicy(ArithmeticTask(), 0.0).generate([GenerationRequest(prompt + "?\n", steps, seed)])
    return "\n".join(gen.steps), True


def test_label_stage_generates_on_a_server_with_vllm_mode_server(tmp_path, char_tok, monkeypatch, capsys):
    from trl_pav import load_labels
    from trl_pav.generation import vllm_server
    from trl_pav.testing import tiny_causal_lm

    policy = tmp_path / "policy"
    tiny_causal_lm(char_tok).save_pretrained(policy)
    char_tok.save_pretrained(policy)
    servers = []

    def connect(base_url, host, port, timeout):
        servers.append((base_url, host, port, timeout))
        return StandInServer(char_tok, exact_arithmetic, model=str(policy))

    monkeypatch.setattr(vllm_server, "make_vllm_client", connect)
    argv = ["label", "--model_name_or_path", str(policy), "--task", "arithmetic", "--num_problems", "3", "--n_cov",
            "1", "--n_mc", "2", "--max_new_tokens", "40", "--output_dir", str(tmp_path / "labels"), "--show_progress",
            "false"]  # fmt: skip
    argv += ["--use_vllm", "--vllm_mode", "server", "--vllm_server_base_url", "http://gpu-node:8000"]
    main(argv)
    capsys.readouterr()
    assert servers == [("http://gpu-node:8000", "0.0.0.0", 8000, 240.0)]
    dataset, metadata = load_labels(tmp_path / "labels")
    # The server's policy never errs: every trace is correct and every label 1.
    assert len(dataset) == 3 and all(v == 1.0 for row in dataset["labels"] for v in row)
    assert metadata["rollouts"] > 0
    # A server that serves another model is refused, naming both.
    monkeypatch.setattr(vllm_server, "make_vllm_client", lambda *a: StandInServer(char_tok, exact_arithmetic, "other"))
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "labels2")
    with pytest.raises(SystemExit, match=r"serves 'other', not '.*policy': start it with trl vllm-serve --model"):
        main(argv)
    with pytest.raises(SystemExit):
        main([*argv, "--vllm_mode", "remote"])
    assert "invalid choice: 'remote'" in capsys.readouterr().err
