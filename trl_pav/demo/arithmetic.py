"""Realistic experiment, part 1: base policy, Monte-Carlo labels, PAV and ORM, and their quality against the exact
checker. Everything the search and RL experiments consume comes from `run`.

The task is `DemoConfig.realistic_task`: the rewriting task (the paper's regime, the default) or the forced-order
arithmetic task (the documented negative result). Outputs live under `arithmetic/` for both: the rewriting task is
arithmetic too, and earlier runs' caches and the experiments that read them keep their paths."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..experiments.arithmetic_verifiers import (
    evaluation_sets,
    generation_limits,
    pick_accuracy,
    saved_pools,
    sibling_steps,
    step_auc_against_checker,
    task_kwargs,
    trace_limits,
    train_verifier,
    verifier_max_length,
    verifier_measures,
)
from . import common
from .common import cached, cached_json

__all__ = [
    "VALIDATION_PROBLEMS",
    "checker_scorer",
    "demo_pools",
    "demo_task",
    "evaluation_sets",
    "fit_checker",
    "generation_limits",
    "run",
    "saved_pools",
    "sibling_steps",
    "step_auc_against_checker",
    "task_kwargs",
    "token_entropy",
    "train_verifier",
    "verifier_measures",
]

POLICY_EVAL_PROBLEMS = 400
PREFLIGHT_PROBLEMS = 64
STEP_EVAL_PROBLEMS = 200
VALIDATION_PROBLEMS = 256  # reserved for choosing verifier settings (trl_pav.experiments.verifier_heads)


REALISTIC_TASKS = ("rewrite", "arithmetic")


def demo_task(cfg):
    """The realistic experiment's task, `cfg.realistic_task` with its defaults."""
    from ..tasks import ArithmeticTask, RewriteTask

    if cfg.realistic_task not in REALISTIC_TASKS:
        raise ValueError(f"DemoConfig.realistic_task must be one of {REALISTIC_TASKS}, got {cfg.realistic_task!r}")
    if cfg.realistic_task == "rewrite":
        # Two or three terms, first factors up to 15: a 1M policy reaches ~30% in 600 SFT steps on 2 cores; the
        # task's defaults (3-4 terms up to 19) left it under 1% after 400 (docs/tasks.md).
        return RewriteTask(min_terms=2, max_terms=3, max_factor=15)
    return ArithmeticTask()


def demo_pools(cfg, task=None):
    """The arithmetic demo's problems, one disjoint pool per stage (`trl_pav.evaluation.ProblemPools`).

    Small evaluation pools are dealt first so they keep the task's distribution; the SFT stream comes last (with
    its repetitions) and skips every problem of the others. Pools of fixed size lead, so a changed budget moves as
    few pools as it can.
    """
    from ..evaluation import ProblemPools

    policy_cfg = _policy_config(cfg)
    sizes = {
        "policy_eval": POLICY_EVAL_PROBLEMS,
        "step_eval": STEP_EVAL_PROBLEMS,
        "verifier_validation": VALIDATION_PROBLEMS,
        "preflight": PREFLIGHT_PROBLEMS,
        "search": cfg.search_problems,
        "label": cfg.label_problems,
        "rl_eval": cfg.rl_eval_problems,
        "rl_train": cfg.rl_train_problems,
        "sft": policy_cfg.batch_size * policy_cfg.max_steps,  # one problem per SFT sequence
    }
    return ProblemPools(task or demo_task(cfg), sizes, seed=cfg.seed, key=_expression, repeats={"sft"})


def _expression(problem) -> str:
    return problem.expression


def policy_snapshot_step(cfg) -> int:
    """The SFT step whose checkpoint is the base policy (the final step when the policy is the verifiers' backbone)."""
    if not 0.0 < cfg.policy_checkpoint_fraction <= 1.0:
        raise ValueError(f"policy_checkpoint_fraction must be in (0, 1], got {cfg.policy_checkpoint_fraction}")
    return max(1, round(cfg.policy_checkpoint_fraction * cfg.policy_steps))


