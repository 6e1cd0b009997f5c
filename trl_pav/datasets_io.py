"""Loading real problem sets (MATH, MATH-500, GSM8K, your own) into the labeler's `prompt` / `gold` layout."""

from __future__ import annotations

import os

from datasets import Dataset, load_dataset

from .grading import extract_answer

__all__ = ["check_nonempty_file", "load_problems"]

_PROMPT_FIELDS = ("prompt", "problem", "question")
_GOLD_FIELDS = ("gold", "answer", "solution")
_INSTRUCTION = "Solve the problem step by step, one step per line. Put the final answer in \\boxed{{}}.\n\n{problem}\n"


def check_nonempty_file(path: str | os.PathLike) -> None:
    """Raise `ValueError` naming `path` if it holds no data (empty, or only whitespace).

    `datasets` fails on such a file with a bare `StopIteration`.
    """
    with open(path, "rb") as f:
        if not f.read(1 << 16).strip():
            raise ValueError(f"{os.fspath(path)!r} is empty: no rows to read")


def _read(source: str, split: str, config: str | None = None) -> Dataset:
    ext = os.path.splitext(source)[1].lower()
    if os.path.exists(source):
        kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(ext)
        if kind is None:
            raise ValueError(f"cannot read problems from {source!r}: use a .json, .jsonl, .parquet or .csv file")
        check_nonempty_file(source)
        return load_dataset(kind, data_files=source, split="train")
    if source.startswith(("/", "./", "../", "~")) or ext in (".json", ".jsonl", ".parquet", ".csv"):
        raise FileNotFoundError(f"no such problems file {source!r}")
    return load_dataset(source, config, split=split)


def load_problems(
    source: str | Dataset,
    split: str = "train",
    limit: int | None = None,
    template: str = _INSTRUCTION,
    config: str | None = None,
) -> Dataset:
    """Problems with `prompt` (the problem in `template`) and `gold` (the reference final answer).

    Field layouts recognised: MATH / MATH-500 (`problem`, `answer` or `solution` with a `\\boxed{}` answer), GSM8K
    (`question`, `answer` ending in `#### n`), and rows that already have `prompt` / `gold`. Other columns, the
    source answer column included, are kept.

    `config` is the Hub dataset's configuration (for example `"main"` for `openai/gsm8k`).

    Raises:
        ValueError: naming the first row without a usable problem or answer.
    """
    data = source if isinstance(source, Dataset) else _read(source, split, config)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    columns = set(data.column_names)
    prompt_field = next((f for f in _PROMPT_FIELDS if f in columns), None)
    gold_field = next((f for f in _GOLD_FIELDS if f in columns), None)
    if prompt_field is None or gold_field is None:
        raise ValueError(f"problems need one of {_PROMPT_FIELDS} and one of {_GOLD_FIELDS}; found {sorted(columns)}")

    def convert(row, idx):
        problem, answer = row[prompt_field], row[gold_field]
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"row {idx}: field {prompt_field!r} is empty or not a string")
        gold = answer if gold_field == "gold" else extract_answer(answer) if isinstance(answer, str) else None
        if gold_field == "answer" and isinstance(answer, str) and "####" not in answer:
            gold = answer  # MATH-style: the answer field is the answer itself
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"row {idx}: no final answer found in field {gold_field!r}: {answer!r:.80}")
        prompt = problem if prompt_field == "prompt" else template.format(problem=problem)
        return {"prompt": prompt, "gold": gold.strip()}

    # The source answer column stays (GSM8K's holds the reference solution that SFT trains on).
    drop = [prompt_field] if prompt_field != "prompt" else []
    return data.map(convert, with_indices=True, remove_columns=drop)
