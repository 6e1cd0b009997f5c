"""`trl-pav demo`: a small-scale reproduction of the paper's claims on a CPU, written up as a report with plots.

Stages (each cached under the output folder, so a re-run resumes):

1. Arithmetic: train the base policy (SFT), label problems by Monte-Carlo rollouts (first-pit, Bo4 prover), train a
   PAV and an ORM from the base policy's backbone, then
   - search: PAV beam search vs Q-only beam search vs ORM best-of-N across budgets, and a prover sweep over K;
   - RL: PAV-RL (Bo4, and the paper's RL choice K = 1) vs outcome-only GRPO from the base policy.
2. Planted subsequence: RL with the effective reward of the procedural prover μ_γ (exact DP values) vs outcome-only
   RL from the γ = 5-initialised policy, and a sweep over the prover strength γ.
3. Report: `report.md`, `results.json` and PNG plots.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Budgets of the demo. The defaults fill about 15 minutes on 2 CPU cores; `DemoConfig.quick()` about 3.

    Args:
        policy_steps (`int`): SFT steps of the arithmetic base policy.
        label_problems (`int`): problems labeled by Monte-Carlo rollouts.
        n_cov (`int`): seed traces per labeled problem.
        n_mc (`int`): rollouts per labeled prefix (the paper's 20 does not fit the CPU budget; see docs).
        prover_k (`int`): K of the Best-of-K prover (the paper's Bo4).
        verifier_steps (`int`): optimizer steps of PAV and ORM training.
        search_problems (`int`): held-out problems for the search comparison.
        search_budgets (`list[int]`): N per prompt for search.
        search_alpha (`float`): α of PAV beam search (paper: ~0.5 for small models).
        k_sweep (`list[int]`): prover K values swept at one beam size.
        k_sweep_budget (`int`): N of the prover sweep.
        rl_steps (`int`): GRPO steps per arithmetic RL run.
        rl_alpha (`float`): α of PAV-RL (paper: 3-5).
        rl_learning_rate (`float`): GRPO learning rate on arithmetic (1e-4 already degrades the 1M policy).
        rl_seeds (`list[int]`): seeds of each RL arm.
        rl_eval_every (`int`): steps between held-out evaluations.
        rl_eval_problems (`int`): held-out problems per evaluation.
        planted_rl_steps (`int`): GRPO steps per planted RL run.
        planted_gamma (`float`): γ of the procedural prover (paper: 10).
        planted_alpha (`float`): α of planted PAV-RL (paper: 1).
        gamma_sweep (`list[float]`): γ values of the prover-strength sweep.
        gamma_sweep_steps (`int`): GRPO steps per sweep run.
        seed (`int`): base seed.
    """

    policy_steps: int = 700
    label_problems: int = 512
    n_cov: int = 4
    n_mc: int = 8
    prover_k: int = 4
    verifier_steps: int = 600
    search_problems: int = 128
    search_budgets: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    search_alpha: float = 0.5
    k_sweep: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    k_sweep_budget: int = 12
    rl_steps: int = 60
    rl_alpha: float = 3.0
    rl_learning_rate: float = 2e-5
    rl_seeds: list[int] = field(default_factory=lambda: [0, 1])
    rl_eval_every: int = 10
    rl_eval_problems: int = 200
    planted_rl_steps: int = 200
    planted_gamma: float = 10.0
    planted_alpha: float = 1.0
    gamma_sweep: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0, 100.0])
    gamma_sweep_steps: int = 100
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoConfig:
        """The same pipeline on a tiny budget (about 3 minutes), for smoke tests."""
        return cls(
            policy_steps=80,
            label_problems=24,
            n_cov=2,
            n_mc=4,
            verifier_steps=30,
            search_problems=16,
            search_budgets=[3, 6],
            k_sweep=[1, 4, 32],
            k_sweep_budget=6,
            rl_steps=6,
            rl_seeds=[0],
            rl_eval_every=3,
            rl_eval_problems=32,
            planted_rl_steps=6,
            gamma_sweep=[1.0, 10.0],
            gamma_sweep_steps=4,
        )


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached(folder: Path, key: Any, build: Callable[[Path], Any]) -> Path:
    """Run `build(folder)` unless `folder` already holds a finished build for the same key."""
    marker = folder / ".done"
    fingerprint = _fingerprint(key)
    if marker.exists() and marker.read_text() == fingerprint:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    build(folder)
    marker.write_text(fingerprint)
    return folder


