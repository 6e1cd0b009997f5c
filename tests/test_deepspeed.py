"""DeepSpeed ZeRO-2/3 through `accelerate launch` on the CPU (gloo, `DS_ACCELERATOR=cpu`), with tiny local models.

Skipped where DeepSpeed is not installed (`pip install "trl-pav[deepspeed]"`; `make test-distributed` installs it).
One process under ZeRO-3 runs in the default suite: it takes the sharded-parameter code paths (parameters gathered for
generation and for every forward pass, the frozen verifier under TRL's `prepare_deepspeed`, the consolidated 16-bit
save, search with sharded verifiers). Two-process runs are marked `distributed` (`pytest -m distributed`,
`make test-distributed`).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trl_pav import PAVVerifier
from trl_pav.testing import char_tokenizer, tiny_causal_lm

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs" / "arithmetic"
ACCELERATE = ROOT / "recipes" / "accelerate_configs"
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
}
if not torch.cuda.is_available():
    ENV["DS_ACCELERATOR"] = "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ds(recipe: str, stage: int, *args: str, processes: int = 1, check: bool = True, timeout: int = 600):
    """`accelerate launch` with `zero{stage}_cpu.yaml` and `processes` processes; the recipe's JSON summary (or the
    completed process when `check` is off)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / f"zero{stage}_cpu.yaml"),
    ]
    cmd += ["--num_processes", str(processes), "--main_process_port", str(_free_port())]
    cmd += [str(ROOT / "recipes" / f"{recipe}.py"), *args]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if not check:
        return proc
    if proc.returncode != 0:
        raise AssertionError(f"{recipe} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    assert len(lines) == 1, f"{recipe}: expected one JSON summary (main process only), got {lines}"
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny policy, stepwise labels (1-4 steps, soft labels) and an untrained verifier on the policy's backbone."""
    out = tmp_path_factory.mktemp("deepspeed")
    tok = char_tokenizer()
    tiny_causal_lm(tok).save_pretrained(out / "policy")
    tok.save_pretrained(out / "policy")
    steps = ["1+2=3", "3*4=12", "12-5=7", "#### 7"]
    rows = [
        {
            "prompt": f"Q:{i}?\n",
            "completions": steps[: 1 + i % 4],
            "labels": [(0.37 * i + 0.29 * h) % 1 for h in range(1 + i % 4)],
        }
        for i in range(16)
    ]
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    PAVVerifier.from_causal_lm(out / "policy").save_pretrained(out / "verifier")
    return out


def train_pav_args(tiny: Path, output_dir: Path, batch: int = 2) -> tuple[str, ...]:
    return (
        *("--config", str(CONFIGS / "train_pav.yaml"), "--model_name_or_path", str(tiny / "policy")),
        *("--dataset_name", str(tiny / "labels.jsonl"), "--output_dir", str(output_dir), "--eval_fraction", "0.25"),
        *("--max_steps", "2", "--per_device_train_batch_size", str(batch), "--eval_steps", "1", "--logging_steps", "1"),
    )


def rl_args(tiny: Path, output_dir: Path, algorithm: str = "grpo") -> tuple[str, ...]:
    return (
        *("--config", str(CONFIGS / "rl_pav.yaml"), "--algorithm", algorithm),
        *("--model_name_or_path", str(tiny / "policy"), "--verifier_model_name_or_path", str(tiny / "verifier")),
        *("--output_dir", str(output_dir), "--num_problems", "8", "--max_steps", "1"),
        *("--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "12"),
        *("--logging_steps", "1"),
    )


def assert_trained_checkpoint(folder: Path, init: Path) -> None:
    """A full (not ZeRO-3 placeholder) checkpoint with the initial model's weights names, some of them changed."""
    after, before = load_file(str(folder / "model.safetensors")), load_file(str(init / "model.safetensors"))
    assert set(before) <= set(after)  # ZeRO-2's save keeps the tied lm_head as its own entry; from_pretrained ties it
    assert all(after[k].shape == before[k].shape and after[k].numel() > 0 for k in before)
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_zero3_one_process_verifier_pav_grpo_and_search(tiny):
    """ZeRO-3, one process: verifier training (gathered 16-bit save that loads as a `PAVVerifier`), then PAV-GRPO with
    that verifier frozen under `prepare_deepspeed`, run in lockstep, and the policy generating from sharded weights;
    then search with the verifiers sharded (not silently left out of DeepSpeed)."""
    result = run_ds("train_pav", 3, *train_pav_args(tiny, tiny / "pav-z3"))
    assert result["kind"] == "pav" and result["global_step"] == 2 and 0.0 <= result["eval_brier"] <= 1.0
    assert_trained_checkpoint(tiny / "pav-z3", tiny / "policy")
    q = PAVVerifier.from_pretrained(tiny / "pav-z3").score(["Q:1+2?\n"], [["1+2=3", "#### 3"]])[0]
    assert len(q) == 3 and all(0.0 < v < 1.0 for v in q)
    args = list(rl_args(tiny, tiny / "rl-z3"))
    args[args.index("--verifier_model_name_or_path") + 1] = str(tiny / "pav-z3")
    result = run_ds("rl_pav", 3, *args)
    assert result["algorithm"] == "grpo" and result["global_step"] == 1 and not result["outcome_only"]
    assert_trained_checkpoint(tiny / "rl-z3", tiny / "policy")
    result = run_ds("search_eval", 3, *search_args(tiny, tiny / "search-z3"))
    assert result["verifiers_sharded"] and result["num_problems"] == 3


def search_args(tiny: Path, output_dir: Path) -> tuple[str, ...]:
    return (
        *("--config", str(CONFIGS / "search_eval.yaml"), "--model_name_or_path", str(tiny / "policy")),
        *("--pav_model_name_or_path", str(tiny / "verifier"), "--orm_model_name_or_path", str(tiny / "verifier")),
        *("--num_problems", "3", "--budgets", "3", "--max_depth", "3", "--max_new_tokens", "16"),
        *("--methods", "pav_beam", "orm_bon", "majority", "--output_dir", str(output_dir)),
    )


@pytest.mark.distributed
def test_search_zero3_two_processes_equal_one_plain_process(tiny, tmp_path):
    """Search with both verifiers sharded by ZeRO-3 across two processes (run in lockstep; the policy whole on each
    process, generating without syncing) finds the same answers with the same token counts as one plain process."""
    sharded = run_ds("search_eval", 3, *search_args(tiny, tmp_path / "z3"), processes=2)
    assert sharded["verifiers_sharded"]
    plain = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "search_eval.py"), *search_args(tiny, tmp_path / "plain")],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    a = json.loads((tmp_path / "z3" / "results.json").read_text())
    b = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert a["methods"].keys() == b["methods"].keys()
    for method in b["methods"]:
        for x, y in zip(a["methods"][method], b["methods"][method], strict=True):
            keys = ("correct", "generated_tokens", "verifier_tokens")
            assert [x[k] for k in keys] == [y[k] for k in keys], method
    assert any(r["verifier_tokens"] > 0 for r in a["methods"]["pav_beam"])


