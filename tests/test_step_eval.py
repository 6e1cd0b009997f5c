"""Step-error evaluation: exact metrics and threshold tuning, converters (CHAMP, stepwise), the eval-steps command."""

import importlib.util
import itertools
import json
import math
import random

import numpy as np
import pytest

from trl_pav import PAVMetadata, PAVVerifier, StepFormat, StepwiseDataError
from trl_pav.cli import main
from trl_pav.metrics import (
    best_first_error_threshold,
    predicted_first_error,
    predicted_first_errors,
    step_error_metrics,
)
from trl_pav.step_eval import (
    arithmetic_step_errors,
    evaluate_step_errors,
    from_stepwise_labels,
    load_champ,
    validate_step_errors,
)
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_token_classifier


def objective(m):
    """F1, or the accuracy of the only kind of trace present."""
    if m["n_error"] and m["n_correct"]:
        return m["f1"]
    return m["error_acc"] if m["n_error"] else m["correct_acc"]


def brute_force_best_f1(values, labels):
    """Best objective over every distinct threshold, by trying each one with the scalar rule."""
    points = sorted({x for v in values for x in v})
    thresholds = [-math.inf, math.inf, *points, *[(a + b) / 2 for a, b in itertools.pairwise(points)]]
    thresholds += [p + 1e-9 for p in points]
    best = -1.0
    for t in thresholds:
        predicted = [predicted_first_error(v, t) for v in values]
        predicted = [-1 if p is None else p for p in predicted]
        best = max(best, objective(step_error_metrics(predicted, labels)))
    return best