def _rl_args(cls, output_dir: Path, steps: int, seed: int, **kw):
    return cls(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=32,
        num_generations=8,
        learning_rate=kw.pop("learning_rate", 1e-4),
        beta=kw.pop("beta", 0.001),
        max_completion_length=kw.pop("max_completion_length", 48),
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        seed=seed,
        disable_tqdm=True,
        **kw,
    )


class _AccuracyCurve:
    """A trainer callback that records held-out sampled accuracy every `every` steps (and at step 0)."""

    def __init__(self, evaluate: Callable[[Any], float], every: int):
        from transformers import TrainerCallback

        outer = self
        self.points: list[tuple[int, float]] = []

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                outer.points.append((0, evaluate(model)))

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % every == 0 or state.global_step == state.max_steps:
                    outer.points.append((state.global_step, evaluate(model)))

        self.callback = _Callback()


def _steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, acc in curve if acc >= target - 1e-9), None)


class _Progress:
    def __init__(self, log: Callable[[str], None]):
        self.log, self.start = log, time.time()

    def __call__(self, msg: str) -> None:
        self.log(f"[{time.time() - self.start:6.0f}s] {msg}")


def _quiet_libraries() -> None:
    """Keep the demo's own stage lines readable: no per-map progress bars or load reports from the libraries."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()


def run_demo(output_dir: str | os.PathLike = "outputs/demo", config: DemoConfig | None = None, log=None) -> dict:
    """Run the whole reproduction and write the report into `output_dir/report`. Returns `results.json`'s content."""
    from .report import write_report

    cfg = config or DemoConfig()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(log or (lambda m: None))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    _quiet_libraries()
    start = time.time()
    results: dict[str, Any] = {"config": asdict(cfg)}
    arith = _arithmetic_stage(cfg, out, progress, results)
    results["search"] = _search_stage(cfg, out, progress, arith)
    results["rl"] = _arithmetic_rl_stage(cfg, out, progress, arith)
    results["planted"] = _planted_stage(cfg, out, progress)
    results["runtime_seconds"] = round(time.time() - start, 1)
    report_dir = out / "report"
    write_report(results, report_dir)
    progress(f"report written to {report_dir}")
    return results


# ---- arithmetic: policy, labels, verifiers -------------------------------------------------------------------------
def _arithmetic_stage(cfg: DemoConfig, out: Path, progress, results: dict) -> dict:
    from transformers import AutoModelForCausalLM

    from .evaluation import sampled_accuracy
    from .generation import HFPolicy
    from .labeling import MCLabelConfig, MCLabeler, load_labels
    from .tasks import ArithmeticTask, TinyPolicyConfig, train_base_policy
    from .tokenization import load_tokenizer

    task = ArithmeticTask()
    policy_cfg = TinyPolicyConfig(max_steps=cfg.policy_steps, seed=cfg.seed)
    progress(f"arithmetic base policy: SFT for {cfg.policy_steps} steps (cached after the first run)")
    t0 = time.time()
    policy_dir = _cached(
        out / "arithmetic" / "policy", asdict(policy_cfg), lambda d: train_base_policy(task, d, policy_cfg)
    )
    policy_seconds = time.time() - t0
    model, tok = AutoModelForCausalLM.from_pretrained(policy_dir), load_tokenizer(policy_dir)
    policy = HFPolicy(
        model, tok, task.step_format, name="arithmetic-base", max_new_tokens=64, max_step_tokens=16, batch_size=256
    )
    eval_problems = task.sample_problems(400, seed=10_000)
    base_acc = sampled_accuracy(
        policy, [p.prompt for p in eval_problems], [p.gold for p in eval_problems], task.grader, seed=cfg.seed
    )
    progress(f"base policy sampled accuracy {base_acc:.3f}")

    progress(f"MC labeling {cfg.label_problems} problems (first-pit, Bo{cfg.prover_k} prover, n_mc={cfg.n_mc})")
    label_cfg = MCLabelConfig(
        n_cov=cfg.n_cov,
        n_mc=cfg.n_mc,
        strategy="first_pit",
        prover_k=cfg.prover_k,
        seed=cfg.seed,
        show_progress=False,
        shard_size=32,
    )
    labels_dir = out / "arithmetic" / "labels"
    MCLabeler(policy, task.grader, label_cfg).label(
        task.problems_dataset(cfg.label_problems, seed=cfg.seed + 1), labels_dir
    )
    labels, label_meta = load_labels(labels_dir)
    first_errors = [task.first_error(r["expression"], r["completions"]) for r in labels]
    failing = [
        (r["first_pit"], fe) for r, fe in zip(labels, first_errors) if r["seed_outcome"] == 0.0 and fe is not None
    ]
    pit_accuracy = sum(p == fe for p, fe in failing) / max(1, len(failing))
    progress(
        f"labels: {label_meta['num_traces']} traces, {label_meta['rollouts']} rollouts; "
        f"first-pit = true first error in {pit_accuracy:.1%} of failing traces"
    )

    verifiers = {}
    for kind in ("pav", "orm"):
        progress(f"training the {kind.upper()} ({cfg.verifier_steps} steps, from the base policy's backbone)")
        verifiers[kind] = _cached(
            out / "arithmetic" / kind,
            {
                "kind": kind,
                "steps": cfg.verifier_steps,
                "labels": label_meta.get("fingerprint"),
                "policy": asdict(policy_cfg),
            },
            lambda d, kind=kind: _train_verifier(policy_dir, labels, d, kind, cfg),
        )
    verifier_eval = _verifier_quality(verifiers["pav"], task, policy, cfg)
    orm_eval = _verifier_quality(verifiers["orm"], task, policy, cfg)
    progress(
        f"held-out step AUC vs the exact checker: PAV {verifier_eval['step_auc']:.3f}, ORM {orm_eval['step_auc']:.3f}"
    )
    results["arithmetic"] = {
        "base_policy_sampled_accuracy": base_acc,
        "base_policy_train_seconds": round(policy_seconds, 1),
        "labeling": {
            k: label_meta[k]
            for k in ("num_traces", "num_labels", "rollouts", "generated_tokens", "wall_seconds", "prefix_cache_hits")
        },
        "first_pit_matches_true_first_error": pit_accuracy,
        "failing_traces": len(failing),
        "pav_quality": verifier_eval,
        "orm_quality": orm_eval,
    }
    return {"task": task, "policy": policy, "policy_dir": policy_dir, "verifiers": verifiers, "base_acc": base_acc}