def _regime_config(cfg, task):
    from ..regime import RegimeConfig

    return RegimeConfig(
        budgets=list(cfg.search_budgets),
        alpha=cfg.search_alpha,
        prover_k=cfg.prover_k,
        max_depth=trace_limits(task)["max_depth"],
        samples=max(cfg.search_budgets),
        group_size=8,  # the demo's GRPO group (common.rl_args)
        bootstrap_samples=cfg.bootstrap_samples,
        seed=cfg.seed,
    )


def _preflight(cfg, task, policy, problems, checker) -> dict:
    """The regime pre-flight on the base policy with exact checker-derived values (`trl_pav.regime`)."""
    from ..regime import regime_preflight
    from ..search import ReusingPolicy

    # PAV and Q-only beams ask for the same seeded samples: each is generated once.
    return regime_preflight(
        ReusingPolicy(policy),
        checker,
        [p.prompt for p in problems],
        [p.gold for p in problems],
        task.grader,
        _regime_config(cfg, task),
    )


def _policy_config(cfg):
    from dataclasses import replace

    from ..tasks import DEFAULT_POLICY, TinyPolicyConfig

    if cfg.realistic_task == "rewrite":  # longer traces; random batches learned faster than length-grouped ones
        return replace(DEFAULT_POLICY["rewrite"], max_steps=cfg.policy_steps, seed=cfg.seed, group_by_length=False)
    return TinyPolicyConfig(max_steps=cfg.policy_steps, seed=cfg.seed)


def _policy_key(policy_cfg, pools) -> dict:
    return {**asdict(policy_cfg), "pools": pools.spec("sft")}