@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_verifier_training_two_processes_equal_one(tiny, tmp_path, stage):
    """Two processes with 2 rows each train the same verifier as one process with 4 (ZeRO-2 and ZeRO-3)."""
    two = run_ds("train_pav", stage, *train_pav_args(tiny, tmp_path / "two", batch=2), processes=2)
    one = run_ds("train_pav", stage, *train_pav_args(tiny, tmp_path / "one", batch=4))
    assert two["global_step"] == one["global_step"] == 2
    a, b = (
        load_file(str(tmp_path / "two" / "model.safetensors")),
        load_file(str(tmp_path / "one" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=f"parameter {name}")
    assert_trained_checkpoint(tmp_path / "two", tiny / "policy")


@pytest.mark.distributed
@pytest.mark.parametrize(("stage", "algorithm"), [(2, "grpo"), (3, "grpo"), (3, "rloo"), (3, "ppo")])
def test_pav_rl_two_processes(tiny, tmp_path, stage, algorithm):
    """PAV-RL on two processes: the reference model and the verifier prepared by DeepSpeed; under ZeRO-3 the
    verifier runs in lockstep. With 12-token completions one process may have no complete step to score: it still
    joins every collective (a skipped metric gather made ZeRO-3's next collective mismatch)."""
    result = run_ds("rl_pav", stage, *rl_args(tiny, tmp_path / "rl", algorithm), processes=2)
    assert result["algorithm"] == algorithm and result["global_step"] == 1
    assert_trained_checkpoint(tmp_path / "rl", tiny / "policy")


@pytest.mark.distributed
def test_two_processes_without_use_cpu_fail_clearly(tiny, tmp_path):
    """Without `use_cpu` on a GPU-less machine, accelerate counts one process while DeepSpeed sees two: the recipe
    says so before DeepSpeed's batch-size assertion."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: use_cpu is not needed")
    proc = run_ds("train_pav", 2, *train_pav_args(tiny, tmp_path / "x"), "--use_cpu", "false", processes=2, check=False)
    assert proc.returncode != 0
    assert "the launcher started 2 processes but the training arguments count 1: set use_cpu: true" in proc.stderr


@pytest.mark.distributed
def test_sft_label_and_lora_verifier_zero3_two_processes(tiny, tmp_path):
    """The other stages under ZeRO-3 on two processes: SFT from scratch (the model built inside `zero.Init`),
    labeling (no training: the policy is whole on each process), and a LoRA verifier whose adapter (head included)
    is saved gathered and loads as a `PAVVerifier`."""
    sft = run_ds(
        "sft",
        3,
        *("--config", str(CONFIGS / "sft.yaml"), "--output_dir", str(tmp_path / "sft"), "--num_problems", "32"),
        *("--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1"),
        processes=2,
    )
    assert sft["global_step"] == 2 and sft["train_rows"] == 32
    weights = load_file(str(tmp_path / "sft" / "model.safetensors"))
    assert weights and all(v.numel() > 0 for v in weights.values())
    label = run_ds(
        "label",
        3,
        *("--config", str(CONFIGS / "label.yaml"), "--model_name_or_path", str(tiny / "policy")),
        *("--output_dir", str(tmp_path / "labels"), "--num_problems", "4", "--n_cov", "2", "--n_mc", "2"),
        *("--shard_size", "1", "--max_new_tokens", "24", "--show_progress", "false"),
        processes=2,
    )
    assert label["num_processes"] == 2 and label["rollouts"] > 0
    lora = ("--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj")
    run_ds("train_pav", 3, *train_pav_args(tiny, tmp_path / "lora"), *lora, processes=2)
    adapter = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    assert any("score" in k for k in adapter) and all(v.numel() > 0 for v in adapter.values())
    q = PAVVerifier.from_pretrained(tmp_path / "lora").score(["Q:1+2?\n"], [["1+2=3", "#### 3"]])[0]
    assert len(q) == 3 and all(0.0 < v < 1.0 for v in q)


def test_lora_verifier_loads_whole_where_zero3_is_registered(tmp_path):
    """A Trainer under ZeRO-3 registers its DeepSpeed config, and transformers then loads every model inside
    `deepspeed.zero.Init` (weights partitioned): PEFT's merge of a LoRA verifier failed on them ("size of tensor a (0)
    must match"), as PAV-RL with a LoRA PAV under `zero3.yaml` would. The base now loads whole and the registration
    survives, so the trainer's DeepSpeed engine still shards the merged verifier."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from trl_pav import PAVRewardConfig, PAVRewardTrainer
    from trl_pav.testing import tiny_token_classifier

    tok = char_tokenizer()
    tiny_token_classifier(tok).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    rows = [
        {"prompt": f"Q:{i}?\n", "completions": ["1+2=3", "#### 3"], "labels": [0.25 * (i % 4), 1.0]} for i in range(4)
    ]
    config = PAVRewardConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True
    )
    lora = LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(str(tmp_path / "base"), config, Dataset.from_list(rows), peft_config=lora)
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    expected = trainer.verifier().score(["Q:1?\n"], [["1+2=3", "#### 3"]])
    del trainer
    registered = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert is_deepspeed_zero3_enabled()
    try:
        verifier = PAVVerifier.from_pretrained(tmp_path / "adapter")
        assert is_deepspeed_zero3_enabled()  # restored
    finally:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    del registered
    assert not any(hasattr(p, "ds_id") for p in verifier.model.parameters())  # whole, not partitioned
    got = verifier.score(["Q:1?\n"], [["1+2=3", "#### 3"]])
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-5, rtol=1e-5)