def _train_verifier(policy_dir: Path, labels, folder: Path, kind: str, cfg: DemoConfig) -> None:
    from .trainers import PAVRewardConfig, PAVRewardTrainer

    args = PAVRewardConfig(
        output_dir=str(folder / "trainer"),
        kind=kind,
        prover_k=cfg.prover_k,
        max_steps=cfg.verifier_steps,
        per_device_train_batch_size=32,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.verifier_steps // 10),
        max_length=128,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=cfg.seed,
    )
    trainer = PAVRewardTrainer(str(policy_dir), args, labels)
    trainer.train()
    trainer.save_model(str(folder))
    shutil.rmtree(folder / "trainer", ignore_errors=True)


def _verifier_quality(path: Path, task, policy, cfg: DemoConfig) -> dict:
    """Step AUC of a verifier against the exact step checker on fresh held-out traces of the base policy."""
    from .evaluation import sample_traces
    from .metrics import auc, first_error_accuracy
    from .modeling import PAVVerifier

    verifier = PAVVerifier.from_pretrained(path)
    probs = task.sample_problems(200, seed=20_000)
    traces = sample_traces(policy, [p.prompt for p in probs], 2, seed=cfg.seed + 5)
    rows = [(p, steps) for p, ts in zip(probs, traces) for steps in ts if steps]
    values = verifier.score([p.prompt for p, _ in rows], [steps for _, steps in rows])
    scores, truth, firsts = [], [], []
    for (p, steps), v in zip(rows, values):
        scores += v[1:]
        truth += task.step_labels(p.expression, steps)
        firsts.append(task.first_error(p.expression, steps))
    return {
        "step_auc": auc(np.array(scores), np.array(truth)),
        "first_error_accuracy": first_error_accuracy([v[1:] for v in values], firsts),
        "traces": len(rows),
    }


# ---- search ------------------------------------------------------------------------------------------------------
def _search_stage(cfg: DemoConfig, out: Path, progress, arith: dict) -> dict:
    from .modeling import PAVVerifier
    from .search import SearchEvalConfig, compare_curves, evaluate_search

    task, policy = arith["task"], arith["policy"]
    pav = PAVVerifier.from_pretrained(arith["verifiers"]["pav"])
    orm = PAVVerifier.from_pretrained(arith["verifiers"]["orm"])
    probs = task.sample_problems(cfg.search_problems, seed=30_000)
    prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
    progress(f"search: PAV beam vs Q-only beam vs ORM best-of-N on {len(prompts)} problems, N in {cfg.search_budgets}")
    search_cfg = SearchEvalConfig(
        methods=["pav_beam", "q_beam", "orm_bon", "majority", "pass_at_n"],
        budgets=cfg.search_budgets,
        alpha=cfg.search_alpha,
        prover_k=cfg.prover_k,
        max_depth=8,
        seed=cfg.seed,
    )
    curves = evaluate_search(policy, prompts, golds, task.grader, search_cfg, pav=pav, orm=orm, show_progress=False)
    comparison = compare_curves(curves["methods"]["pav_beam"], curves["methods"]["orm_bon"])
    progress(
        f"search: compute ratio {comparison['compute_ratio']:.2f}, accuracy gain {comparison['accuracy_gain']:+.3f}"
    )
    progress(f"prover sweep K in {cfg.k_sweep} at N={cfg.k_sweep_budget}")
    sweep = []
    for k in cfg.k_sweep:
        k_cfg = replace(search_cfg, methods=["pav_beam"], budgets=[cfg.k_sweep_budget], prover_k=k)
        rec = evaluate_search(policy, prompts, golds, task.grader, k_cfg, pav=pav, show_progress=False)["methods"][
            "pav_beam"
        ][0]
        sweep.append({"k": k, "accuracy": rec["accuracy"]})
    return {"curves": curves["methods"], **comparison, "prover_sweep": sweep, **best_prover(sweep)}


