"""Arithmetic experiment, part 3: online RL. Outcome-only GRPO against PAV-GRPO (dense Bo4 prover advantages,
α = `rl_alpha`), the latter with the learned PAV and with exact checker-derived values, over several seeds. On a task
with no-progress steps, the paper's App. G ablation too: the prover's value `Q^μ` instead of its advantage `A^μ`
(exact values), one-step and summed to the end as a dense reward, with the share of no-progress steps the policy
writes at every evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..evaluation import AccuracyCurveCallback, GeneratedTokensCallback, iterations_to_reach
from ..experiments.arithmetic_verifiers import generation_limits, trace_limits
from ..mc_values import MCStepScorer
from .common import cached_json, rl_args, seed_summary, t_interval

__all__ = ["HeldOutEvaluation", "no_progress_summary", "paired_sample_efficiency", "run", "summarize_arms"]


class HeldOutEvaluation:
    """Sampled accuracy of a model on held-out problems (`__call__`, for `AccuracyCurveCallback`), recording as well
    the steps per trace and, on a task that can tell (`no_progress_steps`), the share of steps making no progress.

    Attributes:
        records: one `{"accuracy", "steps_per_trace", "no_progress_share"}` per call (share `None` if the task cannot
            tell).
    """

    def __init__(self, task, tokenizer, problems, seed: int = 7):
        self.task, self.tokenizer, self.problems, self.seed = task, tokenizer, list(problems), seed
        self.records: list[dict] = []

    def __call__(self, model) -> float:
        from ..evaluation import sample_and_grade
        from ..generation import HFPolicy

        policy = HFPolicy(model, self.tokenizer, self.task.step_format, batch_size=256, **generation_limits(self.task))
        prompts, golds = [p.prompt for p in self.problems], [p.gold for p in self.problems]
        sampled, grades = sample_and_grade(policy, prompts, golds, self.task.grader, seed=self.seed)
        traces = [ts[0] for ts in sampled]
        accuracy = sum(g[0] for g in grades) / len(traces)
        steps = sum(len(t) for t in traces)
        share = None
        if hasattr(self.task, "no_progress_steps"):
            flat = [f for p, t in zip(self.problems, traces) for f in self.task.no_progress_steps(p.expression, t)]
            share = sum(flat) / max(len(flat), 1)
        self.records.append({"accuracy": accuracy, "steps_per_trace": steps / len(traces), "no_progress_share": share})
        return accuracy


def run(cfg, out: Path, progress, arith: dict) -> dict:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from ..modeling import PAVVerifier
    from ..trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task, tok = arith["task"], arith["policy"].tokenizer
    pools = arith["pools"]  # disjoint from each other and from every other stage's problems
    train, held = pools["rl_train"], pools["rl_eval"]
    train_ds = Dataset.from_dict({"prompt": [p.prompt for p in train], "gold": [p.gold for p in train]})

    completion_tokens = trace_limits(task)["rl_completion_tokens"]
    learned = f"pav_bo{cfg.prover_k}"
    arms = {
        "outcome": None,
        learned: lambda seed: PAVVerifier.from_pretrained(arith["verifiers"]["pav"]),
        f"pav_bo{cfg.prover_k}_exact": lambda seed: arith["checker"],
    }
    # App. G ablation: Q^μ instead of A^μ (a no-progress step keeps the prover's value), one-step and summed to go.
    exact = f"pav_bo{cfg.prover_k}_exact"
    ablations = {f"{exact}_qvalue": "q_value", f"{exact}_qvalue_to_go": "q_value_to_go"}
    if cfg.rl_q_value_ablation and hasattr(task, "no_progress_steps"):
        arms.update({arm: arms[exact] for arm in ablations})
    else:
        ablations = {}
    for n in cfg.rl_mc_rollouts:  # Bo-K of the current policy from n rollouts per state, online (no verifier)
        k = min(cfg.prover_k, n)
        arms[f"mc{n}_bo{k}"] = lambda seed, n=n, k=k: MCStepScorer(
            None, task.grader, n_rollouts=n, prover_k=k, seed=1000 + seed
        )
    curves: dict[str, list[list[tuple[int, float]]]] = {arm: [] for arm in arms}
    tokens: dict[str, list[list[tuple[int, ...]]]] = {arm: [] for arm in arms}
    trace_stats: dict[str, list[list[dict]]] = {arm: [] for arm in arms}  # per evaluation: steps, no-progress
    for arm, build in arms.items():
        for seed in cfg.rl_seeds:
            progress(f"realistic RL arm {arm}, seed {seed}: {cfg.rl_steps} GRPO steps")
            key = {
                "arm": arm,
                "seed": seed,
                "cfg": [cfg.rl_steps, cfg.rl_alpha, cfg.prover_k, cfg.realistic_rl_learning_rate, cfg.rl_eval_every],
                "eval": cfg.rl_eval_problems,
                "pools": pools.spec("rl_eval", "rl_train"),
                "policy": (Path(arith["policy_dir"]) / ".done").read_text(),
                "checker": arith["checker_spec"],
                "record": "points+tokens4+shape",
            }
            if arm != "outcome":  # PAV arms: a completion with no whole step is charged from the root's value
                key["stepless_terminal"] = "root"
            if arm == learned:  # only this arm depends on the learned PAV
                key["verifier"] = (Path(arith["verifiers"]["pav"]) / ".done").read_text()
            if arm in ablations:
                key["process_reward"] = ablations[arm]

            def train_arm(arm=arm, build=build, seed=seed):
                evaluate = HeldOutEvaluation(task, tok, held)
                curve = AccuracyCurveCallback(evaluate, cfg.rl_eval_every)
                spent = GeneratedTokensCallback()
                run_dir = out / "arithmetic" / "rl" / f"{arm}-{seed}"
                common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve, spent]}
                if build is None:
                    args = rl_args(
                        GRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        scale_rewards="none",
                        learning_rate=cfg.realistic_rl_learning_rate,
                        max_completion_length=completion_tokens,
                    )
                    trainer = GRPOTrainer(str(arith["policy_dir"]), [grader_reward(task.grader)], args=args, **common)
                else:
                    verifier = build(seed)
                    args = rl_args(
                        PAVGRPOConfig,
                        run_dir,
                        cfg.rl_steps,
                        seed,
                        pav_alpha=cfg.rl_alpha,
                        process_reward=ablations.get(arm, "advantage"),
                        # Rollout values are already the prover's (Bo-K applied by the scorer).
                        prover_k=None if isinstance(verifier, MCStepScorer) else cfg.prover_k,
                        learning_rate=cfg.realistic_rl_learning_rate,
                        max_completion_length=completion_tokens,
                        step_separator=task.step_format.separator,
                    )
                    trainer = PAVGRPOTrainer(
                        str(arith["policy_dir"]), [grader_reward(task.grader)], verifier=verifier, args=args, **common
                    )
                trainer.remove_callback(PrinterCallback)  # progress goes through the demo's log, not stdout
                trainer.train()
                shutil.rmtree(run_dir, ignore_errors=True)
                shape = [{"step": s, **r} for (s, _), r in zip(curve.points, evaluate.records)]
                return {"points": curve.points, "tokens": spent.per_step, "shape": shape}

            record = cached_json(out / "arithmetic" / "rl" / f"{arm}-{seed}.json", key, train_arm)
            curves[arm].append([tuple(p) for p in record["points"]])
            tokens[arm].append([tuple(t) for t in record["tokens"]])
            trace_stats[arm].append(record["shape"])
    # The ablations are not the paper's arms: they are summarized apart, beside the arms they are compared with.
    summary = summarize_arms({a: c for a, c in curves.items() if a not in ablations}, "outcome", learned)
    if ablations:
        compared = ["outcome", exact, *ablations]
        summary["q_value_ablation"] = {
            "arms": ablations,
            "advantage_arm": exact,
            "no_progress": no_progress_summary({a: trace_stats[a] for a in compared}, reference=exact),
            **summarize_arms({a: curves[a] for a in compared}, "outcome", exact),
        }
    # What each arm spent: policy completions, rollouts (MC arms) and the tokens a learned verifier read (exact
    # oracles read none).
    summary["generated_tokens"] = {
        arm: {
            "policy": float(np.mean([t[-1][1] for t in runs if t])),
            "rollouts": float(np.mean([t[-1][2] for t in runs if t])),
            "verifier": float(np.mean([t[-1][3] for t in runs if t])),
        }
        for arm, runs in tokens.items()
        if any(runs)
    }
    return summary


def summarize_arms(curves: dict[str, list[list[tuple[int, float]]]], baseline: str, method: str) -> dict:
    """Mean curves with their spread over seeds, final accuracies with t-intervals, the paired (same-seed) gain of
    every arm over `baseline`, and sample efficiency: the iterations the baseline's mean curve needs to first reach
    its final accuracy, over the iterations each arm's mean curve needs to reach it, and the same per seed
    (`paired_sample_efficiency`)."""
    mean = {arm: seed_summary(runs) for arm, runs in curves.items()}
    base_final = mean[baseline][-1]["accuracy"]
    finals = {arm: [run[-1][1] for run in runs] for arm, runs in curves.items()}
    gains = {}
    for arm in curves:
        if arm == baseline:
            continue
        gains[arm] = _interval_record([a - b for a, b in zip(finals[arm], finals[baseline])])
    paired = {arm: paired_sample_efficiency(runs, curves[baseline]) for arm, runs in curves.items() if arm != baseline}
    reach = {arm: iterations_to_reach([(p["step"], p["accuracy"]) for p in m], base_final) for arm, m in mean.items()}
    base_steps = reach[baseline] or mean[baseline][-1]["step"]
    ratio = {arm: (base_steps / r if r else None) for arm, r in reach.items()}
    return {
        "curves": mean,
        "final_accuracy": {arm: t_interval(v)[0] for arm, v in finals.items()},
        "final_accuracy_interval": {arm: t_interval(v) for arm, v in finals.items()},
        "gain_over_outcome": gains,
        "accuracy_gain": gains[method]["estimate"],
        "accuracy_gain_interval": [gains[method]["low"], gains[method]["high"]],
        "steps_to_outcome_final": reach,
        "sample_efficiency_ratio": ratio[method],
        "sample_efficiency_ratios": ratio,
        "paired_sample_efficiency": paired,
        "seeds": len(next(iter(curves.values()))),
    }


def _interval_record(per_seed: list[float]) -> dict:
    """Per-seed values with their mean and two-sided 95% t-interval, as the report reads them."""
    est, lo, hi = t_interval(per_seed)
    return {"estimate": est, "low": lo, "high": hi, "per_seed": per_seed}


def paired_sample_efficiency(runs: list[list[tuple[int, float]]], baseline_runs: list[list[tuple[int, float]]]) -> dict:
    """Sample efficiency paired by seed: for each seed, the iterations the baseline's run needs to first reach its
    own final accuracy over those the arm's run (same seed) needs to reach it. A seed whose baseline ends at or below
    its start has no target to reach (`None`, `"baseline_flat"`); one whose arm never reaches it has none either
    (`"unreached"`). With every seed defined, the geometric mean and its t-interval (over seeds, on log ratios).

    Example:
        >>> base = [[(0, .1), (50, .2), (100, .3)], [(0, .1), (50, .3), (100, .3)]]
        >>> arm = [[(0, .1), (50, .3), (100, .4)], [(0, .1), (50, .35), (100, .4)]]
        >>> out = paired_sample_efficiency(arm, base)
        >>> out["per_seed"], out["status"]
        ([2.0, 1.0], ['ok', 'ok'])
    """
    if len(runs) != len(baseline_runs):
        raise ValueError(f"paired_sample_efficiency: {len(runs)} runs but {len(baseline_runs)} baseline runs")
    rows = []  # (ratio, status, [baseline steps, arm steps])
    for run, base in zip(runs, baseline_runs):
        target = base[-1][1]
        if target <= base[0][1] + 1e-9:
            rows.append((None, "baseline_flat", None))
            continue
        base_steps, arm_steps = iterations_to_reach(base, target), iterations_to_reach(run, target)
        if not arm_steps:  # never (None); 0 would need the arm to start above a target the baseline starts below
            rows.append((None, "unreached", [base_steps, None]))
        else:
            rows.append((base_steps / arm_steps, "ok", [base_steps, arm_steps]))
    per_seed, status, steps = ([r[i] for r in rows] for i in range(3))
    out = {"per_seed": per_seed, "status": status, "steps": steps, "geometric_mean": None, "interval": None}
    if per_seed and all(r is not None for r in per_seed):
        est, lo, hi = t_interval(np.log(per_seed).tolist())
        out["geometric_mean"] = float(np.exp(est))
        out["interval"] = [float(np.exp(lo)), float(np.exp(hi))] if lo is not None else None
    return out


def no_progress_summary(trace_stats: dict[str, list[list[dict]]], reference: str, baseline: str = "outcome") -> dict:
    """How much of each arm's output makes no progress, over training: per arm, the mean share of no-progress steps
    per evaluation (with the seeds' range), its change from the first evaluation to the last (paired within each
    seed, t-interval over seeds), the mean steps per trace at the end and their change (likewise); and each arm's
    final share minus `reference`'s (paired by seed), for every arm but `reference` and `baseline`; and
    `reference`'s final share minus `baseline`'s (paired by seed; `None` without a baseline arm): the paper's claim
    that the `A^μ` reward does not drift is a claim about this one.

    Args:
        trace_stats: per arm, per seed, one `{"step", "no_progress_share", "steps_per_trace"}` per evaluation (the same
            steps for every seed and arm; `HeldOutEvaluation.records`).
        reference: the arm the others are compared with (exact `A^μ`).
        baseline: an arm shown but not compared (outcome-only RL).

    Example:
        >>> run = lambda a, b: [{"step": 0, "no_progress_share": a, "steps_per_trace": 5.0},
        ...                     {"step": 10, "no_progress_share": b, "steps_per_trace": 6.0}]
        >>> out = no_progress_summary({"q": [run(.1, .3), run(.1, .5)], "a": [run(.1, .1), run(.1, .2)]}, "a")
        >>> round(out["change"]["q"]["estimate"], 2), round(out["minus_reference"]["q"]["estimate"], 2)
        (0.3, 0.25)
        >>> out["reference_minus_baseline"] is None  # no outcome-only arm here
        True
    """
    if reference not in trace_stats:
        raise ValueError(f"no_progress_summary: reference arm {reference!r} not in {sorted(trace_stats)}")
    share = {a: [[r["no_progress_share"] for r in run] for run in runs] for a, runs in trace_stats.items()}
    for arm, runs in share.items():
        if any(v is None for run in runs for v in run):
            raise ValueError(f"no_progress_summary: arm {arm!r} has evaluations without a no-progress share")
    out: dict = {"curves": {}, "change": {}, "final_steps_per_trace": {}, "steps_change": {}, "minus_reference": {}}
    for arm, runs in trace_stats.items():
        values = np.array(share[arm], dtype=float)  # (seeds, evaluations)
        out["curves"][arm] = [
            {"step": r["step"], "share": float(values[:, i].mean()), "min": float(values[:, i].min()),
             "max": float(values[:, i].max())}
            for i, r in enumerate(runs[0])
        ]  # fmt: skip
        out["change"][arm] = _interval_record((values[:, -1] - values[:, 0]).tolist())
        out["final_steps_per_trace"][arm] = float(np.mean([run[-1]["steps_per_trace"] for run in runs]))
        # Padding shows in the steps per trace too.
        out["steps_change"][arm] = _interval_record([r[-1]["steps_per_trace"] - r[0]["steps_per_trace"] for r in runs])
        if arm not in (reference, baseline):
            finals = [m[-1] - r[-1] for m, r in zip(share[arm], share[reference])]
            out["minus_reference"][arm] = _interval_record(finals)
    out["reference"] = reference
    out["reference_minus_baseline"] = (
        _interval_record([r[-1] - b[-1] for r, b in zip(share[reference], share[baseline])])
        if baseline in share
        else None
    )
    return out