def test_first_error_metrics_exact_on_enumerable_cases():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 6)
        values = [[rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]) for _ in range(rng.randint(1, 4))] for _ in range(n)]
        labels = [rng.randint(-1, len(v) - 1) for v in values]
        for t in (0.0, 0.3, 0.6, 1.0):
            scalar = [predicted_first_error(v, t) for v in values]
            assert predicted_first_errors(values, t).tolist() == [-1 if p is None else p for p in scalar]
        threshold, metrics = best_first_error_threshold(values, labels)
        assert objective(metrics) == pytest.approx(brute_force_best_f1(values, labels))
        again = [-1 if p is None else p for p in (predicted_first_error(v, threshold) for v in values)]
        assert step_error_metrics(again, labels) == pytest.approx(metrics, nan_ok=True)
    # Hand case: ProcessBench's definitions.
    m = step_error_metrics([2, 0, -1, -1, 1], [2, 1, -1, 0, -1])
    assert m["error_acc"] == pytest.approx(1 / 3) and m["correct_acc"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert math.isnan(step_error_metrics([-1], [-1])["error_acc"])


def test_arithmetic_oracle_finds_every_first_error():
    """The exact oracle is 0 after a wrong step and positive before: any small threshold gives F1 = 1."""
    task = ArithmeticTask()
    data = arithmetic_step_errors(80, error_rate=0.3, seed=1)
    for row in data:  # labels are the exact checker's
        first = task.first_error(row["problem"][2:-2], row["steps"])
        assert row["label"] == (-1 if first is None else first)
    assert 0 < sum(label >= 0 for label in data["label"]) < len(data)
    oracle = NoisyArithmeticPolicy(task, error_rate=0.3)
    report = evaluate_step_errors(oracle, data, threshold=0.01)
    assert report["overall"]["f1"] == 1.0 and report["subsets"]["arithmetic"]["f1"] == 1.0
    never = evaluate_step_errors(oracle, data, threshold=0.0)["overall"]
    assert never["error_acc"] == 0.0 and never["correct_acc"] == 1.0 and never["f1"] == 0.0
    tuned = evaluate_step_errors(oracle, data, threshold=None, tune_data=arithmetic_step_errors(40, 0.3, seed=2))
    assert tuned["overall"]["f1"] == 1.0 and 0.0 < tuned["threshold"] <= 0.7**3 and tuned["tuned_on"] == 40
    with pytest.raises(ValueError, match="tune_data"):
        evaluate_step_errors(oracle, data, threshold=None)


def test_converters_and_validation():
    rows = [
        {"prompt": "2+2?", "completions": ["2+2=4", "so 4"], "labels": [1.0, 0.9], "source": "w"},
        {"prompt": "3*3?", "completions": ["3*3=6", "so 6"], "labels": [0.2, 0.0], "source": "w"},
        {"prompt": "1+5?", "completions": ["1+5=6", "so 7"], "labels": [True, False], "source": "x"},
    ]
    out = from_stepwise_labels(rows, subset="mine")
    assert out["label"] == [-1, 0, 1] and out["subset"] == ["mine"] * 3
    assert out["source"] == ["w", "w", "x"]
    chat = [{"prompt": [{"role": "user", "content": "3*3?"}], "completions": ["3*3=9"], "labels": [0.6]}]
    assert (
        from_stepwise_labels(chat)[0]["problem"] == "3*3?"
        and from_stepwise_labels(chat, threshold=0.7)[0]["label"] == 0
    )
    with pytest.raises(StepwiseDataError) as err:
        validate_step_errors(
            [
                {"problem": "p", "steps": ["a", "b"], "label": 2},
                {"problem": "", "steps": ["a"], "label": -1},
                {"problem": "p", "steps": ["a", " "], "label": True},
            ]
        )
    text = str(err.value)
    assert "row 0: label must be -1 or a step index in [0, 2), got 2" in text
    assert "row 1: problem must be a non-empty string" in text and "row 2: steps[1]" in text


class TruthScorer:
    """1.0 before the labeled first error, 0.0 from it on: a perfect step scorer for a labeled dataset."""

    def __init__(self, data):
        self.truth = {(r["problem"], tuple(s.strip() for s in r["steps"])): r["label"] for r in data}

    def score(self, prompts, steps):
        out = []
        for p, s in zip(prompts, steps):
            label = self.truth[(p, tuple(s))]
            out.append([1.0] + [0.0 if 0 <= label <= h else 1.0 for h in range(len(s))])
        return out


@pytest.mark.skipif(importlib.util.find_spec("champ_dataset") is None, reason="champ-dataset is not installed")
def test_champ_first_wrong_steps():
    from importlib import resources

    data = load_champ(limit=12)
    assert len(data) == 12 and set(data.column_names) >= {"id", "problem", "steps", "label", "generator", "subset"}
    raw = json.loads((resources.files("champ_dataset") / "dataset_files" / "v0.json").read_text())["problems"]
    for row in data:
        problem_id, key = row["id"].split("|", 1)
        annotation = raw[problem_id]["fws_annotations"][key]
        if annotation["start_idx"] is None:
            assert row["label"] == -1
        else:  # the labeled step holds the annotation's first words
            wrong = annotation["text"][annotation["start_idx"] : annotation["end_idx"]].strip()
            assert wrong[:20] in row["steps"][row["label"]]
            # ... and its span holds the annotation's first character (or that character sits in the gap before it).
            spans = StepFormat.blank_line().spans(annotation["text"])
            previous_end = spans[row["label"] - 1][1] if row["label"] else 0
            assert previous_end <= annotation["start_idx"] < spans[row["label"]][1]
    assert {-1} < set(data["label"])
    perfect = evaluate_step_errors(TruthScorer(data), data, threshold=0.5)
    assert perfect["overall"]["f1"] == 1.0 and all(m["f1"] == 1.0 for m in perfect["subsets"].values())
    assert sum(m["n_error"] + m["n_correct"] for m in perfect["subsets"].values()) == 12
    assert set(perfect["subsets"]) == set(data["subset"])
    everything_right = evaluate_step_errors(NoisyLess(), data, threshold=0.5)["overall"]
    assert everything_right["error_acc"] == 0.0 and everything_right["correct_acc"] == 1.0


class NoisyLess:
    """Every step scores 1: predicts "no error" everywhere."""

    def score(self, prompts, steps):
        return [[1.0] * (len(s) + 1) for s in steps]


def test_eval_steps_command(tmp_path, capsys, char_tok):
    # The exact oracle on the arithmetic task, threshold tuned on a split.
    main(["eval-steps", "--scorer", "arithmetic-oracle", "--data", "arithmetic", "--limit", "60"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["threshold"] == 0.5 and report["rows"] == 60 and report["tuned_on"] is None
    main(["eval-steps", "--scorer", "arithmetic-oracle", "--data", "arithmetic", "--limit", "60", "--tune_fraction",
          "0.3", "--output", str(tmp_path / "r.json")])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["overall"]["f1"] == 1.0 and report["tuned_on"] == 18 and report["rows"] == 42
    assert json.loads((tmp_path / "r.json").read_text()) == report
    # A trl_pav verifier from a folder on a ProcessBench-layout file: the report is the verifier's own predictions.
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=3), char_tok, PAVMetadata())
    verifier.save_pretrained(tmp_path / "pav")
    rows = [r | {"subset": "a" if i % 2 else "b"} for i, r in enumerate(arithmetic_step_errors(10, 0.5, seed=3))]
    (tmp_path / "pb.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    main(["eval-steps", "--scorer", str(tmp_path / "pav"), "--data", str(tmp_path / "pb.jsonl")])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    values = [v[1:] for v in verifier.score([r["problem"] for r in rows], [r["steps"] for r in rows])]
    predicted = predicted_first_errors(values, 0.5)
    labels = np.array([r["label"] for r in rows])
    assert report["overall"] == step_error_metrics(predicted, labels)
    assert set(report["subsets"]) == {"a", "b"}
    with pytest.raises(SystemExit, match="--scorer is required"):
        main(["eval-steps", "--data", "arithmetic"])


def test_multiline_steps_and_public_prm_from_the_command_line(tmp_path, capsys, char_tok):
    from trl_pav.step_eval import score_step_errors
    from trl_pav.testing import tiny_public_prm

    # A newline-separated verifier reads a multi-line step as one line.
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=1), char_tok, PAVMetadata())
    rows = validate_step_errors([{"problem": "Q:1+2*2?\n", "steps": ["2*2=4\nso 4", " 1+4=5 "], "label": -1}])
    expected = verifier.score(["Q:1+2*2?\n"], [["2*2=4 so 4", "1+4=5"]])[0][1:]
    assert score_step_errors(verifier, rows) == [pytest.approx(expected)]
    # A public PRM folder through eval-steps.
    model, tok = tiny_public_prm("math-shepherd")
    model.save_pretrained(tmp_path / "prm")
    tok.save_pretrained(tmp_path / "prm")
    main(["eval-steps", "--scorer", str(tmp_path / "prm"), "--scorer_type", "math-shepherd", "--data", "arithmetic",
          "--limit", "6", "--threshold", "0.5"])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] == 6 and report["scorer_type"] == "math-shepherd"
    assert report["overall"]["n_error"] + report["overall"]["n_correct"] == 6