def best_prover(sweep: list[dict]) -> dict:
    """The K with the highest accuracy (ties go to the smallest K, not to the paper's answer) and every tied K."""
    top = max(r["accuracy"] for r in sweep)
    tied = sorted(r["k"] for r in sweep if r["accuracy"] == top)
    return {"best_prover_k": tied[0], "best_prover_k_ties": tied}


# ---- arithmetic RL -------------------------------------------------------------------------------------------------
def _arithmetic_rl_stage(cfg: DemoConfig, out: Path, progress, arith: dict) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from .evaluation import sampled_accuracy
    from .generation import HFPolicy
    from .modeling import PAVVerifier
    from .trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task, tok = arith["task"], arith["policy"].tokenizer
    train = task.sample_problems(cfg.rl_steps * 4 + 64, seed=40_000)
    train_ds = Dataset.from_dict({"prompt": [p.prompt for p in train], "gold": [p.gold for p in train]})
    held = task.sample_problems(cfg.rl_eval_problems, seed=50_000)

    def evaluate(model) -> float:
        pol = HFPolicy(model, tok, task.step_format, max_new_tokens=64, batch_size=256)
        return sampled_accuracy(pol, [p.prompt for p in held], [p.gold for p in held], task.grader, seed=7)

    arms = {
        "outcome": None,
        f"pav_bo{cfg.prover_k}": cfg.prover_k,
        "pav_k1": 1,  # the paper's RL choice: a K = 1 prover fixed at the initial policy
    }
    curves: dict[str, list[list[tuple[int, float]]]] = {arm: [] for arm in arms}
    for arm, k in arms.items():
        for seed in cfg.rl_seeds:
            progress(f"RL arm {arm}, seed {seed}: {cfg.rl_steps} GRPO steps")
            curve = _AccuracyCurve(evaluate, cfg.rl_eval_every)
            run_dir = out / "arithmetic" / "rl" / f"{arm}-{seed}"
            common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve.callback]}
            if k is None:
                args = _rl_args(
                    GRPOConfig, run_dir, cfg.rl_steps, seed, scale_rewards="none", learning_rate=cfg.rl_learning_rate
                )
                trainer = GRPOTrainer(str(arith["policy_dir"]), [grader_reward(task.grader)], args=args, **common)
            else:
                args = _rl_args(
                    PAVGRPOConfig,
                    run_dir,
                    cfg.rl_steps,
                    seed,
                    pav_alpha=cfg.rl_alpha,
                    prover_k=k,
                    learning_rate=cfg.rl_learning_rate,
                )
                verifier = PAVVerifier.from_pretrained(arith["verifiers"]["pav"])
                trainer = PAVGRPOTrainer(
                    str(arith["policy_dir"]), [grader_reward(task.grader)], verifier=verifier, args=args, **common
                )
            trainer.train()
            curves[arm].append(curve.points)
            shutil.rmtree(run_dir, ignore_errors=True)
    return _rl_summary(curves, "outcome", f"pav_bo{cfg.prover_k}")


def _mean_curve(runs: list[list[tuple[int, float]]]) -> list[tuple[int, float, float]]:
    steps = [s for s, _ in runs[0]]
    values = np.array([[a for _, a in run] for run in runs])
    return [(s, float(values[:, i].mean()), float(values[:, i].std())) for i, s in enumerate(steps)]