def run(cfg, out: Path, progress, results: dict) -> dict:
    import json

    from transformers import AutoModelForCausalLM

    from ..evaluation import sampled_accuracy
    from ..generation import HFPolicy
    from ..labeling import MCLabelConfig, MCLabeler, load_labels
    from ..regime import regime_verdict
    from ..tasks import train_base_policy
    from ..tasks.arithmetic import problems_rows
    from ..tokenization import load_tokenizer

    task = demo_task(cfg)
    pools = demo_pools(cfg, task)
    (out / "arithmetic").mkdir(parents=True, exist_ok=True)
    # For later experiments on this run: its pools and its task.
    spec = {**pools.spec(), "task": task.name, "task_kwargs": task_kwargs(task)}
    (out / "arithmetic" / "pools.json").write_text(json.dumps(spec))
    policy_cfg = _policy_config(cfg)
    early = policy_snapshot_step(cfg)
    progress(
        f"{task.name} SFT for {cfg.policy_steps} steps (cached after the first run); base policy = step {early}, "
        f"verifier backbone = step {cfg.policy_steps}"
    )
    sft_dir = cached(
        out / "arithmetic" / "policy",
        {**_policy_key(policy_cfg, pools), "policy_snapshot": early},
        lambda d: train_base_policy(
            task,
            d,
            policy_cfg,
            problems=pools["sft"],
            snapshots={early: d / "early"} if early < cfg.policy_steps else None,
        ),
    )
    seconds_file = sft_dir / ".seconds"  # the training's seconds, also when read from the cache
    policy_seconds = float(seconds_file.read_text()) if seconds_file.exists() else 0.0
    # As in the paper (a 9B verifier for a 2B policy), the verifiers start from a stronger model than the policy.
    policy_dir = sft_dir / "early" if early < cfg.policy_steps else sft_dir
    (policy_dir / ".done").write_text((sft_dir / ".done").read_text())  # the stamp later stages key on
    model, tok = AutoModelForCausalLM.from_pretrained(policy_dir), load_tokenizer(policy_dir)
    policy = HFPolicy(model, tok, task.step_format, name=f"{task.name}-base", batch_size=256, **generation_limits(task))
    eval_problems = pools["policy_eval"]
    base_acc = sampled_accuracy(
        policy, [p.prompt for p in eval_problems], [p.gold for p in eval_problems], task.grader, seed=cfg.seed
    )
    step_accuracy = _step_accuracy(task, policy, eval_problems, cfg.seed)
    entropy = token_entropy(policy, eval_problems, cfg.seed)
    checker_spec = cached_json(
        out / "arithmetic" / "checker.json",
        {"policy": (policy_dir / ".done").read_text(), "pools": pools.spec("policy_eval"), "seed": cfg.seed},
        lambda: fit_checker(task, policy, eval_problems, step_accuracy, cfg.seed),
    )
    checker = checker_scorer(task, checker_spec)
    progress(
        f"base policy sampled accuracy {base_acc:.3f}; accuracy of a step on the correct path {step_accuracy:.3f}; "
        f"token entropy of its samples {entropy:.3f} nats; "
        f"exact checker from {_describe(checker_spec)}"
    )
    progress("regime pre-flight: Pass@N, rank disagreement and PAV vs Q-only beam with exact values, RL groups")
    regime = cached_json(
        out / "arithmetic" / "regime.json",
        {
            "policy": (policy_dir / ".done").read_text(),
            "cfg": asdict(_regime_config(cfg, task)),
            "pools": pools.spec("preflight"),
            "checker": checker_spec,
            "v": 3,  # v3: the stall incentive and the per-trace advantage sums
        },
        lambda: _preflight(cfg, task, policy, pools["preflight"], checker),
    )
    # The verdict is a pure function of the numbers: recomputed, so a cached pre-flight gets the current wording.
    regime["verdict"] = regime_verdict(regime)
    results["regime"] = regime
    progress(
        "pre-flight: pass gap {:.3f}, rank disagreement {:.1%}, exact PAV - Q beam {:+.3f}, all-equal GRPO groups "
        "{:.1%}".format(
            regime["pass_gap"],
            regime["rank_disagreement"],
            regime["exact_pav_vs_q_gain"],
            regime["rl_all_equal_groups"],
        )
    )

    progress(
        f"MC labeling {cfg.label_problems} problems (first pit confirmed with {cfg.pit_confirm_rollouts} more "
        f"rollouts, Bo{cfg.prover_k} prover, n_mc={cfg.n_mc})"
    )
    label_cfg = MCLabelConfig(
        n_cov=cfg.n_cov,
        n_mc=cfg.n_mc,
        strategy="first_pit",
        prover_k=cfg.prover_k,
        pit_confirm_rollouts=cfg.pit_confirm_rollouts,
        seed=cfg.seed,
        show_progress=False,
        shard_size=32,
        overwrite=True,
    )
    labels_dir = out / "arithmetic" / "labels"
    # Finished shards of the same configuration are reused; a changed configuration relabels from scratch.
    t0 = time.time()
    MCLabeler(policy, task.grader, label_cfg).label(problems_rows(pools["label"]), labels_dir)
    labels, label_meta = load_labels(labels_dir)
    labeling_wall = time.time() - t0
    # Shards record their own seconds, so reused shards count in what a fresh run would take.
    common.LEDGER.resumed("arithmetic/labels", label_meta.get("label_seconds", 0.0), labeling_wall)
    label_quality = _label_quality(task, labels)
    progress(
        f"labels: {label_meta['num_traces']} traces, {label_meta['rollouts']} rollouts; first pit = true first "
        f"error in {label_quality['pit_precision']:.1%} of failing traces"
    )

    verifiers = {}
    for kind in ("pav", "orm"):
        progress(f"training the {kind.upper()} (<= {cfg.verifier_steps} steps, early stopping on held-out loss)")
        key = {
            "kind": kind,
            "cfg": _verifier_key(cfg, verifier_max_length(sft_dir)),
            "labels": label_meta.get("fingerprint"),
            "policy": _policy_key(policy_cfg, pools),
        }
        verifiers[kind] = cached(
            out / "arithmetic" / kind, key, lambda d, kind=kind: train_verifier(sft_dir, labels, d, kind, cfg)
        )
    quality = cached_json(
        out / "arithmetic" / "quality.json",
        {"verifiers": [_done(verifiers[k]) for k in verifiers], "cfg": _quality_key(cfg, pools)},
        lambda: verifier_quality(verifiers, task, policy, cfg, labels=labels, pools=pools, backbone_dir=sft_dir),
    )
    progress(
        "verifiers, within-problem AUC on best-of-N candidates: PAV {:.3f}, ORM {:.3f}; PAV step AUC vs the exact "
        "checker {:.3f}".format(
            quality["pav"]["within_problem_auc"], quality["orm"]["within_problem_auc"], quality["pav"]["step_auc"]
        )
    )
    results["arithmetic"] = {
        "task": task.name,
        "checker": checker_spec,
        "base_policy_sampled_accuracy": base_acc,
        "base_policy_step_accuracy": step_accuracy,
        "base_policy_token_entropy": entropy,
        "base_policy_train_seconds": round(policy_seconds, 1),
        "labeling": {
            k: label_meta.get(k)
            for k in ("num_traces", "num_labels", "rollouts", "generated_tokens", "wall_seconds", "prefix_cache_hits")
        },
        "label_quality": label_quality,
        "verifier_quality": quality,
        "problem_pools": pools.spec(),  # disjoint problem pools: names, sizes, seed (docs/deviations.md)
    }
    return {
        "task": task,
        "policy": policy,
        "policy_dir": policy_dir,
        "verifiers": verifiers,
        "base_acc": base_acc,
        "step_accuracy": step_accuracy,
        "checker": checker,
        "checker_spec": checker_spec,
        "pools": pools,
    }


