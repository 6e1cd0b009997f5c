"""Workflow (issue 25): TRL-style label push_to_hub + hub_model_id, an eval split for Hub label ids, a task-neutral
model card, report_to honoured by labeling and search, and the recipes reachable from the installed package."""

import json
import re
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from accelerate.tracking import GeneralTracker, register_tracker_class
from datasets import Dataset
from huggingface_hub import DatasetCard, ModelCard

from trl_pav import PAVMetadata, PAVVerifier, StepFormat, load_labels
from trl_pav.cli import main
from trl_pav.hub import CARD_EXAMPLE, pav_model_card
from trl_pav.scripts import label, search_eval, train_verifier
from trl_pav.scripts.common import tracker_names
from trl_pav.scripts.search_eval import search_tracker_logs
from trl_pav.testing import char_tokenizer, tiny_causal_lm, tiny_token_classifier

ROOT = Path(__file__).resolve().parents[1]


class RecordingTracker(GeneralTracker):
    """An accelerate tracker (registered by name, as a user's custom tracker would be) that keeps what it is given."""

    name = "recording_test"
    requires_logging_directory = False
    runs: ClassVar[list["RecordingTracker"]] = []

    def __init__(self, run_name: str):
        super().__init__()
        self.run_name, self.config, self.logs, self.finished = run_name, None, [], False
        RecordingTracker.runs.append(self)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logs.append((step, dict(values)))

    def finish(self):
        self.finished = True


register_tracker_class(RecordingTracker)


def parse(script, argv):
    return script.make_parser(argv).parse_args_and_config(args=argv)


@pytest.fixture()
def tiny_policy(tmp_path):
    tok = char_tokenizer()
    path = tmp_path / "policy"
    tiny_causal_lm(tok, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def label_argv(policy, out):
    argv = ["label", "--model_name_or_path", str(policy), "--task", "arithmetic", "--num_problems", "2"]
    return [*argv, "--n_cov", "1", "--n_mc", "2", "--max_new_tokens", "16", "--output_dir", str(out), "--show_progress",
            "false"]  # fmt: skip


# ---- label --push_to_hub: TRL's boolean + hub_model_id ---------------------------------------------------------------
def test_label_push_to_hub_is_a_boolean_with_hub_model_id(tmp_path):
    base = ["--model_name_or_path", "p", "--task", "arithmetic", "--num_problems", "2"]
    args = parse(label, [*base, "--push_to_hub", "--hub_model_id", "me/labels"])[0]
    assert args.push_to_hub is True and args.hub_dataset_id == "me/labels"
    assert parse(label, base)[0].hub_dataset_id is None
    # No hub_model_id: the name of output_dir, as TRL's TrainingArguments.
    args = parse(label, [*base, "--push_to_hub", "true", "--output_dir", str(tmp_path / "my-labels")])[0]
    assert args.hub_dataset_id == "my-labels"
    assert parse(label, [*base, "--push_to_hub", "false", "--hub_model_id", "me/x"])[0].hub_dataset_id is None


def test_label_push_to_hub_old_string_form_says_what_to_write(tmp_path, capsys):
    base = ["--model_name_or_path", "p", "--task", "arithmetic", "--num_problems", "2"]
    with pytest.raises(SystemExit):
        parse(label, [*base, "--push_to_hub", "me/labels"])
    err = capsys.readouterr().err
    assert "push_to_hub is a boolean now" in err and "--push_to_hub --hub_model_id me/labels" in err
    # The same value in a YAML config.
    (tmp_path / "label.yaml").write_text("model_name_or_path: p\ntask: arithmetic\npush_to_hub: me/labels\n")
    with pytest.raises(SystemExit):
        parse(label, ["--config", str(tmp_path / "label.yaml")])
    assert "push_to_hub is a boolean now" in capsys.readouterr().err
    with pytest.raises(ValueError, match="push_to_hub is a boolean now"):
        label.LabelScriptArguments(task="arithmetic", push_to_hub="me/labels")


def test_label_pushes_labels_and_card_to_hub_model_id(tmp_path, tiny_policy, monkeypatch, capsys):
    pushed = []
    monkeypatch.setattr(Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("data", repo_id, kw)))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("card", repo_id, kw)))
    main([*label_argv(tiny_policy, tmp_path / "labels"), "--push_to_hub", "--hub_model_id", "me/labels",
          "--hub_private_repo", "true"])  # fmt: skip
    assert [(kind, repo) for kind, repo, _ in pushed] == [("data", "me/labels"), ("card", "me/labels")]
    assert pushed[0][2]["private"] is True
    assert "--dataset_name me/labels --eval_fraction" in (tmp_path / "labels" / "README.md").read_text()