def _rl_summary(curves: dict, baseline: str, method: str) -> dict:
    mean = {arm: _mean_curve(runs) for arm, runs in curves.items()}
    base_final = mean[baseline][-1][1]
    base_steps = mean[baseline][-1][0]
    reach = _steps_to_reach([(s, a) for s, a, _ in mean[method]], base_final)
    ratio = (base_steps / reach) if reach else None
    return {
        "curves": {arm: [{"step": s, "accuracy": a, "std": sd} for s, a, sd in m] for arm, m in mean.items()},
        "final_accuracy": {arm: m[-1][1] for arm, m in mean.items()},
        "accuracy_gain": mean[method][-1][1] - base_final,
        "steps_to_outcome_final": {
            arm: _steps_to_reach([(s, a) for s, a, _ in m], base_final) for arm, m in mean.items()
        },
        "sample_efficiency_ratio": ratio,
        "seeds": len(next(iter(curves.values()))),
    }


# ---- planted subsequence -------------------------------------------------------------------------------------------
def _planted_stage(cfg: DemoConfig, out: Path, progress) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from .evaluation import sampled_accuracy
    from .generation import HFPolicy
    from .tasks import DEFAULT_POLICY, PlantedOracleScorer, PlantedTask, train_base_policy
    from .tokenization import load_tokenizer
    from .trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task = PlantedTask()
    policy_cfg = replace(DEFAULT_POLICY["planted"], seed=cfg.seed)
    progress("planted: base policy by SFT on 3,200 samples of the gamma=5 prover")
    policy_dir = _cached(
        out / "planted" / "policy", asdict(policy_cfg), lambda d: train_base_policy(task, d, policy_cfg)
    )
    tok = load_tokenizer(policy_dir)
    train_ds = Dataset.from_dict({"prompt": [task.prompt] * 4096, "gold": [""] * 4096})

    def evaluate(model) -> float:
        pol = HFPolicy(model, tok, task.step_format, max_new_tokens=24, batch_size=512)
        return sampled_accuracy(pol, [task.prompt] * 512, [""] * 512, task.grader, seed=3)

    base_acc = evaluate(AutoModelForCausalLM.from_pretrained(policy_dir))
    progress(f"planted base policy success {base_acc:.3f}")

    def run(gamma: float | None, steps: int, seed: int) -> list[tuple[int, float]]:
        curve = _AccuracyCurve(evaluate, max(1, steps // 10))
        run_dir = out / "planted" / "rl" / f"{gamma}-{seed}"
        kw = {"max_completion_length": 24, "learning_rate": 1e-3}
        common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve.callback]}
        if gamma is None:
            args = _rl_args(GRPOConfig, run_dir, steps, seed, scale_rewards="none", **kw)
            trainer = GRPOTrainer(str(policy_dir), [grader_reward(task.grader)], args=args, **common)
        else:
            args = _rl_args(PAVGRPOConfig, run_dir, steps, seed, pav_alpha=cfg.planted_alpha, prover_k=1, **kw)
            scorer = PlantedOracleScorer(task, gamma)
            trainer = PAVGRPOTrainer(
                str(policy_dir), [grader_reward(task.grader)], verifier=scorer, args=args, **common
            )
        trainer.train()
        shutil.rmtree(run_dir, ignore_errors=True)
        return curve.points

    progress(
        f"planted RL: effective reward with the gamma={cfg.planted_gamma:g} prover vs outcome-only, "
        f"{cfg.planted_rl_steps} steps"
    )
    pav_curve = run(cfg.planted_gamma, cfg.planted_rl_steps, cfg.seed)
    outcome_curve = run(None, cfg.planted_rl_steps, cfg.seed)
    progress(f"prover-strength sweep over gamma in {cfg.gamma_sweep}")
    sweep = []
    for gamma in cfg.gamma_sweep:
        points = run(gamma, cfg.gamma_sweep_steps, cfg.seed)
        sweep.append({"gamma": gamma, "final_accuracy": points[-1][1]})
    outcome_sweep = run(None, cfg.gamma_sweep_steps, cfg.seed)[-1][1]
    window = [r["gamma"] for r in sweep if r["final_accuracy"] > outcome_sweep + 0.05]
    return {
        "base_policy_success": base_acc,
        "curves": {
            "pav": [{"step": s, "accuracy": a} for s, a in pav_curve],
            "outcome": [{"step": s, "accuracy": a} for s, a in outcome_curve],
        },
        "pav_iterations_to_90": _steps_to_reach(pav_curve, 0.9),
        "outcome_iterations_to_90": _steps_to_reach(outcome_curve, 0.9),
        "pav_final_accuracy": pav_curve[-1][1],
        "outcome_final_accuracy": outcome_curve[-1][1],
        "gamma_sweep": sweep,
        "gamma_sweep_outcome_accuracy": outcome_sweep,
        "gamma_window": [min(window), max(window)] if window else None,
    }
