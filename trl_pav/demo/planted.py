"""The planted-subsequence experiment (the paper's didactic task) with exact DP values of the procedural prover:
PAV-RL (GRPO) with the γ prover's effective reward against outcome-only RL over several seeds, the same comparison
with PPO and a learned critic (`experiments.run_planted_ppo`), and a γ sweep."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..evaluation import (
    AccuracyCurveCallback,
    GeneratedTokensCallback,
    iterations_to_reach,
    mean_success_over_training,
    tokens_to_reach,
)
from ..mc_values import MCStepScorer
from .common import cached, cached_json, rl_args, seed_summary, t_interval

__all__ = ["prover_selection", "run", "sweep_gains"]


def run(cfg, out: Path, progress) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from ..evaluation import sampled_accuracy
    from ..generation import HFPolicy
    from ..tasks import DEFAULT_POLICY, PlantedOracleScorer, PlantedProverPolicy, PlantedTask, train_base_policy
    from ..tokenization import load_tokenizer
    from ..trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task = PlantedTask()
    policy_cfg = replace(DEFAULT_POLICY["planted"], seed=cfg.seed)
    progress("planted: base policy by SFT on 3,200 samples of the gamma=5 prover")
    policy_dir = cached(
        out / "planted" / "policy", asdict(policy_cfg), lambda d: train_base_policy(task, d, policy_cfg)
    )
    tok = load_tokenizer(policy_dir)
    train_ds = Dataset.from_dict({"prompt": [task.prompt] * 4096, "gold": [""] * 4096})

    def evaluate(model) -> float:
        pol = HFPolicy(model, tok, task.step_format, max_new_tokens=24, batch_size=512)
        return sampled_accuracy(pol, [task.prompt] * 512, [""] * 512, task.grader, seed=3)

    base_acc = evaluate(AutoModelForCausalLM.from_pretrained(policy_dir))
    progress(f"planted base policy success {base_acc:.3f}")

    def run_arm_with_tokens(gamma: float | None, steps: int, seed: int, mc_rollouts: int | None = None) -> dict:
        """One GRPO run: its success curve and the generated tokens (policy + rollouts) after each step. The
        process term comes from the γ prover's exact values, or (`mc_rollouts`) from that many rollouts of the
        prover per state, online (`MCStepScorer`)."""
        key = {
            "gamma": gamma,
            "steps": steps,
            "seed": seed,
            "alpha": cfg.planted_alpha,
            "policy": asdict(policy_cfg),
            "mc_rollouts": mc_rollouts,
            "record": "points+tokens",
        }

        def train():
            curve = AccuracyCurveCallback(evaluate, max(1, steps // 10))
            tokens = GeneratedTokensCallback()
            run_dir = out / "planted" / "rl" / f"{gamma}-{seed}-{mc_rollouts}"
            kw = {"max_completion_length": 24, "learning_rate": 1e-3}
            common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve, tokens]}
            if gamma is None:
                args = rl_args(GRPOConfig, run_dir, steps, seed, scale_rewards="none", **kw)
                trainer = GRPOTrainer(str(policy_dir), [grader_reward(task.grader)], args=args, **common)
            else:
                if mc_rollouts is None:
                    verifier = PlantedOracleScorer(task, gamma)
                else:  # the prover's values estimated by its own rollouts; seeded apart from the policy's samples
                    verifier = MCStepScorer(
                        PlantedProverPolicy(task, gamma), task.grader, n_rollouts=mc_rollouts, seed=1000 + seed
                    )
                args = rl_args(PAVGRPOConfig, run_dir, steps, seed, pav_alpha=cfg.planted_alpha, prover_k=1, **kw)
                trainer = PAVGRPOTrainer(
                    str(policy_dir), [grader_reward(task.grader)], verifier=verifier, args=args, **common
                )
            trainer.remove_callback(PrinterCallback)  # progress goes through the demo's log, not stdout
            trainer.train()
            shutil.rmtree(run_dir, ignore_errors=True)
            return {"points": curve.points, "tokens": tokens.per_step}

        arm = "outcome" if gamma is None else f"gamma{gamma:g}" + ("" if mc_rollouts is None else f"-mc{mc_rollouts}")
        record = cached_json(out / "planted" / "rl" / f"{arm}-{steps}-{seed}.json", key, train)
        return {"points": [tuple(p) for p in record["points"]], "tokens": [tuple(t) for t in record["tokens"]]}

    def run_arm(gamma: float | None, steps: int, seed: int) -> list[tuple[int, float]]:
        return run_arm_with_tokens(gamma, steps, seed)["points"]

    progress(
        f"planted RL: effective reward with the gamma={cfg.planted_gamma:g} prover vs outcome-only, "
        f"{cfg.planted_rl_steps} steps, seeds {cfg.planted_seeds}"
    )
    runs = {
        "pav": [run_arm(cfg.planted_gamma, cfg.planted_rl_steps, s) for s in cfg.planted_seeds],
        "outcome": [run_arm(None, cfg.planted_rl_steps, s) for s in cfg.planted_seeds],
    }
    if cfg.planted_ppo_steps:
        from ..experiments import run_planted_ppo

        progress(
            f"planted PPO (learned critic, the paper's REINFORCE-with-baseline preset): gamma={cfg.planted_gamma:g} "
            f"prover vs outcome-only, {cfg.planted_ppo_steps} steps, seeds {cfg.planted_ppo_seeds}"
        )
        for arm, gamma in (("pav_ppo", cfg.planted_gamma), ("outcome_ppo", None)):
            runs[arm] = []
            for seed in cfg.planted_ppo_seeds:
                key = {"gamma": gamma, "steps": cfg.planted_ppo_steps, "seed": seed, "policy": asdict(policy_cfg)}
                points = cached_json(
                    out / "planted" / "ppo" / f"{arm}-{cfg.planted_ppo_steps}-{seed}.json",
                    key,
                    lambda gamma=gamma, seed=seed: run_planted_ppo(
                        policy_dir, out / "planted" / "ppo", gamma, cfg.planted_ppo_steps, seed, alpha=cfg.planted_alpha
                    ),
                )
                runs[arm].append([tuple(p) for p in points])
    to_90 = {arm: [iterations_to_reach(c, 0.9) for c in curves] for arm, curves in runs.items()}
    mc = _mc_arms(cfg, run_arm_with_tokens, progress) if cfg.planted_mc_rollouts else None
    progress(f"prover-strength sweep over gamma in {cfg.gamma_sweep}, seeds {cfg.gamma_sweep_seeds}")
    sweep_seeds = cfg.gamma_sweep_seeds
    outcome_curves = [run_arm(None, cfg.gamma_sweep_steps, s) for s in sweep_seeds]
    outcome_finals = [c[-1][1] for c in outcome_curves]
    outcome_means = [mean_success_over_training(c) for c in outcome_curves]
    sweep = []
    for g in cfg.gamma_sweep:
        curves = [run_arm(g, cfg.gamma_sweep_steps, s) for s in sweep_seeds]
        per_seed = [c[-1][1] for c in curves]
        means = [mean_success_over_training(c) for c in curves]
        sweep.append(
            {
                "gamma": g,
                "final_accuracy": float(np.mean(per_seed)),
                "final_accuracy_per_seed": per_seed,
                "interval": list(t_interval(per_seed)),
                # Paired by seed: the same seed's outcome-only run.
                "gain_over_outcome": list(t_interval([a - b for a, b in zip(per_seed, outcome_finals)])),
                # Success averaged over training (area under the curve): how much sooner it learns.
                "mean_success": float(np.mean(means)),
                "mean_success_per_seed": means,
                "mean_success_gain_over_outcome": list(t_interval([a - b for a, b in zip(means, outcome_means)])),
            }
        )
    outcome_sweep = float(np.mean(outcome_finals))
    window = [r["gamma"] for r in sweep if sweep_gains(r, len(sweep_seeds))]
    window_span = [min(window), max(window)] if window else None
    progress(f"prover selection (Theorem 3.1's terms) over gamma in {cfg.gamma_sweep}, alpha={cfg.planted_alpha:g}")
    selection = prover_selection(task, cfg.gamma_sweep, cfg.planted_alpha, cfg.seed)
    selection["window"] = window_span
    selection["gaining_gammas"] = window  # the window's span may hold γ values that did not gain
    selection["in_window"] = None if not window else selection["best_gamma"] in window
    finals = {arm: [c[-1][1] for c in curves] for arm, curves in runs.items()}
    progress(f"planted search with exact values: PAV beam vs Q-only beam, N in {cfg.search_budgets}")
    search_key = {
        "gamma": PLANTED_SEARCH_GAMMA,
        "cfg": [cfg.search_problems, cfg.search_budgets, cfg.search_alpha, cfg.prover_k, cfg.seed],
        "comparison": "running best vs running best, total tokens",  # the comparison this cache holds
    }
    exact_search = cached_json(out / "planted" / "search.json", search_key, lambda: _exact_search(task, cfg))
    gain = t_interval([p - o for p, o in zip(finals["pav"], finals["outcome"])])
    return {
        "exact_search": exact_search,
        "final_gain_interval": list(gain),
        "base_policy_success": base_acc,
        "curves": {arm: seed_summary(curves) for arm, curves in runs.items()},
        "ppo_iterations_to_90": {arm: to_90[arm] for arm in ("pav_ppo", "outcome_ppo") if arm in to_90},
        "iterations_to_90": to_90,
        "pav_iterations_to_90": _median_or_none(to_90["pav"]),
        "outcome_iterations_to_90": _median_or_none(to_90["outcome"]),
        "pav_final_accuracy": float(np.mean(finals["pav"])),
        "outcome_final_accuracy": float(np.mean(finals["outcome"])),
        "final_accuracy_per_seed": finals,
        "seeds": len(cfg.planted_seeds),
        "gamma_sweep": sweep,
        "gamma_sweep_outcome_accuracy": outcome_sweep,
        "gamma_sweep_outcome_per_seed": outcome_finals,
        "gamma_sweep_outcome_mean_success": float(np.mean(outcome_means)),
        "gamma_sweep_seeds": list(sweep_seeds),
        "gamma_window": window_span,
        "mc_advantages": mc,
        "prover_selection": selection,
    }


def prover_selection(task, gammas: list[float], alpha: float, seed: int, traces: int = 128) -> dict:
    """`select_prover` over the sweep's γ provers, before any RL: Theorem 3.1's terms with exact values, on states
    of the γ = 5 procedural policy (the policy the planted base policy imitates; its own `Q^π` has no exact form),
    for the planted RL's α. The planted stage compares its choice with the window the sweep measures.

    Returns:
        `{"stand_in_gamma", "alpha", "best_gamma", "ranking": [{"gamma", "rank", "score", "score_interval",
        "distinguishability", "alignment"}, ...]}`, best first.
    """
    from ..prover_selection import ProverCandidate, ProverSelectionConfig, select_prover
    from ..tasks import PlantedOracleScorer, PlantedProverPolicy

    by_name = {f"gamma{g:g}": g for g in gammas}
    rows = select_prover(
        PlantedProverPolicy(task, PLANTED_SEARCH_GAMMA),
        [task.prompt] * traces,
        task.grader,
        [ProverCandidate(name, scorer=PlantedOracleScorer(task, g)) for name, g in by_name.items()],
        ProverSelectionConfig(alpha=alpha, num_bootstrap=300, seed=seed),
        scorer=PlantedOracleScorer(task, PLANTED_SEARCH_GAMMA),
    )
    ranking = [
        {
            "gamma": by_name[r.name],
            "rank": r.rank,
            "score": r.score,
            "score_interval": list(r.score_interval),
            "distinguishability": r.distinguishability,
            "alignment": r.alignment,
        }
        for r in rows
    ]
    return {
        "stand_in_gamma": PLANTED_SEARCH_GAMMA,
        "alpha": alpha,
        "best_gamma": ranking[0]["gamma"],
        "ranking": ranking,
    }


def sweep_gains(row: dict, seeds: int) -> bool:
    """Whether one γ of the sweep is in the window: PAV-RL learns faster than outcome-only RL, i.e. its success
    averaged over training beats the same seed's outcome-only run with a paired interval above 0 (one seed: by more
    than 5 points). Final success is reported beside it but does not define the window: at a budget where both arms
    saturate it cannot tell them apart. Rows recorded before the mean success existed use their final gain.

    Example:
        >>> sweep_gains({"mean_success_gain_over_outcome": [0.3, 0.1, 0.5]}, seeds=3)
        True
    """
    gain = row.get("mean_success_gain_over_outcome", row.get("gain_over_outcome"))
    if gain is None:
        return False
    return gain[1] > 0 if seeds > 1 else gain[0] > 0.05


PLANTED_SEARCH_GAMMA = 5.0  # the procedural prover whose samples the planted base policy is trained on


def _exact_search(task, cfg) -> dict:
    """PAV beam against Q-only beam on the planted task with exact values: the base policy is the γ=5 procedural
    policy (the one the planted SFT policy imitates) and the verifier its exact DP values, so any difference between
    the two searches is the method's alone. `cfg.search_problems` independent searches per budget."""
    from ..search import BeamSearchConfig, ComputeLedger, ReusingPolicy, ReusingScorer, beam_search
    from ..tasks import PlantedOracleScorer, PlantedProverPolicy
    from .search import bootstrap_comparison

    # The two searches share every sample they both ask for (same seeds); each is charged its own.
    policy = ReusingPolicy(PlantedProverPolicy(task, PLANTED_SEARCH_GAMMA))
    scorer = ReusingScorer(PlantedOracleScorer(task, PLANTED_SEARCH_GAMMA))
    prompts = [task.prompt] * cfg.search_problems
    curves = {}
    for method, alpha in (("pav_beam", cfg.search_alpha), ("q_beam", 0.0)):
        curves[method] = []
        for n in cfg.search_budgets:
            ledger = ComputeLedger()
            beam_cfg = BeamSearchConfig(budget=max(n, 3), alpha=alpha, prover_k=cfg.prover_k, seed=cfg.seed)
            results = beam_search(policy, scorer, prompts, beam_cfg, ledger)
            correct = [task.grader.grade(task.step_format.join(r.steps)) for r in results]
            curves[method].append(
                {"n": n, "accuracy": float(np.mean(correct)), "per_problem_correct": correct, **ledger.totals()}
            )
    return {
        "gamma": PLANTED_SEARCH_GAMMA,
        "base_success_probability": task.success_probability(PLANTED_SEARCH_GAMMA),
        "curves": curves,
        "pav_vs_q": bootstrap_comparison(curves["pav_beam"], curves["q_beam"], cfg.bootstrap_samples, cfg.seed),
    }