# ---- train-pav on a Hub labels id: eval_fraction applies -------------------------------------------------------------
def hub_style_labels(folder, prompts=8):
    """Labels laid out as `Dataset.push_to_hub` writes them (one `train` split of parquet files): what `load_dataset`
    returns for a Hub labels id."""
    rows = [
        {"prompt": f"Q:{i}+{i}?\n", "completions": [f"{i}+{i}={2 * i}", f"A:{2 * i}"], "labels": [1.0, 1.0]}
        for i in range(prompts)
        for _ in range(2)
    ]
    (folder / "data").mkdir(parents=True)
    Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return Dataset.from_list(rows)


def test_hub_labels_id_is_split_by_eval_fraction(tmp_path):
    data = hub_style_labels(tmp_path / "hub")
    args = train_verifier.VerifierScriptArguments(dataset_name=str(tmp_path / "hub"), eval_fraction=0.25)
    train, held = train_verifier.load_stepwise(args)
    expected_train, expected_held = train_verifier.split_by_prompt(data, 0.25)
    assert (
        held is not None and held.to_list() == expected_held.to_list() and train.to_list() == expected_train.to_list()
    )
    assert not set(train["prompt"]) & set(held["prompt"]) and len(set(held["prompt"])) == 2
    # A test split, when the data has one, is used as it is (eval_fraction ignored).
    Dataset.from_list(data.to_list()[:2]).to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    train, held = train_verifier.load_stepwise(args)
    assert len(train) == len(data) and len(held) == 2
    with pytest.raises(ValueError, match=r"has no split 'validation' \(splits: \['test', 'train'\]\)"):
        train_verifier.load_stepwise(
            train_verifier.VerifierScriptArguments(dataset_name=str(tmp_path / "hub"), dataset_train_split="validation")
        )


def test_shipped_math_train_pav_config_gets_evaluation_data_from_hub_labels(tmp_path):
    # The MATH config evaluates every 500 steps on eval_fraction 0.02 of the prompts; a Hub labels id has only a
    # train split, which used to leave no evaluation data ("eval_strategy is set but there is no evaluation data").
    hub_style_labels(tmp_path / "hub", prompts=100)
    argv = ["--config", str(ROOT / "recipes" / "configs" / "math_1.5b" / "train_pav.yaml"), "--dataset_name",
            str(tmp_path / "hub"), "--output_dir", str(tmp_path / "pav"), "--bf16", "false"]  # fmt: skip
    script_args, training_args, _ = parse(train_verifier, argv)
    assert training_args.eval_strategy != "no" and script_args.eval_fraction == 0.02
    train, held = train_verifier.load_stepwise(script_args)
    assert held is not None and len(set(held["prompt"])) == 2 and len(set(train["prompt"])) == 98