def fit_checker(task, policy, problems, step_accuracy: float, seed: int, traces_per_problem: int = 4) -> dict:
    """What the exact checker of the base policy is built from (JSON, the cache key of every stage that uses it).

    Arithmetic: the policy's measured accuracy of a step on the correct path. Rewriting: per-kind error rates and the
    restate rate measured on `traces_per_problem` sampled traces of each of `problems` (`RewritePolicy.fit`)."""
    if task.name != "rewrite":
        return {"task": task.name, "step_accuracy": step_accuracy}
    from ..evaluation import sample_traces
    from ..tasks import RewritePolicy

    traces = sample_traces(policy, [p.prompt for p in problems], traces_per_problem, seed=seed + 13)
    fit = RewritePolicy.fit(task, [(p.expression, s) for p, ts in zip(problems, traces) for s in ts])
    return {"task": task.name, "error_rates": fit.error_rates, "restate_rate": fit.restate_rate}


def _describe(spec: dict) -> str:
    if spec.get("task") != "rewrite":
        return f"step accuracy {spec['step_accuracy']:.3f}"
    rates = ", ".join(f"{k} {v:.2f}" for k, v in spec["error_rates"].items())
    return f"measured error rates {rates}; restate rate {spec['restate_rate']:.2f}"


def checker_scorer(task, spec: dict | float):
    """Exact checker-derived values for the base policy (a `StepScorer`), from `fit_checker`'s spec.

    Arithmetic: 0 once a step is wrong (the policy does not recover from a wrong intermediate value), `s^r` on the
    correct path with r operations left and `s` the policy's measured step accuracy, 1 for a correct final answer:
    `NoisyArithmeticPolicy`'s exact value with error rate `1 - s` (a bare float `spec` is `s`). Rewriting: the exact
    value of `RewritePolicy` with the measured per-kind error rates, up to the order the policy chooses reductions in.
    """
    from ..tasks import NoisyArithmeticPolicy, RewritePolicy

    if isinstance(spec, dict) and spec.get("task") == "rewrite":
        return RewritePolicy(task, spec["error_rates"], restate_rate=spec["restate_rate"], name="checker")
    step_accuracy = spec["step_accuracy"] if isinstance(spec, dict) else spec
    return NoisyArithmeticPolicy(task, error_rate=min(1.0, max(0.0, 1.0 - step_accuracy)), name="checker")


def _done(folder: Path) -> str:
    marker = folder / ".done"
    return marker.read_text() if marker.exists() else ""


def _verifier_key(cfg, max_length: int) -> dict:
    key = {"steps": cfg.verifier_steps, "holdout": cfg.verifier_holdout, "k": cfg.prover_k, "seed": cfg.seed}
    if cfg.verifier_learning_rate != 1e-3:  # keys of the earlier default stay valid
        key["lr"] = cfg.verifier_learning_rate
    if cfg.verifier_contrast_weight:
        key["contrast"] = cfg.verifier_contrast_weight
    if cfg.verifier_likelihood_head:
        key["likelihood_head"] = True
    if max_length != 128:  # arithmetic's keys (128 positions) stay valid
        key["max_length"] = max_length
    return key


def _quality_key(cfg, pools) -> dict:
    # "v" changes with what verifier_quality measures, so a cached result is recomputed then.
    key = {"problems": cfg.search_problems, "n": cfg.quality_candidates, "seed": cfg.seed, "v": 7}
    return {**key, "pools": pools.spec("search", "step_eval")}


