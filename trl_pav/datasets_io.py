"""Loading real problem sets (MATH, MATH-500, GSM8K, your own) into the labeler's `prompt` / `gold` layout."""

from __future__ import annotations

import math
import os

from datasets import Dataset, load_dataset

from .grading import extract_answer

__all__ = ["check_nonempty_file", "is_conversational", "load_problems"]

_PROMPT_FIELDS = ("prompt", "problem", "question")
_GOLD_FIELDS = ("gold", "answer", "solution")
_SOURCE_GOLD = "__trl_pav_source_gold"
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


def _check_messages(messages: list, idx: int, field: str) -> list[dict[str, str]]:
    """A conversational prompt checked: a non-empty list of `{"role", "content"}` string messages with a user turn."""
    if not messages:
        raise ValueError(f"row {idx}: field {field!r} is an empty list of messages")
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"row {idx}: field {field!r}, message {k} is not a dict: {message!r:.80}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(
                f"row {idx}: field {field!r}, message {k} needs string 'role' and 'content', got {message!r:.80}"
            )
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise ValueError(
            f"row {idx}: field {field!r} has no user message with text (roles {[m['role'] for m in messages]})"
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _column(columns: set[str], given: str | None, candidates: tuple[str, ...], what: str) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"{what} {given!r} is not a column of the problems; found {sorted(columns)}")
        return given
    found = next((f for f in candidates if f in columns), None)
    if found is None:
        raise ValueError(f"problems need a {what} (one of {candidates}, or name it); found {sorted(columns)}")
    return found


def load_problems(
    source: str | Dataset,
    split: str = "train",
    limit: int | None = None,
    template: str = _INSTRUCTION,
    config: str | None = None,
    prompt_column: str | None = None,
    answer_column: str | None = None,
) -> Dataset:
    """Problems with `prompt` (the problem in `template`, or a conversation) and `gold` (the reference final answer).

    Field layouts recognised: MATH / MATH-500 (`problem`, `answer` or `solution` with a `\\boxed{}` answer), GSM8K
    (`question`, `answer` ending in `#### n`), and rows that already have `prompt` / `gold`; `prompt_column` and
    `answer_column` name other columns. Other columns, the source answer column included, are kept.

    Prompts: a string in a `prompt` column is used as it is, a string in any other column is put into `template`
    (its `{problem}`). A conversational prompt (TRL's format: a list of `{"role", "content"}` messages) is kept as
    messages, for the stages to render through the policy's chat template (`use_chat_template`); RL hands them to
    TRL as they are.

    Answers: a `gold` column is used as it is; any other column gives the last `\\boxed{}` or `#### n` it holds,
    else its text (a `solution` column must hold one); numbers become their text.

    Args:
        source: a Hub id, a local `.json`/`.jsonl`/`.parquet`/`.csv` file, or a `Dataset`.
        split: the split to read from a Hub dataset.
        limit: keep the first `limit` rows.
        template: how a problem string becomes a prompt.
        config: the Hub dataset's configuration (for example `"main"` for `openai/gsm8k`).
        prompt_column: the column holding the problem or conversation (default: the first of `prompt`, `problem`,
            `question`).
        answer_column: the column holding the reference answer (default: the first of `gold`, `answer`,
            `solution`).

    Raises:
        ValueError: naming a missing column, or the first row without a usable problem or answer (row, field,
            value).

    Example:
        >>> from datasets import Dataset
        >>> rows = [{"query": [{"role": "user", "content": "1+1?"}], "final": 2}]
        >>> load_problems(Dataset.from_list(rows), prompt_column="query", answer_column="final")[0]
        {'final': 2, 'prompt': [{'role': 'user', 'content': '1+1?'}], 'gold': '2'}
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 (or None for every row), got {limit}")
    if "{problem}" not in template:
        raise ValueError(f"template must contain '{{problem}}' where the problem goes, got {template!r:.80}")
    try:
        template.format(problem="")
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(
            f"template {template!r:.80} has braces other than '{{problem}}' ({err!r}); write literal braces twice, "
            "e.g. '\\boxed{{}}'"
        ) from err
    data = source if isinstance(source, Dataset) else _read(source, split, config)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    columns = set(data.column_names)
    prompt_field = _column(columns, prompt_column, _PROMPT_FIELDS, "prompt column")
    gold_field = _column(columns, answer_column, _GOLD_FIELDS, "answer column")
    verbatim = gold_field == "gold"  # a `gold` column holds the final answer itself
    # The source answer column stays (GSM8K's holds the reference solution that SFT trains on).
    drop = [prompt_field] if prompt_field != "prompt" else []
    if "gold" in columns:  # rewritten as text: `map` would keep a numeric column's type, so it goes out first
        data, drop = data.rename_column("gold", _SOURCE_GOLD), [*drop, _SOURCE_GOLD]
        gold_field = _SOURCE_GOLD if verbatim else gold_field
    shown_gold = "gold" if verbatim else gold_field

    def convert(row, idx):
        problem, answer = row[prompt_field], row[gold_field]
        if isinstance(problem, list):
            prompt = _check_messages(problem, idx, prompt_field)
        elif not isinstance(problem, str) or not problem.strip():
            raise ValueError(
                f"row {idx}: field {prompt_field!r} must be a non-empty string or a list of chat messages, "
                f"got {problem!r:.80}"
            )
        else:
            prompt = problem if prompt_field == "prompt" else template.format(problem=problem)
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            if not math.isfinite(answer):
                raise ValueError(f"row {idx}: field {shown_gold!r} is {answer!r}, not a usable answer")
            answer = str(answer)
        if not isinstance(answer, str) or verbatim:
            gold = answer
        elif gold_field == "solution":
            gold = extract_answer(answer)
        else:  # an answer column: the marked answer if it marks one (GSM8K's `#### n`), else the answer itself
            gold = extract_answer(answer) or answer
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"row {idx}: no final answer found in field {shown_gold!r}: {answer!r:.80}")
        return {"prompt": prompt, "gold": gold.strip()}

    return data.map(convert, with_indices=True, remove_columns=drop)


def is_conversational(problems: Dataset, column: str = "prompt") -> bool:
    """Whether `problems`' prompts are chat messages (a list of `{"role", "content"}`), not text.

    Example:
        >>> from datasets import Dataset
        >>> is_conversational(Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1?"}]}]))
        True
    """
    return len(problems) > 0 and column in problems.column_names and isinstance(problems[0][column], list)
