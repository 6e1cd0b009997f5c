"""Bad inputs -> the error that names them. One table per layer; add a row to cover a new case.

Each row feeds a bad value through the public API (or the `trl-pav` command line) and asserts the exception type and
a message that says what is wrong and where (row, field, value, trace, step, file).
"""

import json
import math
import re

import pytest
import torch
from datasets import Dataset

from trl_pav import (
    MathVerifyGrader,
    PAVMetadata,
    PAVRewardConfig,
    PAVRewardTrainer,
    PAVVerifier,
    StepFormat,
    StepwiseDataError,
    validate_stepwise,
)
from trl_pav.generation import GenerationRequest, HFPolicy
from trl_pav.labeling import MCLabelConfig, MCLabeler, validate_problems
from trl_pav.search import BeamSearchConfig, SearchEvalConfig
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, PlantedTask
from trl_pav.testing import tiny_causal_lm, tiny_token_classifier

NAN = float("nan")


def row(**overrides):
    return {"prompt": "Q:1+1?\n", "completions": ["1+1=2", "#### 2"], "labels": [0.5, 1.0], **overrides}


# ---- the stepwise data contract: (rows, step format, expected message) ----------------------------------------------
DATA_CASES = {
    "nan label": ([row(), row(labels=[0.5, NAN])], None, r"row 1: labels\[1\] = nan is not finite"),
    "label above 1": ([row(labels=[1.5, 1.0])], None, r"row 0: labels\[0\] = 1.5 is outside \[0, 1\]"),
    "nan root_value": ([row(root_value=NAN)], None, r"row 0: root_value = nan is not finite"),
    "root_value above 1": ([row(), row(root_value=1.2)], None, r"row 1: root_value = 1.2 is outside \[0, 1\]"),
    "negative root_value": ([row(root_value=-0.1)], None, r"row 0: root_value = -0.1 is outside \[0, 1\]"),
    "string root_value": ([row(root_value="0.5")], None, r"row 0: root_value = '0.5' must be a number .* got str"),
    "nan seed_outcome": ([row(seed_outcome=NAN)], None, r"row 0: seed_outcome = nan must be 0, 1 or a bool"),
    "soft seed_outcome": ([row(seed_outcome=0.5)], None, r"row 0: seed_outcome = 0.5 must be 0, 1 or a bool"),
    "unknown target": ([row(target="q_star")], None, r"row 0: target = 'q_star' is not one of \['q_pi', 'q_mu'\]"),
    "step holds the separator": (
        [row(), row(completions=["1+1=2\n#### 2", "#### 2"])],
        StepFormat("\n"),
        r"row 1: completions: step 0: a step must not contain the separator",
    ),
    "whitespace prompt": ([row(prompt="   ")], None, r"row 0: prompt is empty"),
}


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_stepwise_data_errors_name_row_field_and_value(name):
    rows, step_format, message = DATA_CASES[name]
    with pytest.raises(StepwiseDataError, match=message):
        validate_stepwise(rows, step_format)


def test_valid_optional_fields_and_unmeasured_labels_pass():
    ds = validate_stepwise(
        [row(root_value=0.25, seed_outcome=True, target="q_pi"), row(labels=[None, 1.0], seed_outcome=0)]
    )
    assert ds[0]["root_value"] == 0.25 and ds[1]["labels"] == [None, 1.0]


# ---- problems given to labeling, search and RL ----------------------------------------------------------------------
PROBLEM_CASES = {
    "whitespace gold": ([{"prompt": "Q:1+1?\n", "gold": "  "}], r"problem 0: gold answer 'gold' is empty"),
    "empty gold": ([{"prompt": "Q:1+1?\n", "gold": "2"}, {"prompt": "Q:2+2?\n", "gold": ""}], r"problem 1: gold"),
    "whitespace prompt": ([{"prompt": " \n ", "gold": "2"}], r"problem 0: field 'prompt' must be a non-empty string"),
    "number gold": ([{"prompt": "Q:1+1?\n", "gold": 2}], r"problem 0: gold answer 'gold' must be a string, got int"),
    "no problems": ([], r"the problems list is empty"),
}