def _step_accuracy(task, policy, problems, seed: int) -> float:
    """Share of operation steps taken on the correct path that are correct (the policy's per-step reliability)."""
    from ..evaluation import sample_traces

    traces = sample_traces(policy, [p.prompt for p in problems], 1, seed=seed + 11)
    right = total = 0
    for p, ts in zip(problems, traces):
        for steps in ts:
            # An arithmetic answer line restates the last result; a rewrite answer is the last reduction.
            ops = steps if task.name == "rewrite" else [s for s in steps if not s.strip().startswith("####")]
            labels = task.step_labels(p.expression, ops)
            first_wrong = next((i for i, ok in enumerate(labels) if not ok), len(labels))
            right += first_wrong
            total += min(len(labels), first_wrong + 1)
    return right / max(total, 1)


def _label_quality(task, labels) -> dict:
    """Labels against the exact checker: pit precision, and how often a labeled correct/wrong step is labeled so."""
    failing = [
        (r["first_pit"], task.first_error(r["expression"], r["completions"]))
        for r in labels
        if r["seed_outcome"] == 0.0 and r["first_pit"] >= 0
    ]
    failing = [(p, fe) for p, fe in failing if fe is not None]
    correct, wrong, masked = [], [], 0
    for r in labels:
        truth = task.step_labels(r["expression"], r["completions"])
        for lab, ok in zip(r["labels"], truth):
            if lab is None:
                masked += 1
            else:
                (correct if ok else wrong).append(lab)
    return {
        "pit_precision": sum(p == fe for p, fe in failing) / max(1, len(failing)),
        "pits_before_first_error": sum(p < fe for p, fe in failing),
        "pits_after_first_error": sum(p > fe for p, fe in failing),
        "failing_traces_with_pit": len(failing),
        "masked_steps": masked,
        "mean_label_correct_steps": float(np.mean(correct)) if correct else None,
        "mean_label_wrong_steps": float(np.mean(wrong)) if wrong else None,
        "wrong_steps_labeled_above_zero": float(np.mean([v > 0 for v in wrong])) if wrong else None,
    }


def _likelihood_measures(model_policy, task, probs, sets: dict, cand_features: dict | None = None) -> dict:
    """A causal LM's least-likely-token log-probability as a verifier with no training, on the quality sets."""
    from ..generation.base import continue_trace
    from ..metrics import auc, within_problem_auc

    rows, correct, pid, siblings = sets["rows"], sets["correct"], sets["pid"], sets["siblings"]
    if cand_features is None:
        cand_features = _backbone_features(model_policy, [probs[i].prompt for i, _ in rows], [s for _, s in rows])
    likelihood = cand_features["token_logprob"][:, 0]
    child_likelihood = _backbone_features(
        model_policy,
        [continue_trace(p, s[:-1], task.step_format) for p, s in zip(siblings["prompts"], siblings["steps"])],
        [s[-1:] for s in siblings["steps"]],
    )["token_logprob"][:, 0]
    return {
        "outcome_auc": auc(likelihood, correct),
        "within_problem_auc": within_problem_auc(likelihood, correct, pid),
        "best_of_n_accuracy": pick_accuracy(likelihood, correct, pid, len(probs)),
        "within_parent_auc": within_problem_auc(child_likelihood, siblings["correct"], siblings["parent"]),
    }