# ---- the model card's usage example is task-neutral -----------------------------------------------------------------
def card_code(card_text, heading):
    section = card_text[card_text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_model_card_example_is_generic_and_uses_the_checkpoint_step_format(bpe_tok, tmp_path):
    meta = PAVMetadata(step_format=StepFormat.blank_line().to_dict())
    verifier = PAVVerifier(tiny_token_classifier(bpe_tok, seed=4, hidden_size=16), bpe_tok, meta)
    verifier.save_pretrained(tmp_path / "pav")
    card = ModelCard.load(tmp_path / "pav" / "README.md")
    assert "Q:" not in card.text and "6+1=7" not in card.text  # not the arithmetic task's layout
    code = card_code(card.content, "## Use with plain transformers").replace(
        "<this repo or folder>", str(tmp_path / "pav")
    )
    namespace = {}
    exec(code, namespace)
    assert (namespace["prompt"], namespace["steps"]) == CARD_EXAMPLE
    # The snippet joins the steps with the checkpoint's blank line and scores exactly like trl_pav.
    assert "('\\n\\n' if h else \"\")" in code
    assert namespace["q"] == pytest.approx(verifier.score([CARD_EXAMPLE[0]], [CARD_EXAMPLE[1]])[0], abs=1e-6)
    trl_pav_code = card_code(card.content, "## Use with trl_pav")
    assert repr(CARD_EXAMPLE[0]) in trl_pav_code
    # Steps that hold a separator are written so that they read back as the same steps.
    sep_card = pav_model_card(PAVMetadata(step_format=StepFormat(". ").to_dict())).text
    assert "'First, 3 * 4 = 12.'" in sep_card
    # An explicit example (a training row) is still used as it is.
    assert "'Q:1+1?\\n'" in pav_model_card(PAVMetadata(), example=("Q:1+1?\n", ["1+1=2"])).text


# ---- report_to: labeling and search log to the trackers TRL's stages use ---------------------------------------------
def test_report_to_names_are_checked_at_parse_time():
    assert (
        tracker_names("none") == []
        and tracker_names(None) == []
        and tracker_names("recording_test") == ["recording_test"]
    )
    assert tracker_names("recording_test,recording_test") == ["recording_test"]
    base = ["--model_name_or_path", "p", "--task", "arithmetic", "--num_problems", "2"]
    with pytest.raises(ValueError, match="report_to: unknown tracker 'nope'; choose 'none', 'all' or one of"):
        parse(label, [*base, "--report_to", "nope"])
    with pytest.raises(ValueError, match="report_to: unknown tracker 'nope'"):
        parse(search_eval, [*base, "--report_to", "nope"])


def test_report_to_missing_tracker_package_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed")
    with pytest.raises(ValueError, match=r"tracker 'tensorboard' is not installed \(pip install tensorboard\)"):
        parse(label, ["--model_name_or_path", "p", "--task", "arithmetic", "--report_to", "tensorboard"])


def test_label_and_search_log_their_metrics_to_report_to(tmp_path, tiny_policy, capsys):
    RecordingTracker.runs.clear()
    main([*label_argv(tiny_policy, tmp_path / "labels"), "--report_to", "recording_test", "--run_name", "lab"])
    capsys.readouterr()
    (run,) = RecordingTracker.runs
    dataset, metadata = load_labels(tmp_path / "labels")
    assert run.run_name == "lab" and run.finished and run.config["n_mc"] == 2 and run.config["task"] == "arithmetic"
    ((step, logged),) = run.logs
    assert step is None and logged["label/num_traces"] == metadata["num_traces"] == len(dataset)
    assert logged["label/rollouts"] == metadata["rollouts"] and logged["label/num_labels"] == metadata["num_labels"]
    labels = [x for row in dataset["labels"] for x in row if x is not None]
    assert logged["label/mean_label"] == pytest.approx(sum(labels) / len(labels))
    # Search: one log per budget (the budget is the step), each method's accuracy and compute.
    RecordingTracker.runs.clear()
    main(["search", "--model_name_or_path", str(tiny_policy), "--task", "arithmetic", "--num_problems", "2",
          "--methods", "majority", "pass_at_n", "--budgets", "1", "2", "--max_new_tokens", "12",
          "--output_dir", str(tmp_path / "search"), "--report_to", "recording_test"])  # fmt: skip
    capsys.readouterr()
    (run,) = RecordingTracker.runs
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert run.run_name == "trl-pav-search" and run.finished
    assert run.logs == search_tracker_logs(results)
    assert [step for step, _ in run.logs] == [1, 2]
    assert run.logs[1][1]["search/majority/accuracy"] == results["methods"]["majority"][1]["accuracy"]
    # "none" (the default): no tracker at all.
    RecordingTracker.runs.clear()
    main(["search", "--model_name_or_path", str(tiny_policy), "--task", "arithmetic", "--num_problems", "2",
          "--methods", "majority", "--budgets", "1", "--max_new_tokens", "12",
          "--output_dir", str(tmp_path / "search2")])  # fmt: skip
    assert RecordingTracker.runs == []


def test_yaml_report_to_list_is_read(tmp_path):
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump({"model_name_or_path": "p", "task": "arithmetic", "report_to": ["recording_test"]})
    )
    assert tracker_names(parse(search_eval, ["--config", str(tmp_path / "s.yaml")])[0].report_to) == ["recording_test"]