@pytest.mark.parametrize("name", list(PROBLEM_CASES))
def test_problem_errors_name_the_problem(name):
    problems, message = PROBLEM_CASES[name]
    with pytest.raises(ValueError, match=message):
        validate_problems(problems)


def test_labeler_checks_problems_before_generating():
    task = ArithmeticTask()
    calls = []

    class Counting(NoisyArithmeticPolicy):
        def generate(self, requests, stop_at_step=False):
            calls.append(len(requests))
            return super().generate(requests, stop_at_step)

    labeler = MCLabeler(Counting(task, 0.1), task.grader, MCLabelConfig(n_cov=1, n_mc=1, show_progress=False))
    with pytest.raises(ValueError, match="problem 1: gold answer 'gold' is empty"):
        labeler.label([{"prompt": "Q:1+2?\n", "gold": "3"}, {"prompt": "Q:2+2?\n", "gold": " "}])
    assert calls == []
    # The planted task's grader ignores the gold answer, which is empty there: that is accepted.
    planted = PlantedTask()
    assert len(validate_problems(planted.problems_dataset(2), needs_gold=planted.grader.needs_gold)) == 2


# ---- configurations: (constructor, expected exception, message) -----------------------------------------------------
CONFIG_CASES = {
    "search alpha nan": (lambda: SearchEvalConfig(alpha=NAN), r"alpha must be a finite number, got nan"),
    "beam alpha inf": (lambda: BeamSearchConfig(alpha=math.inf), r"alpha must be a finite number, got inf"),
    "budget below expansions": (
        lambda: SearchEvalConfig(budgets=[2, 6], expansions=3),
        r"budget 2 is below expansions=3",
    ),
    "prover_k nan": (lambda: SearchEvalConfig(prover_k=NAN), r"prover_k must be a finite number >= 1"),
    "empty step separator": (
        lambda: PAVRewardConfig(output_dir="x", step_separator="", report_to="none"),
        r"step_separator must be a non-empty string or None",
    ),
    "grader timeout zero": (lambda: MathVerifyGrader(timeout_seconds=0), r"timeout_seconds must be a positive"),
    "grader bad regex": (lambda: MathVerifyGrader(answer_pattern="(answer"), r"answer_pattern '\(answer' is not"),
    "metadata target": (lambda: PAVMetadata(target="q_star"), r"target must be 'q_pi' or 'q_mu', got 'q_star'"),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_config_errors(name):
    make, message = CONFIG_CASES[name]
    with pytest.raises(ValueError, match=message):
        make()


def test_search_budget_check_only_concerns_beam_methods():
    assert SearchEvalConfig(methods=["majority"], budgets=[2], expansions=3).budgets == [2]


# ---- the verifier's scoring API -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verifier(char_tok):
    return PAVVerifier(tiny_token_classifier(char_tok, max_positions=64), char_tok, PAVMetadata())


SCORE_CASES = {
    "steps as a flat list": (["Q:1+1?\n"], ["1+1=2"], TypeError, r"trace 0: steps must be a list of step strings"),
    "steps as a string": ("Q:1+1?\n", "1+1=2", TypeError, r"score: prompts and steps must be lists"),
    "separator inside a step": (
        ["Q:1?\n", "Q:2?\n"],
        [["1=1"], ["2=2\n#### 2"]],
        ValueError,
        r"trace 1: step 0: a step must not contain the separator",
    ),
    "non-string step": (["Q:1?\n"], [["1=1", 7]], TypeError, r"trace 0: step 1: a step must be a string, got int"),
    "empty step": (["Q:1?\n"], [["1=1", " "]], ValueError, r"trace 0: step 1: a step must not be empty"),
    "beyond the backbone's positions": (
        ["Q:1?\n"],
        [["1+1=2"] * 20],
        ValueError,
        r"trace 0: \d+ tokens exceed the verifier's max_length 64",
    ),
}


@pytest.mark.parametrize("name", list(SCORE_CASES))
def test_score_errors_name_the_trace(verifier, name):
    prompts, steps, error, message = SCORE_CASES[name]
    with pytest.raises(error, match=message):
        verifier.score(prompts, steps)


def test_verifier_max_length_is_capped_at_the_backbone(char_tok):
    model = tiny_token_classifier(char_tok, max_positions=32)
    with pytest.warns(UserWarning, match="max_length=1000 exceeds the model's max_position_embeddings=32"):
        v = PAVVerifier(model, char_tok, PAVMetadata(), max_length=1000)
    assert v.max_length == 32
    with pytest.raises(ValueError, match="exceed the verifier's max_length 32"):
        v.score(["Q:1?\n"], [["1+1=2"] * 10])  # 64 tokens: would index past the position table


def test_non_finite_weights_are_refused_on_save_load_and_score(char_tok, tmp_path):
    model = tiny_token_classifier(char_tok)
    verifier = PAVVerifier(model, char_tok, PAVMetadata())
    verifier.save_pretrained(tmp_path / "good")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="model produced NaN or infinite outputs"):
        verifier.score(["Q:1?\n"], [["1=1"]])
    with pytest.raises(FloatingPointError, match=r"1 parameter\(s\) hold NaN .*layers.0.mlp.down_proj.weight"):
        verifier.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    model.config.pav = verifier.metadata.__dict__
    model.save_pretrained(tmp_path / "bad")  # written behind the verifier's back
    char_tok.save_pretrained(tmp_path / "bad")
    with pytest.raises(FloatingPointError, match=r"PAVVerifier.from_pretrained\(.*bad'\): 1 parameter"):
        PAVVerifier.from_pretrained(tmp_path / "bad")
    assert len(PAVVerifier.from_pretrained(tmp_path / "good").score(["Q:1?\n"], [["1=1"]])[0]) == 2