def verifier_quality(
    verifiers: dict[str, Path], task, policy, cfg, labels=None, pools=None, backbone_dir: Path | None = None
) -> dict:
    """Each verifier against the exact checker on held-out problems (the `search` and `step_eval` pools of `pools`,
    by default `demo_pools(cfg, task)`).

    - `step_auc`: its step values against the checker's step correctness on base-policy traces (meaningful for a
      PAV; an ORM is trained only at the final position).
    - On `quality_candidates` best-of-N candidates of each search problem (finished traces with an answer, the ones
      search may pick): `outcome_auc` (pooled over problems), `within_problem_auc` (pairs of a correct and a wrong
      candidate of the same problem: what selection needs), the best-of-N accuracy of its pick, the accuracy of a
      random pick, and calibration (`ece`) of its final value against correctness.
    - `within_parent_auc`: on next steps sampled from one correct prefix (what a beam-search expansion chooses
      among), pairs of a correct and a wrong child of the same prefix.
    - `policy_likelihood`: the base policy's least-likely-token log-probability as a score (no training); for
      `within_parent_auc`, of the child step's tokens. `backbone_likelihood`: the same for the verifiers' untrained
      backbone (`backbone_dir`), when it is another model than the policy.
    - `backbone_probes` (with `labels`): where the frozen base policy holds the answer's correctness. Logistic
      probes trained on the labeled traces' outcomes, read on the same candidates: the hidden state of each layer
      at the final token (what a verifier head reads) against the completion's token log-probabilities.
    """
    import json

    from ..modeling import PAVVerifier

    pools = pools if pools is not None else demo_pools(cfg, task)
    probs = pools["search"]
    sets = evaluation_sets(
        task,
        policy,
        probs,
        cfg.quality_candidates,
        cfg.seed,
        candidate_seed=cfg.seed + 21,
        step_problems=pools["step_eval"],
    )
    rows, correct, pid, siblings = sets["rows"], sets["correct"], sets["pid"], sets["siblings"]
    out = {}
    for kind, path in verifiers.items():
        out[kind] = verifier_measures(PAVVerifier.from_pretrained(path), task, sets)
        training = Path(path) / "training.summary.json"
        if training.exists():
            out[kind]["training"] = json.loads(training.read_text())
    # The base policy's own likelihood of each candidate, a verifier with no training; and the likelihood of the
    # untrained backbone both verifiers start from, when that is a stronger model than the policy.
    cand_features = _backbone_features(policy, [probs[i].prompt for i, _ in rows], [s for _, s in rows])
    out["policy_likelihood"] = _likelihood_measures(policy, task, probs, sets, cand_features)
    if backbone_dir is not None and Path(backbone_dir).resolve() != Path(policy.model.name_or_path).resolve():
        from transformers import AutoModelForCausalLM

        from ..generation import HFPolicy
        from ..tokenization import load_tokenizer

        backbone = HFPolicy(
            AutoModelForCausalLM.from_pretrained(backbone_dir), load_tokenizer(backbone_dir), task.step_format
        )
        out["backbone_likelihood"] = _likelihood_measures(backbone, task, probs, sets)
    out["siblings"] = {"parents": len(np.unique(siblings["parent"])), "children": len(siblings["steps"])}
    if labels is not None:
        out["backbone_probes"] = _backbone_probes(policy, labels, cand_features, correct, pid)
    # Every correct trace of a problem is (nearly) the same string, wrong ones differ: an argmax over candidates
    # then draws from many distinct wrong traces against about one correct one.
    distinct_correct, distinct_wrong = [], []
    for i in np.unique(pid):
        picks_i = [rows[j][1] for j in np.flatnonzero(pid == i)]
        right = {tuple(s) for s, c in zip(picks_i, correct[pid == i]) if c}
        wrong = {tuple(s) for s, c in zip(picks_i, correct[pid == i]) if not c}
        if right and wrong:
            distinct_correct.append(len(right))
            distinct_wrong.append(len(wrong))
    out["candidates"] = {
        "problems": len(probs),
        "per_problem": cfg.quality_candidates,
        "scored": len(rows),
        "problems_with_both": len(distinct_correct),
        "distinct_correct_per_problem": float(np.mean(distinct_correct)) if distinct_correct else None,
        "distinct_wrong_per_problem": float(np.mean(distinct_wrong)) if distinct_wrong else None,
    }
    return out


def token_entropy(policy, problems, seed: int, batch_size: int = 64) -> float:
    """Mean entropy (nats) of the policy's next-token distribution (its logits at temperature 1, what the demo
    samples at) over the tokens of its own sampled completions, one per problem, the end-of-sequence choice left
    out: how explorable its mistakes are for RL. Near 0, GRPO groups repeat one completion and no reward can move
    the policy."""
    from ..evaluation import sample_traces

    traces = [ts[0] for ts in sample_traces(policy, [p.prompt for p in problems], 1, seed=seed + 13)]
    total = count = 0.0
    for full, n_prompt, _, output in _completion_forwards(policy, [p.prompt for p in problems], traces, batch_size):
        logp = torch.log_softmax(output.logits[:, :-1].float(), -1)
        entropy = -(logp.exp() * logp).sum(-1)  # (B, T-1): the distribution that chose token t+1
        for b, (f, n) in enumerate(zip(full, n_prompt)):
            total += float(entropy[b, n - 1 : len(f) - 1].sum())
            count += max(len(f) - n, 0)
    return total / max(count, 1.0)


