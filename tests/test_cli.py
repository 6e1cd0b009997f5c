import json

import pytest
import yaml

from trl_pav import PAVMetadata, PAVVerifier, load_labels, validate_stepwise
from trl_pav.cli import main
from trl_pav.testing import char_tokenizer, tiny_causal_lm


def run(capsys, argv):
    main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_label_search_from_the_command_line(tmp_path, capsys):
    policy = tmp_path / "policy"
    out = run(
        capsys,
        [
            "train-policy",
            "--task",
            "arithmetic",
            "--output_dir",
            str(policy),
            "--max_steps",
            "3",
            "--eval_problems",
            "8",
        ],
    )
    assert out["task"] == "arithmetic" and 0.0 <= out["sampled_accuracy"] <= 1.0
    labels = tmp_path / "labels"
    out = run(
        capsys,
        [
            "label",
            "--model_name_or_path",
            str(policy),
            "--task",
            "arithmetic",
            "--max_new_tokens",
            "32",
            "--num_problems",
            "3",
            "--n_cov",
            "1",
            "--n_mc",
            "2",
            "--output_dir",
            str(labels),
            "--show_progress",
            "false",
        ],
    )
    dataset, meta = load_labels(labels)
    assert out["num_traces"] == len(dataset) == meta["num_traces"] and meta["config"]["n_mc"] == 2
    # A verifier from the policy's backbone, then search driven by a YAML config (TRL-style --config).
    verifier = PAVVerifier.from_causal_lm(policy, metadata=PAVMetadata(prover_k=4))
    verifier.save_pretrained(tmp_path / "pav")
    config = {
        "model_name_or_path": str(policy),
        "pav_model_name_or_path": str(tmp_path / "pav"),
        "orm_model_name_or_path": str(tmp_path / "pav"),
        "task": "arithmetic",
        "num_problems": 3,
        "budgets": [3],
        "max_depth": 4,
        "max_new_tokens": 24,
        "output_dir": str(tmp_path / "search"),
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    out = run(capsys, ["search", "--config", str(tmp_path / "search.yaml")])
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert set(results["methods"]) == set(out["best_accuracy"]) and (tmp_path / "search" / "search.png").exists()


def test_label_real_math500_with_a_tiny_model(tmp_path, capsys, math500_path):
    tok = char_tokenizer()
    policy = tmp_path / "tiny"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    out = run(
        capsys,
        [
            "label",
            "--model_name_or_path",
            str(policy),
            "--dataset_name",
            math500_path,
            "--num_problems",
            "3",
            "--n_cov",
            "2",
            "--n_mc",
            "2",
            "--max_new_tokens",
            "12",
            "--output_dir",
            str(tmp_path / "l"),
            "--show_progress",
            "false",
        ],
    )
    dataset, meta = load_labels(tmp_path / "l")
    validate_stepwise(dataset)
    assert "\\boxed{}" in dataset[0]["prompt"] and dataset[0]["gold"] and out["rollouts"] == meta["rollouts"] > 0


def test_unknown_command_and_missing_arguments():
    with pytest.raises(SystemExit, match="unknown command 'fly'"):
        main(["fly"])
    with pytest.raises(SystemExit, match="set model_name_or_path"):
        main(["label", "--task", "arithmetic", "--num_problems", "2"])
    with pytest.raises(SystemExit, match="exactly one of dataset_name"):
        main(["search", "--model_name_or_path", "x"])


@pytest.mark.parametrize("task", ["arithmetic", "rewrite"])
def test_train_policy_evaluates_on_problems_it_did_not_train_on(tmp_path, capsys, monkeypatch, task):
    """train-policy's evaluation problems and SFT problems are disjoint pools (no training: both are stubbed)."""
    import transformers

    import trl_pav.evaluation
    import trl_pav.generation
    import trl_pav.tasks
    import trl_pav.tokenization

    seen = {}

    def fake_train(task, output_dir, config, problems=None):
        seen["sft"] = problems
        return str(output_dir)

    def fake_accuracy(policy, prompts, golds, grader, seed=0):
        seen["eval"] = prompts
        return 0.5

    monkeypatch.setattr(trl_pav.tasks, "train_base_policy", fake_train)
    monkeypatch.setattr(trl_pav.evaluation, "sampled_accuracy", fake_accuracy)
    monkeypatch.setattr(trl_pav.generation, "HFPolicy", lambda *a, **k: None)
    monkeypatch.setattr(trl_pav.tokenization, "load_tokenizer", lambda path: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda path: None)
    argv = ["train-policy", "--task", task, "--output_dir", str(tmp_path), "--max_steps", "2", "--eval_problems", "30"]
    out = run(capsys, [*argv, "--seed", "3"])
    assert out["sampled_accuracy"] == 0.5 and out["task"] == task
    sft = {p.prompt for p in seen["sft"]}
    batch = trl_pav.tasks.DEFAULT_POLICY[task].batch_size
    assert len(seen["sft"]) == 2 * batch and len(seen["eval"]) == len(set(seen["eval"])) == 30
    assert sft.isdisjoint(seen["eval"])


def test_train_policy_pools_are_disjoint_and_seeded():
    from trl_pav.cli import train_policy_pools
    from trl_pav.tasks import ArithmeticTask, TinyPolicyConfig

    task, config = ArithmeticTask(), TinyPolicyConfig(max_steps=50, batch_size=64, seed=1)
    pools = train_policy_pools(task, config, 200)
    assert len(pools["eval"]) == 200 and len(pools["sft"]) == 50 * 64
    assert pools.keys_of("eval").isdisjoint(pools.keys_of("sft"))
    assert train_policy_pools(task, config, 200)["eval"] == pools["eval"]  # fixed by the seed
    # The old draw (seed 10,000 + seed) shared problems with the SFT data; the pools cannot.
    old = {p.expression for p in task.sample_problems(200, seed=10_001)}
    assert not old.isdisjoint({p.expression for p in task.sample_problems(50 * 64, seed=2)})


def test_stage_problems_of_a_task_follow_problems_seed():
    from types import SimpleNamespace

    from trl_pav.scripts.common import load_stage_problems

    def problems(task, seed):
        args = SimpleNamespace(task=task, dataset_name=None, num_problems=8, problems_seed=seed)
        return load_stage_problems(args, "train", None)[0]["prompt"]

    for task in ("arithmetic", "rewrite"):
        assert problems(task, 0) == problems(task, 0) != problems(task, 7)
    assert problems("planted", 0) == problems("planted", 7)  # one start state


@pytest.mark.parametrize("task", ["rewrite", "planted"])
def test_sft_from_scratch_trains_on_each_task_s_rows(tmp_path, capsys, task):
    """`sft --task rewrite --from_scratch` once called the planted task's signature; one real SFT step per task."""
    argv = ["sft", "--task", task, "--from_scratch", "--num_problems", "8", "--max_steps", "1"]
    argv += ["--per_device_train_batch_size", "4", "--output_dir", str(tmp_path), "--report_to", "none"]
    argv += ["--bf16", "false", "--use_cpu", "true"]
    out = run(capsys, argv)
    assert out["train_rows"] == 8 and out["global_step"] == 1
