"""The stepwise dataset contract: one row is one trace with a soft label per step.

Columns:
    - `prompt`: a string, or chat messages (a list of `{"role": str, "content": str}` dicts).
    - `completions`: a non-empty list of step strings.
    - `labels`: one float in `[0, 1]` per step, the Monte-Carlo estimate of `Q^π` after that step, or `None` for a
      step that was never measured (masked: no loss). Bools load as 0/1, so rows in TRL's former
      stepwise-supervision format load unchanged.

Optional columns checked when present (they reach a loss or a checkpoint): `root_value` (a finite number in
`[0, 1]`), `seed_outcome` (0, 1 or a bool), `target` (`"q_pi"` or `"q_mu"`); `None` means absent.

Other columns (provenance written by the labeler, ids, gold answers) pass through untouched.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

if TYPE_CHECKING:
    from .steps import StepFormat

__all__ = [
    "REQUIRED_COLUMNS",
    "TARGETS",
    "StepwiseDataError",
    "from_math_shepherd",
    "from_trl_stepwise",
    "validate_stepwise",
]

REQUIRED_COLUMNS = ("prompt", "completions", "labels")
TARGETS = ("q_pi", "q_mu")  # what labels estimate: the base policy's values, or a separate prover's
_MAX_LISTED = 20


class StepwiseDataError(ValueError):
    """Raised when rows break the stepwise contract. `problems` holds `(row, message)` pairs."""

    def __init__(self, problems: list[tuple[int | None, str]], total_rows: int):
        self.problems = problems
        shown = "\n".join(
            f"  - {'row ' + str(r) + ': ' if r is not None else ''}{m}" for r, m in problems[:_MAX_LISTED]
        )
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        bad_rows = len({r for r, _ in problems if r is not None})
        summary = f"{len(problems)} problem(s) in {bad_rows} of {total_rows} row(s)"
        super().__init__(f"stepwise dataset is invalid: {summary}\n{shown}{more}")


def _check_prompt(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return None if prompt.strip() else "prompt is empty"
    if isinstance(prompt, list):
        if not prompt:
            return "prompt is an empty list of messages"
        for j, msg in enumerate(prompt):
            if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
                return f"prompt[{j}] must be a message dict with a string 'role', got {msg!r:.80}"
            if not isinstance(msg.get("content"), str):
                return f"prompt[{j}]['content'] must be a string, got {type(msg.get('content')).__name__}"
        return None
    return f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}"


def _row_problems(row: Mapping[str, Any]) -> tuple[list[str], list[float | None] | None]:
    """Problems of one row, and its labels as floats when they are valid."""
    problems = []
    msg = _check_prompt(row["prompt"])
    if msg:
        problems.append(msg)
    completions, labels = row["completions"], row["labels"]
    if not isinstance(completions, (list, tuple)):
        problems.append(f"completions must be a list of strings, got {type(completions).__name__}")
        completions = None
    elif not completions:
        problems.append("empty trace: completions has no steps")
    else:
        for j, step in enumerate(completions):
            if not isinstance(step, str):
                problems.append(f"completions[{j}] must be a string, got {type(step).__name__}")
            elif not step.strip():
                problems.append(f"completions[{j}] is empty or whitespace-only")
    floats: list[float | None] | None = None
    if not isinstance(labels, (list, tuple)):
        problems.append(f"labels must be a list of floats in [0, 1], got {type(labels).__name__}")
    else:
        floats = []
        for j, lab in enumerate(labels):
            if lab is None:  # a step that was never measured: masked, no loss
                floats.append(None)
            elif _is_bool(lab):
                floats.append(float(lab))
            elif isinstance(lab, numbers.Real):  # Python and NumPy ints and floats
                val = _as_float(lab)
                if not math.isfinite(val):
                    problems.append(f"labels[{j}] = {lab!r} is not finite")
                elif not 0.0 <= val <= 1.0:
                    problems.append(f"labels[{j}] = {lab!r} is outside [0, 1]")
                floats.append(val)
            else:
                problems.append(
                    f"labels[{j}] must be a number, bool or None (not measured), got {type(lab).__name__} {lab!r:.40}"
                )
        if completions is not None and len(labels) != len(completions):
            problems.append(f"length mismatch: {len(completions)} completions but {len(labels)} labels")
    problems.extend(_optional_field_problems(row))
    return problems, (floats if not problems else None)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))  # NumPy's bool is no Python bool


def _as_float(value: numbers.Real) -> float:
    """`float(value)`, with integers too large for a float read as infinite (reported as not finite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _probability_problem(field: str, value: Any) -> str | None:
    """Why `value` is not a probability (a finite number in [0, 1]), or None."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        return f"{field} = {value!r:.40} must be a number in [0, 1], got {type(value).__name__}"
    value = _as_float(value)
    if not math.isfinite(value):
        return f"{field} = {value!r} is not finite"
    if not 0.0 <= value <= 1.0:
        return f"{field} = {value!r} is outside [0, 1]"
    return None


def _optional_field_problems(row: Mapping[str, Any]) -> list[str]:
    """Problems of the optional columns that reach a loss or a checkpoint: `root_value`, `seed_outcome`, `target`."""
    problems = []
    root = row.get("root_value")
    if root is not None:
        msg = _probability_problem("root_value", root)
        if msg:
            problems.append(msg)
    outcome = row.get("seed_outcome")
    if outcome is not None and not ((_is_bool(outcome) or isinstance(outcome, numbers.Real)) and outcome in (0, 1)):
        problems.append(f"seed_outcome = {outcome!r:.40} must be 0, 1 or a bool (the graded outcome of the trace)")
    target = row.get("target")
    if target is not None and target not in TARGETS:
        problems.append(f"target = {target!r:.40} is not one of {list(TARGETS)}")
    return problems


def validate_stepwise(data: Dataset | Iterable[Mapping[str, Any]], step_format: StepFormat | None = None) -> Dataset:
    """Check rows against the stepwise contract and return a clean `datasets.Dataset` with float labels.

    Every row is checked before anything is raised, so one error lists all offending rows.

    Args:
        data: a `datasets.Dataset` or an iterable of row dicts.
        step_format: when given, every step must also be a valid step of this format (no separator inside it).

    Returns:
        A `Dataset` with the same rows and columns, `labels` as lists of floats (`None` where a step is masked).

    Raises:
        StepwiseDataError: naming each bad row and what is wrong with it.

    Example:
        >>> from trl_pav import validate_stepwise
        >>> ds = validate_stepwise([{"prompt": "1+1?", "completions": ["1+1=2", "A:2"], "labels": [True, 1.0]}])
        >>> ds[0]["labels"]
        [1.0, 1.0]
    """
    rows = list(data) if not isinstance(data, Dataset) else data.to_list()
    if not rows:
        raise StepwiseDataError([(None, "dataset has no rows")], 0)
    columns: set[str] = set(data.column_names) if isinstance(data, Dataset) else set().union(*(r.keys() for r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise StepwiseDataError([(None, f"missing column(s) {missing}; found {sorted(columns)}")], len(rows))
    problems: list[tuple[int | None, str]] = []
    clean = []
    first_kind: tuple[int, str] | None = None
    for i, row in enumerate(rows):
        absent = [c for c in REQUIRED_COLUMNS if c not in row]
        if absent:
            problems.append((i, f"missing field(s) {absent}"))
            continue
        row_problems, floats = _row_problems(row)
        if step_format is not None and not row_problems:
            try:
                step_format.check_steps(row["completions"])
            except ValueError as err:
                row_problems.append(f"completions: {err}")
        # A column holds one type: all prompts are strings, or all are chat messages.
        if isinstance(row["prompt"], (str, list)):
            kind = "a string" if isinstance(row["prompt"], str) else "chat messages"
            first_kind = first_kind or (i, kind)
            if kind != first_kind[1]:
                row_problems.append(f"prompt is {kind} but row {first_kind[0]}'s is {first_kind[1]}")
        problems.extend((i, m) for m in row_problems)
        if floats is not None:
            clean_row = {**row, "completions": list(row["completions"]), "labels": floats}
            if clean_row.get("seed_outcome") is not None:  # bools and ints as floats: one column type
                clean_row["seed_outcome"] = float(clean_row["seed_outcome"])
            clean.append(clean_row)
    if problems:
        raise StepwiseDataError(problems, len(rows))
    return _rows_to_dataset(clean)


def _rows_to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """`Dataset.from_list` over the union of the rows' columns (a column only later rows have is kept, `None`
    elsewhere; `from_list` takes its columns from the first row), naming the column whose values do not share one
    type."""
    import pyarrow as pa

    order = list(dict.fromkeys(k for row in rows for k in row))
    full = [{k: row.get(k) for k in order} for row in rows]
    try:
        return Dataset.from_list(full)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        for column in order:
            try:
                Dataset.from_list([{column: row[column]} for row in full])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                kinds: dict[str, int] = {}
                for i, row in enumerate(full):
                    if row[column] is not None:
                        kinds.setdefault(type(row[column]).__name__, i)
                if len(kinds) > 1:
                    shown = ", ".join(f"{kind} (first in row {i})" for kind, i in kinds.items())
                    problem = (None, f"column {column!r} mixes value types that one column cannot hold: {shown}")
                else:  # one Python type whose nested fields differ (dicts or lists holding other types)
                    first = next(i for i, row in enumerate(full) if row[column] is not None)
                    problem = (
                        first,
                        f"column {column!r}: its {next(iter(kinds))} values do not share one structure (nested "
                        f"fields of differing types; this row's is {full[first][column]!r:.60})",
                    )
                raise StepwiseDataError([problem], len(rows)) from err
        raise


def from_trl_stepwise(data: Dataset | Iterable[Mapping[str, Any]]) -> Dataset:
    """Load rows in TRL's former stepwise-supervision format (`prompt`, `completions`, bool `labels`).

    The format is a subset of ours, so this is validation with bool labels read as 0/1.

    Example:
        >>> from trl_pav import from_trl_stepwise
        >>> from_trl_stepwise([{"prompt": "2*3?", "completions": ["2*3=6"], "labels": [True]}])[0]["labels"]
        [1.0]
    """
    return validate_stepwise(data)


def _shepherd_row(text: str, label: str, step_tag: str, good: str, bad: str, question_end: re.Pattern) -> dict:
    pieces = text.split(step_tag)
    if len(pieces) < 2:
        raise ValueError(f"no step tag {step_tag!r} in input")
    expected_len = len(text) - (len(pieces) - 1) * (len(step_tag) - 1)
    if len(label) != expected_len:
        raise ValueError(
            f"label text has {len(label)} characters but input with tags replaced by one mark has {expected_len}"
        )
    marks, pos = [], 0
    for piece in pieces[:-1]:
        if label[pos : pos + len(piece)] != piece:
            raise ValueError(f"label text differs from input near character {pos}")
        pos += len(piece)
        mark = label[pos]
        if mark not in (good, bad):
            raise ValueError(f"step mark {mark!r} at character {pos} is neither {good!r} nor {bad!r}")
        marks.append(mark == good)
        pos += 1
    match = question_end.search(pieces[0])
    if match is None:
        raise ValueError(f"cannot find where the question ends (pattern {question_end.pattern!r})")
    prompt = pieces[0][: match.start()]
    steps = [pieces[0][match.start() :], *pieces[1:-1]]
    steps = [s.strip() for s in steps]
    return {"prompt": prompt.strip(), "completions": steps, "labels": [float(m) for m in marks]}


def from_math_shepherd(
    data: Dataset | Iterable[Mapping[str, Any]],
    input_column: str = "input",
    label_column: str = "label",
    step_tag: str = "ки",
    good_mark: str = "+",
    bad_mark: str = "-",
    first_step_pattern: str = r"Step 1\s*:",
) -> Dataset:
    """Convert Math-Shepherd-style rows to the stepwise contract.

    In that format `input` holds the question followed by steps, each ending in `step_tag`, and `label` is the same
    text with each tag replaced by `good_mark` or `bad_mark`. The question ends where `first_step_pattern` first
    matches. Other columns are kept.

    Raises:
        StepwiseDataError: naming each row that cannot be converted and why.

    Example:
        >>> from trl_pav import from_math_shepherd
        >>> row = {"input": "What is 2+2? Step 1: 2+2=4 ки\\nStep 2: The answer is 4 ки",
        ...        "label": "What is 2+2? Step 1: 2+2=4 +\\nStep 2: The answer is 4 +"}
        >>> out = from_math_shepherd([row])[0]
        >>> out["prompt"], out["completions"], out["labels"]
        ('What is 2+2?', ['Step 1: 2+2=4', 'Step 2: The answer is 4'], [1.0, 1.0])
    """
    rows = list(data) if not isinstance(data, Dataset) else data.to_list()
    question_end = re.compile(first_step_pattern)
    problems: list[tuple[int | None, str]] = []
    out = []
    for i, row in enumerate(rows):
        text, label = row.get(input_column), row.get(label_column)
        if not isinstance(text, str) or not isinstance(label, str):
            problems.append((i, f"fields {input_column!r} and {label_column!r} must both be strings"))
            continue
        try:
            converted = _shepherd_row(text, label, step_tag, good_mark, bad_mark, question_end)
        except ValueError as err:
            problems.append((i, str(err)))
            continue
        rest = {k: v for k, v in row.items() if k not in (input_column, label_column)}
        out.append({**rest, **converted})
    if problems:
        raise StepwiseDataError(problems, len(rows))
    return validate_stepwise(out)
