"""The arithmetic demo's verifier recipe and measurements, shared by the demo (`trl_pav.demo.arithmetic`) and the
experiments that rerun them on a demo's outputs (`verifier_heads`). They live here, not in `trl_pav.demo`, because
experiments must not import the demo (the demo may import from here)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ARITHMETIC_TRACE_LIMITS",
    "VerifierRecipe",
    "evaluation_sets",
    "generation_limits",
    "pick_accuracy",
    "saved_pools",
    "saved_task",
    "sibling_steps",
    "step_auc_against_checker",
    "task_kwargs",
    "trace_limits",
    "train_verifier",
    "verifier_max_length",
    "verifier_measures",
]


@dataclass
class VerifierRecipe:
    """What `train_verifier` reads of a configuration, with the demo's defaults; the field names are `DemoConfig`'s,
    so a `DemoConfig` can be passed to `train_verifier` instead (tests check the defaults agree).

    Args:
        verifier_steps (`int`): most optimizer steps (early stopping on held-out loss).
        verifier_holdout (`float`): share of labeled problems held out for early stopping.
        verifier_learning_rate (`float`): peak learning rate (cosine schedule).
        verifier_likelihood_head (`bool`): keep the backbone's LM head (`PAVRewardConfig.likelihood_head`).
        verifier_contrast_weight (`float`): weight of the same-problem ranking term (0: the paper's loss).
        prover_k (`int`): K of the Best-of-K prover.
        seed (`int`): training seed and the held-out problems' draw.
    """

    verifier_steps: int = 600
    verifier_holdout: float = 0.1
    verifier_learning_rate: float = 3e-5
    verifier_likelihood_head: bool = True
    verifier_contrast_weight: float = 0.0
    prover_k: int = 4
    seed: int = 0


# Arithmetic writes one short operation per step: fixed limits. `max_depth`: most steps of a searched trace;
# `rl_completion_tokens`: GRPO's `max_completion_length`.
ARITHMETIC_TRACE_LIMITS = {"max_new_tokens": 64, "max_step_tokens": 16, "max_depth": 8, "rl_completion_tokens": 48}


def trace_limits(task) -> dict[str, int]:
    """Length limits of a realistic task's traces: `max_new_tokens` and `max_step_tokens` (`HFPolicy`),
    `max_depth` (search) and `rl_completion_tokens` (GRPO).

    Arithmetic: `ARITHMETIC_TRACE_LIMITS`. Rewrite: from the task's own settings, the 99.5th percentile of its
    reference traces (`RewriteTask.trace_lengths`; tokens rounded up to a multiple of 16, within what the rewrite
    policy's position table leaves after the longest prompt). A batch of rollouts runs
    until its longest row stops, and a weak policy that keeps restating runs to the limit, so a limit set for the
    largest task makes every batch of a smaller one pay for it. Every method and arm shares the limits.

    Example:
        >>> from trl_pav.tasks import ArithmeticTask, RewriteTask
        >>> trace_limits(ArithmeticTask())["max_depth"]
        8
        >>> small = trace_limits(RewriteTask(min_terms=2, max_terms=3, max_factor=15))
        >>> small["max_new_tokens"] < trace_limits(RewriteTask())["max_new_tokens"]
        True
    """
    if task.name == "arithmetic":
        return dict(ARITHMETIC_TRACE_LIMITS)
    if task.name != "rewrite":
        raise ValueError(f"trace_limits: no limits for task {task.name!r} (realistic tasks: arithmetic, rewrite)")
    from ..tasks import DEFAULT_POLICY

    lengths = _rewrite_trace_lengths(task)
    room = DEFAULT_POLICY["rewrite"].max_positions - lengths["prompt_tokens"]
    tokens = min(-(-lengths["tokens"] // 16) * 16, room)
    return {
        "max_new_tokens": tokens,
        "max_step_tokens": lengths["step_tokens"] + 8,  # a wrong step may be a little longer than any right one
        "max_depth": lengths["steps"],
        "rl_completion_tokens": tokens,
    }


_TRACE_LENGTHS: dict[str, dict[str, int]] = {}  # by the task's repr: every setting, step format included


def _rewrite_trace_lengths(task) -> dict[str, int]:
    key = repr(task)
    if key not in _TRACE_LENGTHS:
        _TRACE_LENGTHS[key] = task.trace_lengths()
    return _TRACE_LENGTHS[key]


def generation_limits(task) -> dict:
    """`HFPolicy` length limits (`max_new_tokens`, `max_step_tokens`) of a realistic task's traces
    (`trace_limits`)."""
    limits = trace_limits(task)
    return {"max_new_tokens": limits["max_new_tokens"], "max_step_tokens": limits["max_step_tokens"]}


def task_kwargs(task) -> dict:
    """The settings of a task (numbers, strings, flags and sequences of them: an operator set, a planted string),
    saved with a run's pools so that `saved_task` rebuilds it; its step format and grader are the task's defaults.

    Example:
        >>> from trl_pav.tasks import ArithmeticTask
        >>> task_kwargs(ArithmeticTask(operators="+*", max_operand=9))["operators"]
        '+*'
    """
    import dataclasses

    from ..generation.base import describe

    if not dataclasses.is_dataclass(task):
        return {}
    # `describe`'s settings less the class name and the objects (step format, grader) it describes as dicts.
    return {k: v for k, v in describe(task).items() if k != "class" and not isinstance(v, dict)}


def saved_task(folder: Path):
    """The realistic task a demo run used, from the `pools.json` it saved in its `arithmetic` folder (arithmetic for
    a run from before the rewriting task, whose file names none)."""
    import json

    from ..tasks import get_task

    path = Path(folder) / "pools.json"
    spec = json.loads(path.read_text()) if path.exists() else {}
    return get_task(spec.get("task", "arithmetic"), **spec.get("task_kwargs", {}))


def saved_pools(folder: Path, task=None):
    """The pools a demo run used, from the `pools.json` it saved in its `arithmetic` folder (`task`: by default the
    run's own, `saved_task`).

    Raises:
        FileNotFoundError: if the folder has none (a run from before disjoint problem pools).
    """
    import json

    from ..evaluation import ProblemPools, expression_key

    path = Path(folder) / "pools.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved problem pools (a demo run from before them); re-run `make demo`")
    return ProblemPools.from_spec(task or saved_task(folder), json.loads(path.read_text()), key=expression_key)


def verifier_max_length(policy_dir: Path) -> int:
    """Tokens a verifier reads per trace: its backbone's whole position table, so that no labeled step of a trace the
    policy can write is cut (a fixed 128 dropped the final steps of long rewrite traces, and every long trace from
    the ORM's data)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(policy_dir).max_position_embeddings)


def train_verifier(
    policy_dir: Path,
    labels,
    folder: Path,
    kind: str,
    cfg,
    step_separator: str | None = None,
    class_balanced: bool = True,
) -> None:
    """Train on most labeled problems; stop early on the held-out problems' loss and keep the best checkpoint.
    `cfg` is a `VerifierRecipe` or anything with its fields (a `DemoConfig`); `step_separator` is the traces' (None:
    the backbone's stored format, else a newline); `class_balanced` as in `PAVRewardConfig`."""
    import json

    import torch
    from transformers import EarlyStoppingCallback, PrinterCallback

    from ..trainers import PAVRewardConfig, PAVRewardTrainer

    problems = sorted(set(labels["problem_index"]))
    rng = np.random.default_rng(cfg.seed)
    held = set(rng.choice(problems, size=max(1, int(len(problems) * cfg.verifier_holdout)), replace=False).tolist())
    train = labels.filter(lambda r: r["problem_index"] not in held)
    evals = labels.filter(lambda r: r["problem_index"] in held)
    every = max(1, cfg.verifier_steps // 8)
    args = PAVRewardConfig(
        output_dir=str(folder / "trainer"),
        kind=kind,
        prover_k=cfg.prover_k,
        max_steps=cfg.verifier_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=cfg.verifier_learning_rate,
        contrast_weight=cfg.verifier_contrast_weight,
        likelihood_head=cfg.verifier_likelihood_head,
        step_separator=step_separator,
        class_balanced=class_balanced,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.verifier_steps // 10),
        max_length=verifier_max_length(policy_dir),
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=cfg.seed,
    )
    trainer = PAVRewardTrainer(
        str(policy_dir), args, train, eval_dataset=evals, callbacks=[EarlyStoppingCallback(early_stopping_patience=2)]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(folder))
    history = [e for e in trainer.state.log_history if "eval_loss" in e]
    best = min(history, key=lambda e: e["eval_loss"]) if history else {}
    summary = {
        "steps_run": trainer.state.global_step,
        "best_step": best.get("step"),
        "best_eval": {k: v for k, v in best.items() if k.startswith("eval_")},
        "eval_curve": [{"step": e["step"], "loss": e["eval_loss"]} for e in history],
        "train_rows": len(train),
        "held_out_rows": len(evals),
    }
    (folder / "training.summary.json").write_text(json.dumps(summary))
    shutil.rmtree(folder / "trainer", ignore_errors=True)


def evaluation_sets(task, policy, problems, candidates: int, seed: int, candidate_seed: int, step_problems) -> dict:
    """What `verifier_measures` scores, sampled once for every verifier.

    Returns:
        `{"problems", "rows"` (problem index, steps) of each finished, answered best-of-N candidate (`candidates` per
        problem), `"correct"`, `"pid"` (their problem index), `"traces"` (two base-policy traces of each of
        `step_problems`), `"siblings"` (`sibling_steps` of `problems`)`}`.
    """
    from ..evaluation import sample_traces
    from ..search import sample_candidates, selection_pools

    sampled = sample_candidates(policy, [p.prompt for p in problems], candidates, seed=candidate_seed)
    rows = [(i, g.steps) for i, (pool, answered) in enumerate(selection_pools(sampled)) if answered for g in pool]
    step_traces = sample_traces(policy, [p.prompt for p in step_problems], 2, seed=seed + 5)
    return {
        "problems": problems,
        "rows": rows,
        "correct": np.array([task.grader.grade(task.step_format.join(s), problems[i].gold) for i, s in rows]),
        "pid": np.array([i for i, _ in rows]),
        "traces": [(p, steps) for p, ts in zip(step_problems, step_traces) for steps in ts if steps],
        "siblings": sibling_steps(task, policy, problems, seed),
    }


def verifier_measures(verifier, task, sets: dict) -> dict:
    """One verifier on `evaluation_sets`: pooled and within-problem AUC of its final values (and within-problem AUC
    of its least step value), its best-of-N pick's accuracy against a random pick's, calibration, step AUC against
    the checker and within-parent AUC."""
    from ..metrics import auc, expected_calibration_error, within_problem_auc

    problems, rows, correct, pid, siblings = (sets[k] for k in ("problems", "rows", "correct", "pid", "siblings"))
    values = verifier.score([problems[i].prompt for i, _ in rows], [s for _, s in rows])
    finals = np.array([v[-1] for v in values])
    # The least step value, a PRM's usual aggregate, beside the final one: a PAV is trained on few positions past
    # a failing trace's first pit (the search's probes, and the final step's grade), most of its labels lie before.
    least = np.array([min(v[1:]) for v in values])
    children = np.array([v[-1] for v in verifier.score(siblings["prompts"], siblings["steps"])])
    return {
        "outcome_auc": auc(finals, correct),
        "within_problem_auc": within_problem_auc(finals, correct, pid),
        "within_problem_auc_least_step": within_problem_auc(least, correct, pid),
        "best_of_n_accuracy": pick_accuracy(finals, correct, pid, len(problems)),
        "random_pick_accuracy": float(
            np.mean([correct[pid == i].mean() if (pid == i).any() else 0.0 for i in range(len(problems))])
        ),
        "ece_final_value": expected_calibration_error(finals, correct),
        **step_auc_against_checker(verifier, task, sets["traces"]),
        "within_parent_auc": within_problem_auc(children, siblings["correct"], siblings["parent"]),
    }


def pick_accuracy(scores: np.ndarray, correct: np.ndarray, pid: np.ndarray, num_problems: int) -> float:
    """Accuracy of picking each problem's highest-scoring candidate (a problem without candidates counts wrong)."""
    picks = [max(np.flatnonzero(pid == i), key=lambda j: scores[j]) for i in np.unique(pid)]
    return float(correct[picks].sum() / num_problems)


def sibling_steps(task, policy, problems, seed: int, samples: int = 4, children: int = 6) -> dict:
    """Next steps sampled from correct prefixes: what one beam-search expansion chooses among.

    Correct prefixes (every depth, before the answer) are taken from `samples` base-policy traces per problem; each
    gets `children` sampled next steps, judged by the exact checker.

    Returns:
        `{"prompts", "steps"` (prefix + child)`, "correct"` (the child step), `"parent"` (an id per prefix)`}`.
    """
    from ..evaluation import sample_traces
    from ..generation import GenerationRequest

    sampled = sample_traces(policy, [p.prompt for p in problems], samples, seed=seed + 31)
    parents: dict[tuple, int] = {}
    for i, (p, ts) in enumerate(zip(problems, sampled)):
        for steps in ts:
            ok = task.step_labels(p.expression, steps)
            for h in range(len(steps)):
                if all(ok[:h]) and not (h and steps[h - 1].strip().startswith("####")):
                    parents.setdefault((i, tuple(steps[:h])), len(parents))
    requests = [
        GenerationRequest(problems[i].prompt, prefix, seed=(seed + 41) * 1_000_003 + j * children + k)
        for (i, prefix), j in parents.items()
        for k in range(children)
    ]
    owners = [(i, j) for (i, _), j in parents.items() for _ in range(children)]
    out = {"prompts": [], "steps": [], "correct": [], "parent": []}
    for request, generation, (i, j) in zip(requests, policy.generate(requests, stop_at_step=True), owners):
        if not generation.steps:
            continue
        steps = [*request.steps, generation.steps[0]]
        out["prompts"].append(request.prompt)
        out["steps"].append(steps)
        out["correct"].append(task.step_labels(problems[i].expression, steps)[-1])
        out["parent"].append(j)
    out["correct"], out["parent"] = np.array(out["correct"]), np.array(out["parent"])
    return out


def step_auc_against_checker(verifier, task, traces: list) -> dict:
    """Step values against the exact checker on `traces` (`(problem, steps)` pairs of the base policy)."""
    from ..metrics import auc, first_error_accuracy

    values = verifier.score([p.prompt for p, _ in traces], [steps for _, steps in traces])
    scores, truth, firsts = [], [], []
    for (p, steps), v in zip(traces, values):
        scores += v[1:]
        truth += task.step_labels(p.expression, steps)
        firsts.append(task.first_error(p.expression, steps))
    return {
        "step_auc": auc(np.array(scores), np.array(truth)),
        "first_error_accuracy": first_error_accuracy([v[1:] for v in values], firsts),
        "traces": len(traces),
    }