# ---- the recipes from the installed package: `accelerate launch -m trl_pav.cli`, shipped configs ---------------------
def test_shipped_configs_are_the_recipes_configs(capsys):
    from trl_pav.cli import shipped_configs

    configs = shipped_configs()
    in_repo = {p.stem: p for p in (ROOT / "recipes" / "accelerate_configs").glob("*.yaml")}
    in_repo |= {f"{p.parent.name}/{p.stem}": p for p in (ROOT / "recipes" / "configs").glob("*/*.yaml")}
    assert set(configs) == set(in_repo) and {"zero3", "cpu_2proc", "math_1.5b/train_pav"} <= set(configs)
    assert all(Path(configs[k]).read_text() == in_repo[k].read_text() for k in configs)
    main(["configs", "zero3"])
    assert capsys.readouterr().out.strip() == configs["zero3"]
    main(["configs"])
    assert json.loads(capsys.readouterr().out) == configs
    with pytest.raises(SystemExit, match=r"unknown config 'zero4'; shipped: .*zero3"):
        main(["configs", "zero4"])


def test_accelerate_launch_module_cli_runs_a_stage_on_two_processes(tmp_path, tiny_policy, capsys):
    """`accelerate launch --config_file <shipped config> -m trl_pav.cli search --prm ...`: two CPU processes give the
    one-process results (the same code path the recipes run), and one JSON summary comes out."""
    import os
    import socket
    import subprocess
    import sys

    from trl_pav.cli import shipped_configs
    from trl_pav.testing import tiny_public_prm

    prm_model, prm_tok = tiny_public_prm("rlhflow", seed=2)
    prm_model.save_pretrained(tmp_path / "RLHFlow-tiny")
    prm_tok.save_pretrained(tmp_path / "RLHFlow-tiny")
    argv = ["search", "--model_name_or_path", str(tiny_policy), "--prm", str(tmp_path / "RLHFlow-tiny"), "--task",
            "arithmetic", "--num_problems", "2", "--budgets", "3", "--max_depth", "2", "--max_new_tokens", "12",
            "--max_step_tokens", "6", "--truncated_step", "keep"]  # fmt: skip
    argv += ["--methods", "pav_beam", "orm_bon", "majority"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", shipped_configs()["cpu_2proc"]]
    cmd += ["--main_process_port", port, "-m", "trl_pav.cli", *argv, "--output_dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    assert len(summaries) == 1  # the main process only
    main([*argv, "--output_dir", str(tmp_path / "one")])
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(summaries[0])["best_accuracy"] == one["best_accuracy"]
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    for method, records in r1["methods"].items():
        for a, b in zip(records, r2["methods"][method]):
            keys = ("correct", "generated_tokens", "verifier_tokens")
            assert [a[k] for k in keys] == [b[k] for k in keys]
    assert r2["methods"]["pav_beam"][0]["verifier_tokens"] > 0  # the PRM scored the beams
