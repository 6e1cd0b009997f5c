"""Step-error evaluation in the style of ProcessBench: does a step scorer find the first wrong step of a trace?

Data layout (ProcessBench's): one row per trace with `problem` (str), `steps` (list of str) and `label` (index of the
first wrong step, -1 if every step is correct); an optional `subset` column groups rows (ProcessBench's splits, CHAMP's
categories). For any `StepScorer` (a trl_pav verifier, a public PRM adapter, an exact oracle), the predicted first
error is the first step whose score is below a threshold, given or tuned on a separate split; the report gives the
accuracy on erroneous traces, on correct traces, and their harmonic mean (F1), overall and per subset.

Converters: `from_stepwise_labels` (trl_pav's stepwise contract, Math-Shepherd, PRM800K-style rows with per-step
labels), `load_champ` (the `champ-dataset` package: 540 first-wrong-step annotations of model solutions to 270
competition problems, MIT), and `arithmetic_step_errors` (the synthetic task, whose exact checker gives the truth).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

from .data import StepwiseDataError, validate_stepwise
from .metrics import best_first_error_threshold, predicted_first_errors, step_error_metrics
from .modeling import StepScorer
from .steps import StepFormat

__all__ = [
    "StepEvalArguments",
    "arithmetic_step_errors",
    "evaluate_step_errors",
    "from_stepwise_labels",
    "load_champ",
    "load_step_errors",
    "score_step_errors",
    "validate_step_errors",
]

STEP_ERROR_COLUMNS = ("problem", "steps", "label")
# `eval-steps --dtype` values, TRL's `ModelConfig.dtype` choices ("auto": the checkpoint's own dtype).
SCORER_DTYPES = ("auto", "bfloat16", "float16", "float32")


def _rows(data: Dataset | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return data.to_list() if isinstance(data, Dataset) else [dict(r) for r in data]


def validate_step_errors(data: Dataset | Iterable[Mapping[str, Any]]) -> Dataset:
    """Check ProcessBench-layout rows and return them as a `Dataset`.

    Raises:
        StepwiseDataError: naming each bad row and field (missing column, empty problem or step, label out of range).

    Example:
        >>> validate_step_errors([{"problem": "1+1?", "steps": ["1+1=2"], "label": -1}])[0]["label"]
        -1
    """
    rows = _rows(data)
    if not rows:
        raise StepwiseDataError([(None, "step-error dataset has no rows")], 0)
    missing = [c for c in STEP_ERROR_COLUMNS if c not in rows[0]]
    if missing:
        raise StepwiseDataError([(None, f"missing column(s) {missing}; found {sorted(rows[0])}")], len(rows))
    problems: list[tuple[int | None, str]] = []
    for i, row in enumerate(rows):
        problem, steps, label = row.get("problem"), row.get("steps"), row.get("label")
        if not isinstance(problem, str) or not problem.strip():
            problems.append((i, f"problem must be a non-empty string, got {problem!r:.60}"))
        if not isinstance(steps, (list, tuple)) or not steps:
            problems.append((i, f"steps must be a non-empty list of strings, got {steps!r:.60}"))
            continue
        for j, step in enumerate(steps):
            if not isinstance(step, str) or not step.strip():
                problems.append((i, f"steps[{j}] must be a non-empty string, got {step!r:.60}"))
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not -1 <= label < len(steps):
            problems.append((i, f"label must be -1 or a step index in [0, {len(steps)}), got {label!r}"))
    if problems:
        raise StepwiseDataError(problems, len(rows))
    return Dataset.from_list(rows)


def from_stepwise_labels(
    data: Dataset | Iterable[Mapping[str, Any]], threshold: float = 0.5, subset: str | None = None
) -> Dataset:
    """Stepwise rows (`prompt`, `completions`, per-step `labels`: bools, 0/1 or soft values) to the ProcessBench layout:
    the first step labeled `< threshold` is the first error, -1 if none. Math-Shepherd rows go through
    `from_math_shepherd` first; PRM800K-style ratings map to labels as `rating >= 0` before this.

    Chat prompts become the content of their last user message. Other columns are kept.

    Example:
        >>> rows = [{"prompt": "2+2?", "completions": ["2+2=5", "so 5"], "labels": [False, False]}]
        >>> from_stepwise_labels(rows)[0]["label"]
        0
    """
    rows = validate_stepwise(data).to_list()
    out = []
    for row in rows:
        prompt = row.pop("prompt")
        if not isinstance(prompt, str):
            prompt = next(m["content"] for m in reversed(prompt) if m.get("role") == "user")
        steps, labels = row.pop("completions"), row.pop("labels")
        first = next((h for h, v in enumerate(labels) if v < threshold), -1)
        converted = {**row, "problem": prompt, "steps": steps, "label": first}
        if subset is not None:
            converted["subset"] = subset
        out.append(converted)
    return validate_step_errors(out)


def load_champ(limit: int | None = None, subset_by: str = "category") -> Dataset:
    """CHAMP's first-wrong-step annotations (from the `champ-dataset` package) in the ProcessBench layout.

    Each annotated model solution is split into steps at blank lines; the first wrong step is the step holding the
    annotation's first character (-1 for "no mistake"). Columns: `id` (problem id and generator), `problem`, `steps`,
    `label`, `generator` (the annotated model), `subset` (`subset_by`: `"category"` or `"generator"`).

    Args:
        limit: keep the first `limit` annotations (in the package's order).
        subset_by: what `subset` holds.

    Raises:
        ImportError: if `champ-dataset` is not installed (`pip install champ-dataset`, or the `champ` extra).
    """
    if subset_by not in ("category", "generator"):
        raise ValueError(f"load_champ: subset_by must be 'category' or 'generator', got {subset_by!r}")
    try:
        from importlib import resources

        path = resources.files("champ_dataset") / "dataset_files" / "v0.json"
    except ModuleNotFoundError as err:
        raise ImportError("load_champ needs the champ-dataset package: pip install 'trl-pav[champ]'") from err
    problems = json.loads(path.read_text())["problems"]
    fmt = StepFormat.blank_line()
    out = []
    for problem_id, problem in problems.items():
        for key, annotation in (problem.get("fws_annotations") or {}).items():
            text, start = annotation["text"], annotation["start_idx"]
            spans = fmt.spans(text)
            if not spans:
                continue
            label = -1 if start is None else next((h for h, (_, e) in enumerate(spans) if e > start), len(spans) - 1)
            generator = key.split("|")[0]
            out.append(
                {
                    "id": f"{problem_id}|{key}",
                    "problem": problem["_text"],
                    "steps": [text[s:e].strip() for s, e in spans],
                    "label": label,
                    "generator": generator,
                    "subset": problem["category"] if subset_by == "category" else generator,
                }
            )
            if limit is not None and len(out) >= limit:
                return validate_step_errors(out)
    return validate_step_errors(out)


def arithmetic_step_errors(n: int, error_rate: float = 0.3, seed: int = 0) -> Dataset:
    """`n` traces of the arithmetic task sampled from `NoisyArithmeticPolicy(error_rate)`, labeled by the exact
    checker (`ArithmeticTask.first_error`); prompts are the task's (`Q:<expression>?\\n`), subset `"arithmetic"`.

    Example:
        >>> rows = arithmetic_step_errors(50, error_rate=0.5, seed=0)
        >>> sorted(set(rows["label"]))[0], len(rows)
        (-1, 50)
    """
    from .generation import GenerationRequest
    from .tasks import ArithmeticTask, NoisyArithmeticPolicy

    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate)
    problems = task.sample_problems(n, seed=seed)
    rng = random.Random(seed)
    gens = policy.generate([GenerationRequest(p.prompt, (), rng.randrange(2**31)) for p in problems])
    rows = []
    for p, g in zip(problems, gens):
        first = task.first_error(p.expression, g.steps)
        rows.append({"problem": p.prompt, "steps": g.steps, "label": -1 if first is None else first})
    return validate_step_errors([{**r, "subset": "arithmetic"} for r in rows])


def _fit_steps(steps: Sequence[str], fmt: StepFormat | None) -> list[str]:
    """Steps the scorer's step format accepts: outer whitespace stripped, inner separators turned into spaces (a
    ProcessBench step may span several lines; a newline-separated verifier reads it as one line)."""
    out = [s.strip() for s in steps]
    if fmt is not None:
        out = [" ".join(s.split(fmt.separator)).strip() if fmt.separator in s else s for s in out]
    return out


def score_step_errors(
    scorer: StepScorer, data: Dataset, prompt_template: str = "{problem}", batch_size: int = 64
) -> list[list[float]]:
    """Per-step values (the root dropped) of every row's steps, scored `batch_size` traces per `score` call.

    `prompt_template` formats the prompt from the row's columns (e.g. `"Q:{problem}?\\n"`).
    """
    fmt = getattr(scorer, "step_format", None)
    out: list[list[float]] = []
    for start in range(0, len(data), batch_size):
        chunk = data.select(range(start, min(start + batch_size, len(data))))
        prompts = [prompt_template.format(**row) for row in chunk]
        steps = [_fit_steps(s, fmt) for s in chunk["steps"]]
        values = scorer.score(prompts, steps)
        for i, (v, s) in enumerate(zip(values, steps)):
            if len(v) != len(s) + 1:
                raise ValueError(f"row {start + i}: the scorer returned {len(v)} values for {len(s)} steps (+ root)")
            out.append([float(x) for x in v[1:]])
    return out


def _report(values: list[list[float]], data: Dataset, threshold: float, subset_column: str) -> dict[str, Any]:
    labels = np.asarray(data["label"])
    predicted = predicted_first_errors(values, threshold)
    report: dict[str, Any] = {"overall": step_error_metrics(predicted, labels), "subsets": {}}
    if subset_column in data.column_names:
        subsets = np.asarray(data[subset_column])
        for name in sorted(set(subsets.tolist())):
            keep = subsets == name
            report["subsets"][name] = step_error_metrics(predicted[keep], labels[keep])
        f1s = [m["f1"] for m in report["subsets"].values()]
        report["mean_subset_f1"] = float(np.mean(f1s))
    return report


def evaluate_step_errors(
    scorer: StepScorer,
    data: Dataset | Iterable[Mapping[str, Any]],
    threshold: float | None = 0.5,
    tune_data: Dataset | Iterable[Mapping[str, Any]] | None = None,
    subset_column: str = "subset",
    prompt_template: str = "{problem}",
    batch_size: int = 64,
) -> dict[str, Any]:
    """ProcessBench-style report of how well `scorer` locates first errors.

    Args:
        scorer: any `StepScorer`.
        data: ProcessBench-layout rows (validated).
        threshold: a step scoring `< threshold` is predicted wrong. `None`: tuned on `tune_data` to maximise F1
            (`best_first_error_threshold`), never on `data` itself.
        tune_data: rows for tuning the threshold (required when `threshold` is None).
        subset_column: column grouping rows into subsets (absent: overall only).
        prompt_template: the scorer's prompt, formatted from each row's columns.
        batch_size: traces per `score` call.

    Returns:
        `{"threshold", "tuned_on", "overall": {error_acc, correct_acc, f1, n_error, n_correct}, "subsets": {...},
        "mean_subset_f1"}` (the last only with subsets).

    Example:
        >>> from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
        >>> oracle = NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.3)  # exact values: 0 after an error
        >>> report = evaluate_step_errors(oracle, arithmetic_step_errors(40, 0.3), threshold=0.01)
        >>> report["overall"]["f1"]
        1.0
    """
    data = validate_step_errors(data)
    tuned_on = None
    if threshold is None:
        if tune_data is None:
            raise ValueError("evaluate_step_errors: threshold=None needs tune_data to tune the threshold on")
        tune_data = validate_step_errors(tune_data)
        tune_values = score_step_errors(scorer, tune_data, prompt_template, batch_size)
        threshold, _ = best_first_error_threshold(tune_values, tune_data["label"])
        tuned_on = len(tune_data)
    values = score_step_errors(scorer, data, prompt_template, batch_size)
    return {
        "threshold": float(threshold),
        "tuned_on": tuned_on,
        "rows": len(data),
        **_report(values, data, threshold, subset_column),
    }


def load_step_errors(
    source: str, data_format: str = "processbench", limit: int | None = None, split: str = "train"
) -> Dataset:
    """Rows for `evaluate_step_errors` from `source`: `"champ"`, `"arithmetic"` (synthetic traces with exact labels),
    a JSON/JSONL/Parquet/CSV file, or a Hub dataset id with `split` (e.g. `"Qwen/ProcessBench"`, split `"gsm8k"`), in
    `data_format` `"processbench"`, `"stepwise"` or `"math-shepherd"`. Rows without a `subset` column get `split`.
    """
    if source == "champ":
        return load_champ(limit=limit)
    if source == "arithmetic":
        return arithmetic_step_errors(limit or 200)
    from .datasets_io import _read

    rows = _read(source, split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    if data_format == "processbench":
        out = validate_step_errors(rows)
    elif data_format == "stepwise":
        out = from_stepwise_labels(rows)
    elif data_format == "math-shepherd":
        from .data import from_math_shepherd

        out = from_stepwise_labels(from_math_shepherd(rows))
    else:
        raise ValueError(f"data_format must be 'processbench', 'stepwise' or 'math-shepherd', got {data_format!r}")
    if "subset" not in out.column_names:
        out = out.add_column("subset", [split] * len(out))
    return out


@dataclass
class StepEvalArguments:
    """Arguments of `trl-pav eval-steps`.

    Args:
        scorer (`str`): folder or Hub id of the step scorer, or `"arithmetic-oracle"` (exact values of the arithmetic
            task, for `--data arithmetic`).
        scorer_type (`str`, defaults to `"pav"`): `"pav"` (a trl_pav verifier), `"qwen-prm"`, `"math-shepherd"` or
            `"rlhflow"` (public PRMs, `trl_pav.prm_adapters`).
        data (`str`, defaults to `"champ"`): `"champ"`, `"arithmetic"`, a JSON/JSONL file, or a Hub dataset id.
        split (`str`, defaults to `"train"`): split of a Hub dataset (ProcessBench: `gsm8k`, `math`, ...).
        data_format (`str`, defaults to `"processbench"`): layout of a file: `"processbench"`, `"stepwise"` or
            `"math-shepherd"`.
        limit (`int` or `None`, defaults to `None`): use only the first rows.
        threshold (`float`, defaults to `0.5`): steps scoring below it are predicted wrong (ignored when tuning).
        tune_fraction (`float`, defaults to `0.0`): above 0, tune the threshold on this fraction of the rows (a seeded
            random split) and evaluate on the rest.
        seed (`int`, defaults to `0`): seed of the tuning split.
        prompt_template (`str`, defaults to `"{problem}"`): the scorer's prompt, formatted from each row.
        batch_size (`int`, defaults to `16`): traces per scoring call.
        trust_remote_code (`bool`, defaults to `False`): allow a public PRM's own modeling code (Qwen2.5-Math-PRM).
        dtype (`str`, defaults to `"auto"`): dtype the scorer is loaded in, as TRL's `ModelConfig.dtype`: `"auto"`
            (the checkpoint's own, e.g. bf16 for Qwen2.5-Math-PRM-7B), `"bfloat16"`, `"float16"` or `"float32"`.
        device (`str` or `None`, defaults to `None`): torch device the scorer runs on (`"cuda"`, `"cuda:1"`,
            `"cpu"`, ...). `None`: the first GPU when one is visible, else the CPU.
        output (`str` or `None`, defaults to `None`): also write the report to this JSON file.
    """

    scorer: str = field(default="", metadata={"help": "Folder or Hub id of the scorer, or 'arithmetic-oracle'."})
    scorer_type: str = field(
        default="pav", metadata={"help": "'pav', 'qwen-prm', 'math-shepherd' or 'rlhflow' (how to load the scorer)."}
    )
    data: str = field(default="champ", metadata={"help": "'champ', 'arithmetic', a JSON/JSONL file or a Hub id."})
    split: str = field(default="train", metadata={"help": "Split of a Hub dataset (ProcessBench: gsm8k, math, ...)."})
    data_format: str = field(
        default="processbench", metadata={"help": "File layout: 'processbench', 'stepwise' or 'math-shepherd'."}
    )
    limit: int | None = field(default=None, metadata={"help": "Use only the first rows."})
    threshold: float = field(default=0.5, metadata={"help": "Steps scoring below it are predicted wrong."})
    tune_fraction: float = field(
        default=0.0, metadata={"help": "Tune the threshold on this fraction of rows; evaluate on the rest."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the tuning split."})
    prompt_template: str = field(default="{problem}", metadata={"help": "Scorer prompt, formatted from each row."})
    batch_size: int = field(default=16, metadata={"help": "Traces per scoring call."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a public PRM's own modeling code."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Dtype of the scorer: 'auto' (the checkpoint's), 'bfloat16', 'float16' or 'float32'.",
            "choices": list(SCORER_DTYPES),
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device of the scorer ('cuda', 'cuda:1', 'cpu'); None: GPU if any."}
    )
    output: str | None = field(default=None, metadata={"help": "Also write the report to this JSON file."})

    def __post_init__(self) -> None:
        if not self.scorer:
            raise ValueError("eval-steps: --scorer is required (a folder, Hub id, or 'arithmetic-oracle')")
        if not 0.0 <= self.tune_fraction < 1.0:
            raise ValueError(f"eval-steps: tune_fraction must be in [0, 1), got {self.tune_fraction}")
        if self.dtype not in SCORER_DTYPES:
            raise ValueError(f"eval-steps: dtype must be one of {list(SCORER_DTYPES)}, got {self.dtype!r}")
        if self.device is not None:
            import torch

            try:
                device = torch.device(self.device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"eval-steps: device {self.device!r} is not a torch device ({err})") from err
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"eval-steps: device {self.device!r} asks for a GPU but none is visible")

    def resolved_device(self) -> str:
        """The device the scorer goes to: `device`, or `"cuda"` when a GPU is visible, else `"cpu"`.

        Example:
            >>> StepEvalArguments(scorer="arithmetic-oracle", device="cpu").resolved_device()
            'cpu'
        """
        if self.device is not None:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def load_scorer(args: StepEvalArguments) -> StepScorer:
    """The scorer that `args` names, loaded in `args.dtype` and placed on `args.resolved_device()`."""
    if args.scorer == "arithmetic-oracle":
        from .tasks import ArithmeticTask, NoisyArithmeticPolicy

        return NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.3)
    from .prm_adapters import load_step_scorer

    extra: dict[str, Any] = {"dtype": args.dtype}
    if args.trust_remote_code and args.scorer_type != "pav":
        extra["trust_remote_code"] = True
    scorer = load_step_scorer(args.scorer, args.scorer_type, **extra)
    scorer.model.requires_grad_(False)
    scorer.model = scorer.model.to(args.resolved_device())
    scorer.batch_size = args.batch_size
    return scorer


def run_eval_steps(args: StepEvalArguments) -> dict[str, Any]:
    """`trl-pav eval-steps`: load data and scorer, tune or apply the threshold, report (and write) the metrics."""
    data = load_step_errors(args.data, args.data_format, args.limit, args.split)
    tune = None
    if args.tune_fraction > 0:
        order = list(range(len(data)))
        random.Random(args.seed).shuffle(order)
        cut = max(1, round(args.tune_fraction * len(data)))
        if cut >= len(data):
            raise ValueError(f"eval-steps: tune_fraction {args.tune_fraction} leaves no rows to evaluate")
        tune, data = data.select(sorted(order[:cut])), data.select(sorted(order[cut:]))
    report = evaluate_step_errors(
        load_scorer(args),
        data,
        threshold=None if tune is not None else args.threshold,
        tune_data=tune,
        prompt_template=args.prompt_template,
        batch_size=args.batch_size,
    )
    report = {"scorer": args.scorer, "scorer_type": args.scorer_type, "data": args.data, **report}
    if args.output:
        from pathlib import Path

        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
    return report
