"""Every recipe end to end through `accelerate launch` on two CPU processes, with the shipped arithmetic configs
(sizes overridden on the command line), and data-parallel runs checked against one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trl_pav import PAVVerifier, load_labels, validate_stepwise
from trl_pav.testing import char_tokenizer, tiny_causal_lm

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs" / "arithmetic"
TWO_CPUS = ROOT / "recipes" / "accelerate_configs" / "cpu_2proc.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(recipe: str, *args: str, processes: int = 2, timeout: int = 600) -> dict:
    """Run `recipes/<recipe>.py` (under `accelerate launch` with the CPU config when processes == 2); its JSON."""
    script = str(ROOT / "recipes" / f"{recipe}.py")
    if processes == 2:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(TWO_CPUS)]
        cmd += ["--main_process_port", str(_free_port()), script, *args]
    else:
        cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{recipe} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    assert len(lines) == 1, f"{recipe}: expected one JSON summary (main process only), got {lines}"
    return json.loads(lines[0])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """SFT from scratch -> labels -> PAV and ORM, each through `accelerate launch` on two CPU processes."""
    out = tmp_path_factory.mktemp("recipes")
    results = {}
    results["sft"] = launch(
        "sft",
        *("--config", str(CONFIGS / "sft.yaml"), "--output_dir", str(out / "policy")),
        *("--num_problems", "64", "--max_steps", "2", "--per_device_train_batch_size", "8", "--logging_steps", "1"),
    )
    results["label"] = launch(
        "label",
        *("--config", str(CONFIGS / "label.yaml"), "--model_name_or_path", str(out / "policy")),
        *("--output_dir", str(out / "labels"), "--num_problems", "4", "--n_cov", "2", "--n_mc", "2"),
        *("--shard_size", "1", "--max_new_tokens", "24", "--show_progress", "false"),
    )
    tiny_train = ("--max_steps", "2", "--per_device_train_batch_size", "2", "--eval_steps", "1", "--logging_steps", "1")
    for kind in ("pav", "orm"):
        results[kind] = launch(
            f"train_{kind}",
            *("--config", str(CONFIGS / f"train_{kind}.yaml"), "--model_name_or_path", str(out / "policy")),
            *("--dataset_name", str(out / "labels"), "--output_dir", str(out / kind), "--eval_fraction", "0.25"),
            *tiny_train,
        )
    return out, results


def test_sft_and_label_recipes(pipeline):
    out, results = pipeline
    assert results["sft"]["global_step"] == 2 and results["sft"]["train_rows"] == 64
    assert (out / "policy" / "model.safetensors").exists() and (out / "policy" / "tokenizer.json").exists()
    dataset, meta = load_labels(out / "labels")
    validate_stepwise(dataset)
    assert meta["num_processes"] == 2 and results["label"]["num_processes"] == 2
    # 4 problems x n_cov 2 seed traces; an empty trace (no step) is dropped and counted.
    assert meta["num_traces"] == len(dataset) == 8 - meta["empty_traces"] and meta["config"]["n_mc"] == 2
    assert results["label"]["rollouts"] == meta["rollouts"] > 0


def test_verifier_recipes(pipeline):
    out, results = pipeline
    for kind in ("pav", "orm"):
        assert results[kind]["kind"] == kind and results[kind]["global_step"] == 2
        assert 0.0 <= results[kind]["eval_brier"] <= 1.0
        verifier = PAVVerifier.from_pretrained(out / kind)
        assert verifier.metadata.kind == kind and verifier.metadata.prover_k == 4
        q = verifier.score(["Q:1+2?\n"], [["1+2=3", "#### 3"]])[0]
        assert len(q) == 3 and all(0.0 < v < 1.0 for v in q)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_rl_recipe(pipeline, algorithm):
    out, _ = pipeline
    result = launch(
        "rl_pav",
        *("--config", str(CONFIGS / "rl_pav.yaml"), "--algorithm", algorithm),
        *("--model_name_or_path", str(out / "policy"), "--verifier_model_name_or_path", str(out / "pav")),
        *("--output_dir", str(out / f"rl-{algorithm}"), "--num_problems", "8", "--max_steps", "1"),
        *("--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "12"),
        *(
            "--logging_steps",
            "1",
        ),
    )
    assert result["algorithm"] == algorithm and result["global_step"] == 1 and not result["outcome_only"]
    before, after = _weights(out / "policy"), _weights(out / f"rl-{algorithm}")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_search_eval_recipe_two_processes_equal_one(pipeline):
    out, _ = pipeline
    common = (
        *("--config", str(CONFIGS / "search_eval.yaml"), "--model_name_or_path", str(out / "policy")),
        *("--pav_model_name_or_path", str(out / "pav"), "--orm_model_name_or_path", str(out / "orm")),
        *("--num_problems", "3", "--budgets", "3", "--max_depth", "3", "--max_new_tokens", "16"),
        *("--methods", "pav_beam", "orm_bon", "majority", "pass_at_n"),
    )
    two = launch("search_eval", *common, "--output_dir", str(out / "search2"))
    one = launch("search_eval", *common, "--output_dir", str(out / "search1"), processes=1)
    assert two["num_problems"] == one["num_problems"] == 3 and two["best_accuracy"] == one["best_accuracy"]
    r2 = json.loads((out / "search2" / "results.json").read_text())
    r1 = json.loads((out / "search1" / "results.json").read_text())
    for method in r1["methods"]:  # same answers and the same generated tokens, however the problems are split
        for a, b in zip(r1["methods"][method], r2["methods"][method]):
            assert (a["correct"], a["generated_tokens"], a["verifier_tokens"]) == (
                b["correct"],
                b["generated_tokens"],
                b["verifier_tokens"],
            )
    assert (out / "search2" / "search.png").stat().st_size > 0


def test_pav_training_on_two_processes_equals_one(pipeline, tmp_path):
    """Same seed, the global batch of 4 split 2 + 2 across processes: the same weights as one process with 4,
    over two epochs of 8 rows (so reshuffling is covered too). SGD, so that any difference in the loss's
    normalisation (class balance is counted over the whole batch, not per process) shows in the weights."""
    out, _ = pipeline
    steps = ["1+2=3", "3*4=12", "12-5=7", "#### 7"]
    rows = [  # 1-4 steps, both label classes, unevenly spread over the processes' halves
        {
            "prompt": f"Q:{i}?\n",
            "completions": steps[: 1 + i % 4],
            "labels": [(0.37 * i + 0.29 * h) % 1 for h in range(1 + i % 4)],
        }
        for i in range(8)
    ]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (
        *("--config", str(CONFIGS / "train_pav.yaml"), "--model_name_or_path", str(out / "policy")),
        *("--dataset_name", str(data), "--eval_fraction", "0.0", "--eval_strategy", "no", "--optim", "sgd"),
        *("--max_steps", "4", "--learning_rate", "0.5", "--warmup_steps", "0", "--logging_steps", "1"),
    )
    launch("train_pav", *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "2")
    launch(
        "train_pav",
        *common,
        *("--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "4"),
        processes=1,
    )
    two, one, init = _weights(tmp_path / "two"), _weights(tmp_path / "one"), _weights(out / "policy")
    assert two.keys() == one.keys()
    moved = [k for k in two if k in init and not torch.equal(two[k], init[k])]
    assert moved, "training did not change the backbone"
    for name in two:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=f"parameter {name}")


def test_math500_through_label_and_search_recipes(tmp_path, math500_path):
    """Real MATH-500 problems through the labeling and search recipes with a tiny model (accuracy is ~0; every
    stage must run and write well-formed outputs)."""
    tok = char_tokenizer()
    policy = tmp_path / "tiny"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    problems = ("--dataset_name", math500_path, "--num_problems", "4", "--max_new_tokens", "12")
    result = launch(
        "label",
        *("--model_name_or_path", str(policy), *problems, "--output_dir", str(tmp_path / "labels")),
        *("--n_cov", "1", "--n_mc", "2", "--shard_size", "1", "--show_progress", "false"),
    )
    dataset, meta = load_labels(tmp_path / "labels")
    validate_stepwise(dataset)
    # Every seed trace is cut at 12 tokens; its trailing piece is dropped, and a trace left with no step is skipped.
    assert meta["seed_traces"] == 4 and meta["num_processes"] == 2
    assert result["num_traces"] == meta["num_traces"] == 4 - meta["empty_traces"] >= 1
    assert all("\\boxed{}" in p for p in dataset["prompt"]) and all(g for g in dataset["gold"])
    verifier = PAVVerifier.from_causal_lm(policy)
    verifier.save_pretrained(tmp_path / "pav")
    result = launch(
        "search_eval",
        *("--model_name_or_path", str(policy), *problems, "--pav_model_name_or_path", str(tmp_path / "pav")),
        *("--methods", "pav_beam", "majority", "--budgets", "3", "--max_depth", "2"),
        *("--output_dir", str(tmp_path / "search")),
    )
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert results["num_problems"] == result["num_problems"] == 4
    for records in results["methods"].values():
        assert [r["n"] for r in records] == [3] and all(0.0 <= r["accuracy"] <= 1.0 for r in records)
        assert all(r["generated_tokens"] > 0 for r in records)


def test_verifier_recipe_with_yaml_env_peft_and_4bit(tmp_path, capsys):
    """TRL's script conventions: a YAML `--config` with an `env:` block, CLI overrides, `--use_peft` (a LoRA
    adapter whose folder loads as a verifier) and `--load_in_4bit`."""
    pytest.importorskip("bitsandbytes")
    from trl_pav.cli import main as cli

    tok = char_tokenizer()
    base = tmp_path / "base"
    tiny_causal_lm(tok).save_pretrained(base)
    tok.save_pretrained(base)
    rows = [
        {"prompt": f"Q:{i}?\n", "completions": ["1+2=3", "#### 3"], "labels": [0.2 * (i % 5), 1.0]} for i in range(8)
    ]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model_name_or_path": str(base),
        "dataset_name": str(data),
        "output_dir": str(tmp_path / "unused"),
        "max_steps": 5,
        "per_device_train_batch_size": 4,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "env": {"TRL_PAV_RECIPE_ENV": "from-yaml"},
    }
    (tmp_path / "pav.yaml").write_text(yaml.safe_dump(config))
    os.environ.pop("TRL_PAV_RECIPE_ENV", None)
    lora = ("--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj")
    cli(
        [
            "train-pav",
            "--config",
            str(tmp_path / "pav.yaml"),
            "--output_dir",
            str(tmp_path / "pav"),
            "--max_steps",
            "2",
            *lora,
        ]
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert os.environ.pop("TRL_PAV_RECIPE_ENV") == "from-yaml"  # the env: block was applied
    assert result["global_step"] == 2 and (tmp_path / "pav" / "adapter_config.json").exists()
    verifier = PAVVerifier.from_pretrained(tmp_path / "pav")  # adapter merged into its base
    assert len(verifier.score(["Q:1?\n"], [["1+2=3", "#### 3"]])[0]) == 3
    cli(
        [
            "train-pav",
            "--config",
            str(tmp_path / "pav.yaml"),
            "--output_dir",
            str(tmp_path / "q4"),
            "--load_in_4bit",
            *lora,
        ]
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["global_step"] == 5 and (tmp_path / "q4" / "adapter_config.json").exists()


def test_rejection_sampling_keeps_each_distinct_correct_trace_once():
    """The noisy arithmetic policy's correct traces are all the reference trace, so rejection sampling keeps exactly
    one row per problem with at least one correct sample, and nothing else."""
    from trl_pav.evaluation import sample_traces
    from trl_pav.scripts.sft import rejection_sample
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, reference_steps

    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate=0.4)
    problems = task.problems_dataset(24, seed=3)
    rows = rejection_sample(policy, problems, task.grader, samples_per_problem=3, seed=5)
    samples = sample_traces(policy, problems["prompt"], 3, seed=5)
    solved = [
        p
        for p, g, s in zip(problems.to_list(), problems["gold"], samples)
        if any(task.grader.grade("\n".join(t), g) for t in s)
    ]
    assert 0 < len(solved) < 24 and [r["prompt"] for r in rows] == [p["prompt"] for p in solved]
    for row, problem in zip(rows, solved):
        assert row["completion"] == "\n".join(reference_steps(problem["expression"]))


def test_sft_recipe_on_math500_solutions_and_rejection_errors(tmp_path, capsys, math500_path):
    from trl_pav.cli import main as cli

    tok = char_tokenizer()
    policy = tmp_path / "tiny"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    common = ("--model_name_or_path", str(policy), "--dataset_name", math500_path, "--num_problems", "4")
    train = ("--max_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "256", "--report_to", "none")
    cli(["sft", *common, *train, "--output_dir", str(tmp_path / "sft"), "--use_cpu", "true", "--save_strategy", "no"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        result["train_rows"] == 4 and result["global_step"] == 1 and (tmp_path / "sft" / "model.safetensors").exists()
    )
    # A random tiny model never solves MATH-500: rejection sampling says so instead of training on nothing.
    with pytest.raises(SystemExit, match="no correct trace in 4 problems x 2 samples"):
        cli(
            [
                "sft",
                *common,
                "--rejection_sampling",
                "--samples_per_problem",
                "2",
                "--max_new_tokens",
                "8",
                "--use_cpu",
                "true",
                "--output_dir",
                str(tmp_path / "rft"),
            ]
        )


def test_use_vllm_without_vllm_names_the_extra(tmp_path):
    """On a machine without vLLM (every CPU machine), `--use_vllm` fails at once with the install hint."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    from trl_pav.cli import main as cli

    with pytest.raises(SystemExit, match=r"ImportError: .*trl-pav\[vllm\]"):
        cli(
            [
                "label",
                "--model_name_or_path",
                "unused",
                "--task",
                "arithmetic",
                "--num_problems",
                "2",
                "--use_vllm",
                "true",
                "--output_dir",
                str(tmp_path),
            ]
        )


def test_label_recipe_with_chat_template(tmp_path, math500_path):
    """`--use_chat_template` sends each problem as a user message through the model's chat template (an instruct
    model given the bare problem text continues it instead of answering); a tokenizer without one is refused."""
    from trl_pav.testing import TINY_CHAT_TEMPLATE

    tok = char_tokenizer()
    policy = tmp_path / "chat"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    args = ("--dataset_name", math500_path, "--num_problems", "2", "--max_new_tokens", "8", "--n_cov", "1")
    args += ("--n_mc", "1", "--show_progress", "false", "--use_chat_template", "true")
    with pytest.raises(AssertionError, match="has no chat template"):
        launch("label", "--model_name_or_path", str(policy), *args, "--output_dir", str(tmp_path / "a"), processes=1)
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(policy)
    launch("label", "--model_name_or_path", str(policy), *args, "--output_dir", str(tmp_path / "b"), processes=1)
    dataset, meta = load_labels(tmp_path / "b")
    assert meta["seed_traces"] == 2 and len(dataset) >= 1, meta
    for prompt in dataset["prompt"]:
        assert prompt.startswith("<|user|>\nSolve the problem") and prompt.endswith("<|end|>\n<|assistant|>\n")
