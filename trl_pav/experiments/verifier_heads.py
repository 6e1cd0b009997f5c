"""Verifier heads on the demo's arithmetic task: the one-label head against the likelihood head, over learning rates,
judged on validation problems that are neither labeled nor searched (the table in `docs/verifier_training.md`).

It reuses the demo's cached base policy and Monte-Carlo labels, so run `make demo` once first:

    python -m trl_pav.experiments.verifier_heads --demo outputs/demo --out /tmp/verifier_heads

Each setting trains a PAV (or ORM) with the demo's recipe (early stopping on held-out labeled problems) and prints
one JSON line: within-problem AUC on best-of-N candidates, within-parent AUC on sampled next steps, step AUC
against the exact checker, pooled AUC and the best-of-N pick's accuracy. About 1-2 minutes per setting on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

__all__ = ["DEFAULT_SETTINGS", "run_verifier_heads"]

# (kind, likelihood head, learning rate)
DEFAULT_SETTINGS: tuple[tuple[str, bool, float], ...] = (
    ("pav", False, 1e-3),
    ("pav", True, 1e-3),
    ("pav", True, 1e-4),
    ("pav", True, 3e-5),
    ("pav", True, 1e-5),
    ("orm", False, 1e-3),
    ("orm", True, 3e-5),
)


def run_verifier_heads(
    demo_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: tuple[tuple[str, bool, float], ...] = DEFAULT_SETTINGS,
    problems: int = 96,
    candidates: int = 16,
    seed: int = 0,
    log=None,
    **config_overrides,
) -> list[dict]:
    """Train one verifier per setting on the demo's labels and measure it on validation problems.

    Args:
        demo_dir: a finished `make demo` output folder (its `arithmetic/policy` and `arithmetic/labels`).
        out_dir: where the trained verifiers go (one folder per setting; an existing one is reused).
        settings: `(kind, likelihood_head, learning_rate)` triples.
        problems: validation problems, the first of the demo run's `verifier_validation` pool (at most its size, 256
            by default; disjoint from its SFT, labeled, search and other problems).
        candidates: best-of-N candidates sampled per validation problem.
        seed: seed of the demo configuration (training) and of the sampling.
        log: called with each result as it is ready.
        config_overrides: other `VerifierRecipe` fields for training (named as in `DemoConfig`, e.g.
            `verifier_steps`).

    Returns:
        One dict per setting with its measurements.

    Raises:
        FileNotFoundError: if the demo folder has no finished policy and labels, or no saved problem pools.
        ValueError: if `problems` is more than the validation pool holds, or the demo's labels are not its label
            pool.
    """
    from transformers import AutoModelForCausalLM

    from ..generation import HFPolicy
    from ..labeling import load_labels
    from ..modeling import PAVVerifier
    from ..tokenization import load_tokenizer
    from .arithmetic_verifiers import (
        VerifierRecipe,
        evaluation_sets,
        generation_limits,
        saved_pools,
        saved_task,
        train_verifier,
        verifier_max_length,
        verifier_measures,
    )

    demo, out = Path(demo_dir) / "arithmetic", Path(out_dir)
    if not (demo / "policy" / ".done").exists() or not (demo / "labels").exists():
        raise FileNotFoundError(f"{demo}: no finished demo base policy and labels; run `make demo` first")
    task = saved_task(demo)  # the task that run used
    model = AutoModelForCausalLM.from_pretrained(demo / "policy").eval()
    tok = load_tokenizer(demo / "policy")
    policy = HFPolicy(model, tok, task.step_format, batch_size=256, **generation_limits(task))
    labels, _ = load_labels(demo / "labels")
    pools = saved_pools(demo, task)  # the demo run's own pools, whatever its budgets
    if problems > len(pools["verifier_validation"]):
        raise ValueError(f"problems={problems}, but the validation pool holds {len(pools['verifier_validation'])}")
    # Disjointness holds within one run's pools: its labels must come from that run's label pool.
    if not set(labels["expression"]) <= pools.keys_of("label"):
        raise ValueError(f"{demo / 'labels'}: labeled problems outside the run's label pool; re-run `make demo`")
    probs = pools["verifier_validation"][:problems]
    sets = evaluation_sets(
        task, policy, probs, candidates, seed, candidate_seed=seed + 77, step_problems=pools["step_eval"]
    )
    # The token budget is in the folder names: folders trained before it followed the backbone are not reused.
    budget = verifier_max_length(demo / "policy")
    results = []
    for kind, likelihood_head, lr in settings:
        cfg = replace(
            VerifierRecipe(seed=seed, **config_overrides),
            verifier_learning_rate=lr,
            verifier_likelihood_head=likelihood_head,
        )
        folder = out / f"{kind}-{'likelihood' if likelihood_head else 'scalar'}-{lr:g}-len{budget}"
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            train_verifier(demo / "policy", labels, folder, kind, cfg)
        measures = verifier_measures(PAVVerifier.from_pretrained(folder), task, sets)
        result = {
            "kind": kind,
            "likelihood_head": likelihood_head,
            "learning_rate": lr,
            "within_problem_auc": round(measures["within_problem_auc"], 3),
            "within_parent_auc": round(measures["within_parent_auc"], 3),
            "step_auc": round(measures["step_auc"], 3),
            "pooled_auc": round(measures["outcome_auc"], 3),
            "best_of_n_accuracy": round(measures["best_of_n_accuracy"], 3),
        }
        results.append(result)
        if log is not None:
            log(result)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="outputs/demo", help="a finished `make demo` output folder")
    parser.add_argument("--out", default="outputs/verifier_heads", help="where the trained verifiers go")
    parser.add_argument("--problems", type=int, default=96)
    parser.add_argument("--candidates", type=int, default=16)
    args = parser.parse_args(argv)
    run_verifier_heads(
        args.demo, args.out, problems=args.problems, candidates=args.candidates, log=lambda r: print(json.dumps(r))
    )


if __name__ == "__main__":
    main()