def _mc_arms(cfg, run_arm_with_tokens, progress) -> dict:
    """Exact prover values against the same prover's values estimated online by n rollouts per state, and outcome
    only, on paired seeds, counted in generated tokens (policy completions + rollouts; the exact oracle costs none).

    Per arm: iterations and tokens to 90% success per seed, final success per seed, rollout tokens per step; and for
    each n the paired ratio of its tokens to 90% over the exact arm's (seeds where both got there)."""
    gamma, steps, seeds = cfg.planted_gamma, cfg.planted_rl_steps, cfg.planted_seeds
    progress(
        f"planted RL with Monte-Carlo prover advantages: n in {cfg.planted_mc_rollouts} rollouts of the "
        f"gamma={gamma:g} prover per state, vs its exact values and outcome-only, {steps} steps, seeds {seeds}"
    )
    arms = {"outcome": (None, None), "exact": (gamma, None)}
    arms.update({f"mc{n}": (gamma, n) for n in cfg.planted_mc_rollouts})
    out: dict = {"gamma": gamma, "steps": steps, "seeds": list(seeds), "arms": {}}
    for name, (g, n) in arms.items():
        records = [run_arm_with_tokens(g, steps, seed, n) for seed in seeds]
        rollout = [r["tokens"][-1][2] / max(len(r["tokens"]), 1) if r["tokens"] else 0.0 for r in records]
        out["arms"][name] = {
            "mc_rollouts": n,
            "iterations_to_90": [iterations_to_reach(r["points"], 0.9) for r in records],
            "tokens_to_90": [tokens_to_reach(r["points"], r["tokens"], 0.9) for r in records],
            "final_accuracy": [r["points"][-1][1] for r in records],
            "total_tokens": [r["tokens"][-1][1] + r["tokens"][-1][2] if r["tokens"] else 0 for r in records],
            "rollout_tokens_per_step": float(np.mean(rollout)),
            "curves": seed_summary([r["points"] for r in records]),
        }
    exact = out["arms"]["exact"]["tokens_to_90"]
    for name in arms:
        if name.startswith("mc"):
            mine = out["arms"][name]["tokens_to_90"]
            ratios = [m / e for m, e in zip(mine, exact) if m is not None and e is not None and e > 0]
            out["arms"][name]["tokens_to_90_over_exact"] = list(t_interval(ratios)) if ratios else None
            out["arms"][name]["seeds_reaching_90"] = sum(m is not None for m in mine)
    return out


def _median_or_none(values: list[int | None]) -> float | None:
    """Median iterations over seeds, counting a seed that never got there as infinitely slow (None if most did not)."""
    x = sorted(float("inf") if v is None else v for v in values)
    med = x[len(x) // 2] if len(x) % 2 else (x[len(x) // 2 - 1] + x[len(x) // 2]) / 2
    return None if med == float("inf") else med
