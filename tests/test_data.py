import math

import pytest
from datasets import Dataset

from trl_pav import StepwiseDataError, from_math_shepherd, from_trl_stepwise, validate_stepwise

GOOD = {"prompt": "Q:1+2*3?", "completions": ["2*3=6", "1+6=7", "A:7"], "labels": [0.9, 0.8, 1.0]}


def test_valid_rows_and_passthrough():
    chat = {
        "prompt": [{"role": "user", "content": "1+1?"}],
        "completions": ["1+1=2"],
        "labels": [True],
        "gold": "2",
    }
    ds = validate_stepwise([GOOD])
    assert isinstance(ds, Dataset)
    assert ds[0]["labels"] == [0.9, 0.8, 1.0]
    ds = validate_stepwise([chat])
    assert ds[0]["labels"] == [1.0]
    assert ds[0]["prompt"] == [{"role": "user", "content": "1+1?"}]
    assert ds[0]["gold"] == "2"
    with pytest.raises(StepwiseDataError, match="row 1: prompt is chat messages but row 0's is a string"):
        validate_stepwise([GOOD, chat])
    # A Dataset goes in as well as a list.
    assert validate_stepwise(Dataset.from_list([GOOD])).to_list()[0]["completions"] == GOOD["completions"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": [0.9, 0.8]}, "length mismatch: 3 completions but 2 labels"),
        ({"labels": [0.9, 1.5, 1.0]}, r"labels\[1\] = 1.5 is outside \[0, 1\]"),
        ({"labels": [0.9, -0.1, 1.0]}, r"labels\[1\] = -0.1 is outside"),
        ({"labels": [0.9, math.nan, 1.0]}, r"labels\[1\] = nan is not finite"),
        ({"labels": [0.9, math.inf, 1.0]}, r"labels\[1\] = inf is not finite"),
        ({"labels": [0.9, "yes", 1.0]}, r"labels\[1\] must be a number, bool or None \(not measured\), got str"),
        ({"labels": 0.5}, "labels must be a list"),
        ({"completions": [], "labels": []}, "empty trace"),
        ({"completions": "2*3=6", "labels": [1.0]}, "completions must be a list of strings, got str"),
        ({"completions": ["2*3=6", 7, "A:7"]}, r"completions\[1\] must be a string, got int"),
        ({"completions": ["2*3=6", "  ", "A:7"]}, r"completions\[1\] is empty or whitespace-only"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": 3}, "prompt must be a string or a list of chat messages, got int"),
        ({"prompt": [{"content": "x"}]}, r"prompt\[0\] must be a message dict"),
    ],
)
def test_each_bad_row_is_named(change, message):
    rows = [GOOD, GOOD, {**GOOD, **change}]
    with pytest.raises(StepwiseDataError, match=message) as err:
        validate_stepwise(rows)
    assert "row 2:" in str(err.value)
    assert "row 0:" not in str(err.value)
    assert {r for r, _ in err.value.problems} == {2}


def test_one_error_lists_all_bad_rows():
    rows = [{**GOOD, "labels": [2.0, 0.0, 0.0]}, GOOD, {**GOOD, "completions": [], "labels": []}]
    with pytest.raises(StepwiseDataError) as err:
        validate_stepwise(rows)
    text = str(err.value)
    assert "2 problem(s) in 2 of 3 row(s)" in text
    assert "row 0: labels[0] = 2.0" in text and "row 2: empty trace" in text


def test_missing_column_and_empty():
    with pytest.raises(StepwiseDataError, match=r"missing column\(s\) \['labels'\]"):
        validate_stepwise([{"prompt": "x", "completions": ["a"]}])
    with pytest.raises(StepwiseDataError, match=r"row 1: missing field\(s\) \['labels'\]"):
        validate_stepwise([GOOD, {"prompt": "x", "completions": ["a"]}])
    with pytest.raises(StepwiseDataError, match="no rows"):
        validate_stepwise([])


def test_columns_only_later_rows_have_are_kept():
    ds = validate_stepwise([GOOD, {**GOOD, "gold": "7", "root_value": 0.5}])
    assert ds.column_names == ["prompt", "completions", "labels", "gold", "root_value"]
    assert ds["gold"] == [None, "7"] and ds["root_value"] == [None, 0.5]


def test_numpy_numbers_and_huge_ints():
    np = pytest.importorskip("numpy")
    ds = validate_stepwise(
        [{**GOOD, "labels": [np.float32(0.5), np.int64(1), np.bool_(False)], "root_value": np.float64(0.25)}]
    )
    assert ds[0]["labels"] == [0.5, 1.0, 0.0] and ds[0]["root_value"] == 0.25
    with pytest.raises(StepwiseDataError, match=r"row 0: labels\[1\] = 1000.* is not finite"):
        validate_stepwise([{**GOOD, "labels": [0.5, 10**400, 1.0]}])
    with pytest.raises(StepwiseDataError, match=r"root_value = .* is not finite"):
        validate_stepwise([{**GOOD, "root_value": -(10**400)}])


def test_a_column_of_mixed_types_is_named():
    kinds = r"str \(first in row 0\), int \(first in row 1\)"
    with pytest.raises(StepwiseDataError, match=rf"column 'source' mixes value types .*: {kinds}"):
        validate_stepwise([{**GOOD, "source": "gsm8k"}, {**GOOD, "source": 3}])


def test_trl_stepwise_rows_load_unchanged():
    old = {
        "prompt": "Which number is larger, 9.8 or 9.11?",
        "completions": ["11 > 8", "9.11 > 9.8"],
        "labels": [True, False],
    }
    ds = from_trl_stepwise([old])
    assert ds[0]["labels"] == [1.0, 0.0]
    assert ds[0]["completions"] == old["completions"]


def test_math_shepherd_conversion():
    row = {
        "input": "Janet has 3 apples, buys 2. How many? Step 1: 3+2=5 ки\nStep 2: She has 5. The answer is: 5 ки",
        "label": "Janet has 3 apples, buys 2. How many? Step 1: 3+2=5 +\nStep 2: She has 5. The answer is: 5 -",
        "task": "GSM8K",
    }
    out = from_math_shepherd([row])[0]
    assert out["prompt"] == "Janet has 3 apples, buys 2. How many?"
    assert out["completions"] == ["Step 1: 3+2=5", "Step 2: She has 5. The answer is: 5"]
    assert out["labels"] == [1.0, 0.0]
    assert out["task"] == "GSM8K"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a ?"}, "neither"),
        ({"input": "Q? Step 1: a", "label": "Q? Step 1: a"}, "no step tag"),
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: b +"}, "differs from input"),
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a ++"}, "characters"),
        ({"input": "Q? a ки", "label": "Q? a +"}, "question ends"),
        ({"input": 3, "label": "x"}, "must both be strings"),
    ],
)
def test_math_shepherd_errors(row, message):
    with pytest.raises(StepwiseDataError, match=message) as err:
        from_math_shepherd([row])
    assert "row 0:" in str(err.value)