# ---- training on garbage stops with an error naming the step --------------------------------------------------------
def _trainer(char_tok, tmp_path, rows, model=None, **kw):
    args = PAVRewardConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        **kw,
    )
    model = model or tiny_token_classifier(char_tok)
    return PAVRewardTrainer(model, args, Dataset.from_list(rows), processing_class=char_tok)


def test_trainer_refuses_nan_root_value_and_outcome(char_tok, tmp_path):
    with pytest.raises(StepwiseDataError, match=r"row 1: root_value = nan is not finite"):
        _trainer(char_tok, tmp_path, [row(root_value=0.5), row(root_value=NAN)])
    with pytest.raises(StepwiseDataError, match=r"row 0: seed_outcome = nan"):
        _trainer(char_tok, tmp_path, [row(seed_outcome=NAN)], kind="orm")
    with pytest.raises(StepwiseDataError, match=r"row 0: target = 'q_star' is not one of"):
        _trainer(char_tok, tmp_path, [row(target="q_star")])


def test_non_finite_loss_stops_training_naming_the_step(char_tok, tmp_path):
    model = tiny_token_classifier(char_tok)
    with torch.no_grad():
        model.score.weight.fill_(float("inf"))  # every read is +-inf or nan
    trainer = _trainer(char_tok, tmp_path, [row()] * 4, model=model)
    with pytest.raises(FloatingPointError, match=r"the loss is nan at training step 1"):
        trainer.train()


def test_non_finite_gradient_stops_training_before_the_update(char_tok, tmp_path):
    model = tiny_token_classifier(char_tok)
    weight = model.model.layers[1].mlp.up_proj.weight
    before = weight.detach().clone()
    weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    trainer = _trainer(char_tok, tmp_path, [row()] * 4, model=model)
    with pytest.raises(
        FloatingPointError, match=r"non-finite gradient at training step 1 in \d+ parameter\(s\), first '"
    ):
        trainer.train()
    assert torch.equal(weight.detach(), before), "no update may happen with a NaN gradient"