def _completion_forwards(policy, prompts: list[str], steps: list[list[str]], batch_size: int, **model_kwargs):
    """The policy's forward pass over each prompt + completion, in right-padded batches: yields `(token ids per
    row, prompt tokens per row, padded (B, T) ids, model output)`."""
    model, tok, fmt = policy.model, policy.tokenizer, policy.step_format
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = range(start, min(start + batch_size, len(prompts)))
            full = [tok(prompts[i] + fmt.join(steps[i]))["input_ids"] for i in chunk]
            n_prompt = [len(tok(prompts[i])["input_ids"]) for i in chunk]
            width = max(map(len, full))
            ids = torch.tensor([f + [pad] * (width - len(f)) for f in full])
            mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in full])
            yield full, n_prompt, ids, model(input_ids=ids, attention_mask=mask, **model_kwargs)


def _backbone_features(policy, prompts: list[str], steps: list[list[str]], batch_size: int = 64) -> dict:
    """What the frozen base policy computes on each completion.

    Returns:
        `{"hidden": (L, M, H)` each layer's hidden state at the final token, `"token_logprob": (M, 4)` the lowest,
        mean and summed token log-probability of the completion and the mean of its three lowest`}`. A wrong digit
        is usually a low-probability token.
    """
    hidden, token_feats = [], []
    batches = _completion_forwards(policy, prompts, steps, batch_size, output_hidden_states=True)
    for full, n_prompt, ids, output in batches:
        logp = torch.log_softmax(output.logits[:, :-1].float(), -1)
        token_logp = logp.gather(2, ids[:, 1:, None])[..., 0]
        last = torch.tensor([len(f) - 1 for f in full])
        rows = torch.arange(len(full))
        hidden.append(torch.stack([h[rows, last].float() for h in output.hidden_states[1:]]))
        for b, (f, n) in enumerate(zip(full, n_prompt)):
            lp = token_logp[b, n - 1 : len(f) - 1] if len(f) > n else torch.zeros(1)
            lowest = lp.sort().values[:3]
            token_feats.append([float(lp.min()), float(lp.mean()), float(lp.sum()), float(lowest.mean())])
    return {"hidden": torch.cat(hidden, 1).numpy(), "token_logprob": np.array(token_feats)}


def _logistic_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Scores of an L2-regularised logistic regression fit on standardised `train_x` (full-batch L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    test = torch.tensor((test_x - mean) / std, dtype=torch.float64)
    return (test @ w[:-1] + w[-1]).detach().numpy()


def _backbone_probes(policy, labels, cand_features: dict, correct: np.ndarray, pid: np.ndarray) -> dict:
    """Linear probes of the frozen base policy for the answer's correctness, trained on the labeled traces' outcomes
    and read on the search candidates: each layer's final-token hidden state (where a verifier head reads), and the
    token log-probabilities."""
    from ..metrics import auc, within_problem_auc

    known = [i for i, o in enumerate(labels["seed_outcome"]) if o is not None]
    train = _backbone_features(
        policy, [labels[i]["prompt"] for i in known], [list(labels[i]["completions"]) for i in known]
    )
    outcome = np.array([float(labels[i]["seed_outcome"]) for i in known])
    out = {}
    probes = {f"final_token_hidden_layer_{k + 1}": k for k in range(len(train["hidden"]))}
    probes["token_logprob"] = None
    for name, layer in probes.items():
        if layer is None:
            scores = _logistic_probe(train["token_logprob"], outcome, cand_features["token_logprob"])
        else:
            scores = _logistic_probe(train["hidden"][layer], outcome, cand_features["hidden"][layer])
        out[name] = {
            "within_problem_auc": within_problem_auc(scores, correct, pid),
            "outcome_auc": auc(scores, correct),
        }
    out["train_traces"] = len(known)
    return out