def test_trainer_caps_max_length_at_the_backbone(char_tok, tmp_path):
    model = tiny_token_classifier(char_tok, max_positions=24)
    long_row = row(completions=["1+1=2"] * 8, labels=[0.5] * 8)  # 54 tokens, 2.25x the position table
    trainer = _trainer(char_tok, tmp_path, [long_row] * 2, model=model, max_length=1024)
    assert trainer.args.max_length == 24
    assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) <= 24
    assert trainer.train().global_step == 2  # no IndexError inside torch


# ---- generation past the position table -----------------------------------------------------------------------------
def test_hf_policy_stops_at_the_position_table(char_tok):
    policy = HFPolicy(tiny_causal_lm(char_tok, max_positions=16), char_tok, max_new_tokens=64)
    out = policy.generate([GenerationRequest("Q:1+1?\n", seed=0)])
    assert out[0].num_tokens <= 16 - 8  # prompt (with BOS) is 8 tokens
    with pytest.raises(ValueError, match="at or over the model's max_position_embeddings 16"):
        policy.generate([GenerationRequest("Q:" + "1+" * 10 + "1?\n", seed=0)])


# ---- the command line: one line naming the problem, exit status 1, --debug for the traceback ------------------------
@pytest.fixture()
def empty_jsonl(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    return str(path)


CLI_CASES = {
    "train-policy negative max_steps": (
        ["train-policy", "--max_steps", "-5"],
        r"max_steps must be >= 1 \(or unset for the task's budget\), got -5",
    ),
    "unknown task": (
        ["label", "--model_name_or_path", "{tmp}", "--task", "chess", "--num_problems", "2"],
        r"unknown task 'chess'",
    ),
    "missing local model folder": (
        ["label", "--model_name_or_path", "{tmp}/no/such/policy", "--task", "arithmetic", "--num_problems", "2"],
        r"FileNotFoundError: label: model_name_or_path: no such model folder '.*no/such/policy'",
    ),
    "empty problems file": (
        ["label", "--model_name_or_path", "{tmp}", "--dataset_name", "{empty}"],
        r"ValueError: '.*empty.jsonl' is empty: no rows to read",
    ),
    "empty stepwise file": (
        ["train-pav", "--model_name_or_path", "{tmp}", "--dataset_name", "{empty}", "--output_dir", "{tmp}/v"],
        r"'.*empty.jsonl' is empty: no rows to read",
    ),
    "search alpha nan": (
        ["search", "--model_name_or_path", "{tmp}", "--task", "arithmetic", "--num_problems", "2", "--alpha", "nan"],
        r"alpha must be a finite number, got nan",
    ),
    "search budget below expansions": (
        ["search", "--model_name_or_path", "{tmp}", "--task", "arithmetic", "--num_problems", "2", "--budgets", "2"],
        r"budget 2 is below expansions=3",
    ),
    "empty step separator": (
        ["train-pav", "--model_name_or_path", "{tmp}", "--dataset_name", "x.jsonl", "--step_separator", ""],
        r"step_separator must be a non-empty string or None",
    ),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_errors_are_one_line(name, tmp_path, empty_jsonl):
    from trl_pav.cli import main

    argv, message = CLI_CASES[name]
    argv = [a.format(tmp=tmp_path, empty=empty_jsonl) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    text = str(info.value.code)
    first, *rest = text.splitlines()
    assert first.startswith(f"trl-pav {argv[0]}: ") and rest == ["(run again with --debug for the traceback)"]
    assert re.search(message, first), first


def test_cli_debug_shows_the_exception(tmp_path):
    from trl_pav.cli import main

    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        main(["train-policy", "--max_steps", "-5", "--debug"])


def test_cli_bad_stepwise_rows_fail_before_loading_the_model(tmp_path):
    from trl_pav.cli import main

    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [row(), row(root_value="high")]))
    # The model folder exists but is empty: reaching the model load would fail differently.
    with pytest.raises(SystemExit, match=r"row 1: root_value = 'high' must be a number"):
        main(["train-pav", "--model_name_or_path", str(tmp_path), "--dataset_name", str(data), "--report_to", "none"])
