"""The planted-subsequence experiment (the paper's didactic task) with exact DP values of the procedural prover:
PAV-RL (GRPO) with the γ prover's effective reward against outcome-only RL over several seeds, the same comparison
with PPO and a learned critic (`experiments.run_planted_ppo`), and a γ sweep."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import (
    AccuracyCurveCallback,
    GeneratedTokensCallback,
    iterations_to_reach,
    mean_success_over_training,
    tokens_to_reach,
)
from ..experiments.arithmetic_verifiers import VerifierRecipe
from ..mc_values import MCStepScorer
from .common import cached, cached_json, rl_args, seed_summary, t_interval

if TYPE_CHECKING:
    from ..generation import Policy
    from ..modeling import StepScorer
    from ..tasks import PlantedTask

__all__ = [
    "learned_arm_name",
    "learned_pav",
    "planted_pav_fit",
    "planted_pav_recipe",
    "prover_lookahead",
    "prover_selection",
    "refresh_arm_name",
    "run",
    "sweep_gains",
]


def run(cfg, out: Path, progress) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from ..evaluation import sampled_accuracy
    from ..generation import HFPolicy
    from ..modeling import PAVVerifier
    from ..tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask, default_policy_config, train_base_policy
    from ..tokenization import load_tokenizer
    from ..trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    task = cfg.planted_task()
    policy_cfg = replace(default_policy_config(task), seed=cfg.seed)
    # What every cached planted result rests on: the task, except the default one (whose caches predate the
    # setting), and the policy's settings.
    task_key = {} if task == PlantedTask() else {"task": planted_task_record(task)}
    policy_key = asdict(policy_cfg) | task_key
    progress(f"planted {planted_task_record(task)}: base policy by SFT on 3,200 samples of the gamma=5 prover")
    policy_dir = cached(out / "planted" / "policy", policy_key, lambda d: train_base_policy(task, d, policy_cfg))
    tok = load_tokenizer(policy_dir)
    train_ds = Dataset.from_dict({"prompt": [task.prompt] * 4096, "gold": [""] * 4096})

    # A trace is `length` one-letter steps and their separators (2 * length - 1 characters) and the EOS: 24 tokens
    # for the default task leave room for a few stray ones.
    limits = {"max_new_tokens": 2 * task.length + 4}

    def evaluate(model) -> float:
        pol = HFPolicy(model, tok, task.step_format, batch_size=512, **limits)
        return sampled_accuracy(pol, [task.prompt] * 512, [""] * 512, task.grader, seed=3)

    base_acc = evaluate(AutoModelForCausalLM.from_pretrained(policy_dir))
    progress(f"planted base policy success {base_acc:.3f}")

    def run_arm_with_tokens(
        gamma: float | None,
        steps: int,
        seed: int,
        mc_rollouts: int | None = None,
        learned: dict | None = None,
        refresh: int | None = None,
    ) -> dict:
        """One GRPO run: its success curve and the tokens (policy + rollouts + verifier reads) after each step. The
        process term comes from the γ prover's exact values, from that many rollouts of the prover per state online
        (`mc_rollouts`, `MCStepScorer`), or from a verifier trained to predict them (`learned`, `learned_pav`). With
        `refresh` (and `gamma=None`) the prover is Best-of-K of the policy itself, valued by `mc_rollouts` rollouts
        of a frozen copy of the base policy per state, whose weights are replaced by the trained policy's every
        `refresh` steps (0: never, the fixed prover)."""
        key = {
            "gamma": gamma,
            "steps": steps,
            "seed": seed,
            "alpha": cfg.planted_alpha,
            "policy": policy_key,
            "mc_rollouts": mc_rollouts,
            "record": "points+tokens",
        }
        if gamma is not None or refresh is not None:  # PAV arms: a stepless completion is charged from the root
            key["stepless_terminal"] = "root"
        if learned is not None:
            key["learned"] = learned["key"]
        if mc_rollouts is not None:
            key["rollout_unit"] = "policy tokens"  # the prover's rollouts counted as the policy's characters
        if refresh is not None:
            key["prover"] = {
                "best_of_k": min(cfg.prover_k, mc_rollouts),
                "of": "policy (frozen copy)",
                "refresh_every": refresh,
                "step_format": task.step_format.to_dict(),
                "copy": "detached",  # before detached_copy the frozen prover ran the trained policy's weights
            }

        def train():
            curve = AccuracyCurveCallback(evaluate, max(1, steps // 10))
            tokens = GeneratedTokensCallback()
            run_dir = out / "planted" / "rl" / f"{gamma}-{seed}-{mc_rollouts}-{learned and learned['arm']}-{refresh}"
            kw = {"max_completion_length": limits["max_new_tokens"], "learning_rate": 1e-3}
            common = {"train_dataset": train_ds, "processing_class": tok, "callbacks": [curve, tokens]}
            if refresh is not None:
                verifier = MCStepScorer(
                    "frozen",
                    task.grader,
                    n_rollouts=mc_rollouts,
                    prover_k=min(cfg.prover_k, mc_rollouts),  # the unbiased estimator needs K <= n
                    seed=1000 + seed,
                    refresh_every=refresh or None,
                    step_format=task.step_format,  # the rollout policy is bound later; the trainer splits steps by it
                )
                # Rollouts of the 1M policy in large batches: the trainer's default of 32 per forward pass would make
                # each step dozens of generate calls.
                args = rl_args(
                    PAVGRPOConfig,
                    run_dir,
                    steps,
                    seed,
                    pav_alpha=cfg.planted_alpha,
                    prover_k=1,  # the scorer applies Best-of-K itself
                    verifier_batch_size=512,
                    **kw,
                )
                trainer = PAVGRPOTrainer(
                    str(policy_dir), [grader_reward(task.grader)], verifier=verifier, args=args, **common
                )
            elif gamma is None:
                args = rl_args(GRPOConfig, run_dir, steps, seed, scale_rewards="none", **kw)
                trainer = GRPOTrainer(str(policy_dir), [grader_reward(task.grader)], args=args, **common)
            else:
                if learned is not None:
                    verifier = PAVVerifier.from_pretrained(learned["verifier"])
                elif mc_rollouts is None:
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
        arm += f"-{learned['arm']}" if learned is not None else ""
        if refresh is not None:
            arm = f"{refresh_arm_name(refresh, min(cfg.prover_k, mc_rollouts))}-mc{mc_rollouts}"
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
                key = {"gamma": gamma, "steps": cfg.planted_ppo_steps, "seed": seed, "policy": policy_key}
                if gamma is not None:  # as the GRPO arms: a stepless completion is charged from the root
                    key["stepless_terminal"] = "root"
                points = cached_json(
                    out / "planted" / "ppo" / f"{arm}-{cfg.planted_ppo_steps}-{seed}.json",
                    key,
                    lambda gamma=gamma, seed=seed: run_planted_ppo(
                        policy_dir,
                        out / "planted" / "ppo",
                        gamma,
                        cfg.planted_ppo_steps,
                        seed,
                        alpha=cfg.planted_alpha,
                        task=task,
                    ),
                )
                runs[arm].append([tuple(p) for p in points])
    to_90 = {arm: [iterations_to_reach(c, 0.9) for c in curves] for arm, curves in runs.items()}
    learned: dict[str, dict] = {}
    copies = [(share, v) for share in cfg.planted_pav_prover_shares for v in cfg.planted_pav_seeds]
    for share, verifier_seed in copies if cfg.planted_pav_traces else []:
        progress(
            f"planted learned PAV: {cfg.planted_pav_traces} traces ({share:.0%} from the prover, the rest from the "
            f"base policy) labeled by {PLANTED_PAV_N_MC} rollouts of the gamma={cfg.planted_gamma:g} prover per "
            f"step, verifier trained from the base policy (verifier seed {verifier_seed})"
        )
        recipe = planted_pav_recipe(cfg.planted_pav_verifier_steps, verifier_seed)
        pav_key = {  # everything that changes the verifier or its measured fit
            "gamma": cfg.planted_gamma,
            "traces": cfg.planted_pav_traces,
            "prover_share": share,
            "seed": verifier_seed,
            "policy": policy_key,
            "limits": limits,
            "step_format": task.step_format.to_dict(),
            "labels": [PLANTED_PAV_N_COV, PLANTED_PAV_N_MC, PLANTED_PAV_STRATEGY, "policy tokens", "seeds 2s, 2s+1"],
            "recipe": asdict(recipe),
            "class_balanced": PLANTED_PAV_CLASS_BALANCED,
            "fit": [PLANTED_PAV_FIT_TRACES, PLANTED_PAV_FIT_SEED],
        }
        arm = learned_arm_name(share, None if verifier_seed == cfg.seed else verifier_seed)
        folder = cached(
            out / "planted" / arm,
            pav_key,
            lambda d, share=share, recipe=recipe, verifier_seed=verifier_seed: (d / "summary.json").write_text(
                json.dumps(
                    learned_pav(
                        task,
                        HFPolicy(AutoModelForCausalLM.from_pretrained(policy_dir), tok, task.step_format, **limits),
                        policy_dir,
                        cfg.planted_gamma,
                        cfg.planted_pav_traces,
                        verifier_seed,
                        d,
                        prover_share=share,
                        recipe=recipe,
                    )
                )
            ),
        )
        # The verifier's path from this run's folder: a moved output folder still finds it.
        summary = json.loads((folder / "summary.json").read_text())
        learned[arm] = {
            **summary,
            "verifier": str(folder / "verifier"),
            "key": pav_key,
            "arm": arm,
            "verifier_seed": verifier_seed,
            "copy_of": learned_arm_name(share),  # copies on other verifier seeds share this name
        }
    any_mc = cfg.planted_mc_rollouts or learned or cfg.planted_prover_refresh
    mc = _mc_arms(cfg, run_arm_with_tokens, progress, learned) if any_mc else None
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
    progress(f"prover lookahead (the trained base policy tilted by each prover's advantages) over {cfg.gamma_sweep}")
    lookahead_key = {
        "policy": policy_key,
        "gammas": cfg.gamma_sweep,
        "config": asdict(planted_lookahead_config(task, cfg.planted_alpha, cfg.seed)),
        "traces": PLANTED_LOOKAHEAD_TRACES,
        "rules": "max_steps leaves one end-of-sequence draw; grades thresholded",
    }

    def lookahead_of_base() -> dict:
        model = AutoModelForCausalLM.from_pretrained(policy_dir)
        base = HFPolicy(model, tok, task.step_format, batch_size=1024, **limits)
        return prover_lookahead(task, base, cfg.gamma_sweep, cfg.planted_alpha, cfg.seed)

    lookahead = cached_json(out / "planted" / "lookahead.json", lookahead_key, lookahead_of_base)
    lookahead["in_window"] = None if not window else lookahead["best_gamma"] in window
    selection["lookahead"] = lookahead
    finals = {arm: [c[-1][1] for c in curves] for arm, curves in runs.items()}
    progress(f"planted search with exact values: PAV beam vs Q-only beam, N in {cfg.search_budgets}")
    search_key = {
        **task_key,
        "gamma": PLANTED_SEARCH_GAMMA,
        "cfg": [cfg.search_problems, cfg.search_budgets, cfg.search_alpha, cfg.prover_k, cfg.seed],
        "comparison": "running best vs running best, total tokens",  # the comparison this cache holds
    }
    exact_search = cached_json(out / "planted" / "search.json", search_key, lambda: _exact_search(task, cfg))
    gain = t_interval([p - o for p, o in zip(finals["pav"], finals["outcome"])])
    return {
        "task": planted_task_record(task),
        "exact_search": exact_search,
        "final_gain_interval": list(gain),
        "base_policy_success": base_acc,
        "curves": {arm: seed_summary(curves) for arm, curves in runs.items()},
        "curves_per_seed": {arm: [[list(p) for p in c] for c in curves] for arm, curves in runs.items()},
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
    ranking = _gamma_ranking(rows, by_name, ("distinguishability", "alignment"))
    return {
        "stand_in_gamma": PLANTED_SEARCH_GAMMA,
        "alpha": alpha,
        "best_gamma": ranking[0]["gamma"],
        "ranking": ranking,
    }


def _gamma_ranking(rows, by_name: dict[str, float], fields: tuple[str, ...]) -> list[dict]:
    """Ranked rows of γ provers as JSON: γ, rank, score and its interval, and the named fields."""
    return [
        {
            "gamma": by_name[r.name],
            "rank": r.rank,
            "score": r.score,
            "score_interval": list(r.score_interval),
            **{f: getattr(r, f) for f in fields},
        }
        for r in rows
    ]


PLANTED_LOOKAHEAD_TRACES = 256  # tilted traces per prover and step size (about 15 s for 7 provers)


def planted_lookahead_config(task, alpha: float, seed: int):
    """The lookahead's settings in the planted stage: the library defaults, a trace ends after `length` steps."""
    from ..prover_lookahead import ProverLookaheadConfig

    return ProverLookaheadConfig(alpha=alpha, num_bootstrap=300, seed=seed, max_steps=task.length)


def prover_lookahead(
    task, policy: Policy, gammas: list[float], alpha: float, seed: int, traces: int = PLANTED_LOOKAHEAD_TRACES
) -> dict:
    """`lookahead_provers` over the sweep's γ provers on the trained base policy itself (no stand-in): its success
    after idealised natural-gradient steps on each prover's exact advantages, averaged over the default step sizes.

    Returns:
        `{"alpha", "step_sizes", "base_success", "best_gamma", "ranking": [{"gamma", "rank", "score",
        "score_interval", "success"}, ...]}`, best first.
    """
    from ..prover_lookahead import lookahead_provers
    from ..prover_selection import ProverCandidate
    from ..tasks import PlantedOracleScorer

    by_name = {f"gamma{g:g}": g for g in gammas}
    cfg = planted_lookahead_config(task, alpha, seed)
    out = lookahead_provers(
        policy,
        [task.prompt] * traces,
        task.grader,
        [ProverCandidate(name, scorer=PlantedOracleScorer(task, g)) for name, g in by_name.items()],
        cfg,
    )
    ranking = _gamma_ranking(out.ranking, by_name, ("success",))
    return {
        "alpha": alpha,
        "step_sizes": out.step_sizes,
        "base_success": out.base_success,
        "best_gamma": ranking[0]["gamma"],
        "ranking": ranking,
    }


# Rollouts per state of the prover-refresh arms: the largest planted MC arm's n (smaller ones reached 90% on no seed).
PLANTED_REFRESH_N_MC = 8
PLANTED_PAV_N_COV = 4  # seed traces of the base policy per labeled problem (all problems share the one prompt)
PLANTED_PAV_N_MC = 20  # the paper's rollouts per labeled prefix: the γ prover's rollouts are procedural and cheap
# Every step labeled, not the paper's first pit: first pit assumes a state whose rollouts all fail stays lost, as a
# wrong math step does, but the γ prover recovers from any state until the deadline, so the steps after a (often
# false) pit, where planted progress is made, went unlabeled and the verifier's advantages did not fit (measured on
# validation traces, docs/mc_advantages.md).
PLANTED_PAV_STRATEGY = "all"
# Unbalanced loss: advantages are differences of values, so the values must stay calibrated; balancing the classes
# at 0.5 would reweight the few labels above it (docs/deviations.md).
PLANTED_PAV_CLASS_BALANCED = False
PLANTED_PAV_FIT_TRACES = 256  # fresh traces per fit measurement
PLANTED_PAV_FIT_SEED = 7919  # added to the verifier seed: the fit's traces are not the labeled ones


def planted_pav_recipe(verifier_steps: int = 2000, seed: int = 0) -> VerifierRecipe:
    """How the learned planted PAV is trained: `verifier_steps` at most (early stopping on held-out loss), learning
    rate 1e-3 (the planted backbone is 64 wide: larger than the realistic verifiers' 3e-5), no likelihood head
    (the base policy's likelihood says nothing about the prover's values), K = 1 (the labels are the prover's).

    Example:
        >>> planted_pav_recipe(500).verifier_steps, planted_pav_recipe().prover_k
        (500, 1)
    """
    return VerifierRecipe(
        verifier_steps=verifier_steps,
        verifier_learning_rate=1e-3,
        verifier_likelihood_head=False,
        prover_k=1,
        seed=seed,
    )


def learned_pav(
    task: PlantedTask,
    policy: Policy,
    backbone_dir: Path,
    gamma: float,
    traces: int,
    seed: int,
    folder: Path,
    prover_share: float = 0.0,
    strategy: str = PLANTED_PAV_STRATEGY,
    recipe: VerifierRecipe | None = None,
) -> dict:
    """The learned planted PAV: seed traces labeled by n_mc = 20 rollouts of the γ prover per labeled prefix
    (`Q̂^μ`, target `q_mu`; `strategy`: every step by default, or the paper's `"first_pit"`), and a verifier trained
    on them from the weights in `backbone_dir` (`train_verifier` with `recipe`, default `planted_pav_recipe()`;
    pointwise loss), with its fitting error against the exact DP values.

    The seed traces come from the base `policy` (a `Policy`; the paper's recipe), except a `prover_share` of them
    drawn from the γ prover itself: a weak base policy rarely reaches states where planted symbols are matched, which
    are the states an improving policy visits and where the exact advantages are large. The base part is labeled on
    seed `2 * seed` and the prover's on `2 * seed + 1`: no two parts, of this PAV or of one on another seed, share
    rollouts.

    Writes `folder/labels` (and `folder/labels-prover`) and `folder/verifier`. Returns `{"verifier",
    "labeling_tokens", "labeled_traces", "labels", "prover_share", "training", "fit", "fit_on_prover_states"}`:
    `labeling_tokens` is what labeling generated (seed traces + rollouts), the one-off cost an RL arm with this
    verifier pays before its first step; `fit` and `fit_on_prover_states` (`planted_pav_fit`) compare its values
    and advantages with the exact ones on fresh traces of `policy` and of the prover.
    """
    from datasets import concatenate_datasets

    from ..experiments.arithmetic_verifiers import train_verifier
    from ..labeling import MCLabelConfig, MCLabeler
    from ..modeling import PAVVerifier
    from ..tasks import PlantedProverPolicy

    if not 0.0 <= prover_share <= 1.0:
        raise ValueError(f"prover_share must be in [0, 1], got {prover_share}")
    if traces < PLANTED_PAV_N_COV:
        raise ValueError(f"traces must be at least {PLANTED_PAV_N_COV} (one labeled problem), got {traces}")
    config = MCLabelConfig(
        n_cov=PLANTED_PAV_N_COV,
        n_mc=PLANTED_PAV_N_MC,
        strategy=strategy,
        prover="policy",
        seed=seed,
        show_progress=False,
    )
    prover = PlantedProverPolicy(task, gamma)
    problems = max(1, traces // PLANTED_PAV_N_COV)
    from_prover = round(problems * prover_share)
    parts, metas, offset = [], [], 0
    sources = ((policy, problems - from_prover, "labels", 0), (prover, from_prover, "labels-prover", 1))
    for source, n, name, seed_shift in sources:
        if n == 0:
            continue
        # Rollouts are seeded by (seed, problem, prefix) and every problem has the one prompt: each part gets its own
        # seed, 2 * seed + shift, or its roots and shared prefixes would repeat the other part's rollouts (or those of
        # a copy on the next seed).
        part_seed = 2 * seed + seed_shift
        labeler = MCLabeler(source, task.grader, replace(config, seed=part_seed), prover_policy=prover)
        part = labeler.label(task.problems_dataset(n), folder / name)
        if offset:  # problems stay distinct for the held-out split
            part = part.map(lambda r, shift=offset: {"problem_index": r["problem_index"] + shift})
        parts.append(part)
        metas.append(labeler.last_metadata)
        offset += n
    labels = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    recipe = recipe or planted_pav_recipe(seed=seed)
    separator = task.step_format.separator
    train_verifier(
        backbone_dir,
        labels,
        folder / "verifier",
        "pav",
        recipe,
        step_separator=separator,
        class_balanced=PLANTED_PAV_CLASS_BALANCED,
    )
    verifier = PAVVerifier.from_pretrained(folder / "verifier")
    return {
        "verifier": str(folder / "verifier"),
        "labeling_tokens": int(sum(m["generated_tokens"] for m in metas)),
        "labeled_traces": int(sum(m["num_traces"] for m in metas)),
        "labels": int(sum(m["num_labels"] for m in metas)),
        "prover_share": prover_share,
        "training": json.loads((folder / "verifier" / "training.summary.json").read_text()),
        "fit": planted_pav_fit(verifier, task, gamma, policy, seed + PLANTED_PAV_FIT_SEED),
        "fit_on_prover_states": planted_pav_fit(verifier, task, gamma, prover, seed + PLANTED_PAV_FIT_SEED),
    }


def planted_pav_fit(
    verifier: StepScorer,
    task: PlantedTask,
    gamma: float,
    policy: Policy,
    seed: int,
    traces: int = PLANTED_PAV_FIT_TRACES,
) -> dict:
    """A planted verifier's fitting error against the exact DP values of the γ prover, on `traces` fresh traces of
    `policy` (seeds apart from labeling's): mean absolute error of the values (root and every step) and of the
    one-step advantages, and the correlation of its advantages with the exact ones (None when either is constant);
    `by_match_state` splits the advantage error by the planted symbols matched before each step (-1: after an
    invalid step).

    Example:
        >>> from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
        >>> task = PlantedTask()
        >>> fit = planted_pav_fit(PlantedOracleScorer(task, 10.0), task, 10.0, PlantedProverPolicy(task, 5.0), 0, 8)
        >>> fit["value_mae"], fit["advantage_mae"], round(fit["advantage_corr"], 6)
        (0.0, 0.0, 1.0)
    """
    from ..generation import GenerationRequest

    gens = policy.generate([GenerationRequest(task.prompt, seed=seed * 100_003 + i) for i in range(traces)])
    steps = [g.steps for g in gens if g.steps]
    if not steps:
        raise ValueError(
            f"planted_pav_fit: policy {getattr(policy, 'name', policy)!r} wrote no step in {traces} traces"
        )
    predicted = verifier.score([task.prompt] * len(steps), steps)
    exact = [task.exact_values(gamma, s) for s in steps]
    pv = np.concatenate([np.asarray(v, dtype=float) for v in predicted])
    ev = np.concatenate([np.asarray(v, dtype=float) for v in exact])
    pa = np.concatenate([np.diff(np.asarray(v, dtype=float)) for v in predicted])
    ea = np.concatenate([np.diff(np.asarray(v, dtype=float)) for v in exact])
    # Each step by the planted symbols matched before it: progress states are rare under a weak base policy.
    matched = np.array([_match_before(task, s, h) for s in steps for h in range(len(s))])
    corr = float(np.corrcoef(pa, ea)[0, 1]) if pa.std() > 0 and ea.std() > 0 else None  # None: a constant side
    return {
        "traces": len(steps),
        "value_mae": float(np.abs(pv - ev).mean()),
        "advantage_mae": float(np.abs(pa - ea).mean()),
        "exact_advantage_mean_abs": float(np.abs(ea).mean()),
        "advantage_corr": corr,
        "by_match_state": [
            {
                "matched": int(k),
                "steps": int((matched == k).sum()),
                "advantage_mae": float(np.abs(pa - ea)[matched == k].mean()),
                "exact_advantage_mean_abs": float(np.abs(ea)[matched == k].mean()),
            }
            for k in np.unique(matched)
        ],
    }


def _match_before(task, steps, h: int) -> int:
    """Planted symbols matched by the first `h` steps (the match state step h moves from; -1 after an invalid
    step, where no symbol string is defined)."""
    symbols = task.encode(list(steps[:h]))
    return task.match_state(symbols) if symbols is not None else -1


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


def planted_task_record(task) -> dict:
    """The planted task's settings as results record them (the planted string in the traces' letters).

    Example:
        >>> from trl_pav.tasks import PlantedTask
        >>> planted_task_record(PlantedTask())
        {'vocab_size': 15, 'length': 10, 'planted': 'dgadf'}
    """
    return {"vocab_size": task.vocab_size, "length": task.length, "planted": "".join(task.decode(task.planted))}


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
            # One symbol per step: a trace is done after `length` steps, whatever the task's length.
            beam_cfg = BeamSearchConfig(
                budget=n, alpha=alpha, prover_k=cfg.prover_k, seed=cfg.seed, max_depth=task.length
            )
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


def _mc_arms(cfg, run_arm_with_tokens, progress, learned: dict[str, dict] | None = None) -> dict:
    """Where the prover's values come from, on paired seeds: its exact values, the same values estimated online by
    n rollouts per state (`MCStepScorer`), verifiers trained to predict them (`learned`: arm name → `learned_pav`'s
    record), and outcome only. Counted in tokens a user pays for: policy completions + rollouts + the tokens a
    learned verifier reads (the exact oracle costs none); a learned arm also paid its labeling once, before training.

    Per arm: iterations and tokens to 90% success per seed, final success per seed, rollout and verifier tokens
    per step; for every other arm the paired ratio of its tokens to 90% over the exact arm's (seeds where both got
    there), and for each n over every learned arm's with its labeling counted (`tokens_to_90_over_learned`)."""
    learned = learned or {}
    gamma, steps, seeds = cfg.planted_gamma, cfg.planted_rl_steps, cfg.planted_seeds
    refresh, refresh_k = cfg.planted_prover_refresh, min(cfg.prover_k, PLANTED_REFRESH_N_MC)
    sources = ([f"n in {cfg.planted_mc_rollouts} rollouts per state"] if cfg.planted_mc_rollouts else []) + (
        [f"{len(learned)} learned PAV(s)"] if learned else []
    )
    if refresh:
        sources.append(f"Bo{refresh_k} of the policy refreshed every {refresh} steps (0: fixed)")
    progress(
        f"planted RL with the gamma={gamma:g} prover's values from {' and '.join(sources)}, vs its exact values and "
        f"outcome-only, {steps} steps, seeds {seeds}"
    )
    arms: dict[str, tuple] = {"outcome": (None, None, None, None), "exact": (gamma, None, None, None)}
    arms.update({name: (gamma, None, record, None) for name, record in learned.items()})
    arms.update({f"mc{n}": (gamma, n, None, None) for n in cfg.planted_mc_rollouts})
    arms.update({refresh_arm_name(m, refresh_k): (None, PLANTED_REFRESH_N_MC, None, m) for m in refresh})
    out: dict = {"gamma": gamma, "steps": steps, "seeds": list(seeds), "arms": {}, "learned_pav": {}}
    for name, (g, n, verifier, every) in arms.items():
        records = [run_arm_with_tokens(g, steps, seed, n, verifier, every) for seed in seeds]
        out["arms"][name] = {
            "mc_rollouts": n,
            "learned": verifier is not None,
            "refresh_every": every,
            "mean_success": [mean_success_over_training(r["points"]) for r in records],
            "iterations_to_90": [iterations_to_reach(r["points"], 0.9) for r in records],
            "tokens_to_90": [tokens_to_reach(r["points"], r["tokens"], 0.9) for r in records],
            "final_accuracy": [r["points"][-1][1] for r in records],
            "total_tokens": [sum(r["tokens"][-1][1:]) if r["tokens"] else 0 for r in records],
            "rollout_tokens_per_step": float(np.mean([_per_step(r["tokens"], 2) for r in records])),
            "verifier_tokens_per_step": float(np.mean([_per_step(r["tokens"], 3) for r in records])),
            "curves": seed_summary([r["points"] for r in records]),
        }
        if every is not None:
            out["arms"][name]["prover_k"] = refresh_k
        if verifier is not None:
            arm = out["arms"][name]
            arm["labeling_tokens"] = verifier["labeling_tokens"]
            arm["prover_share"] = verifier["prover_share"]
            arm["verifier_seed"] = verifier["verifier_seed"]
            arm["tokens_to_90_with_labeling"] = [
                None if t is None else t + verifier["labeling_tokens"] for t in arm["tokens_to_90"]
            ]
            out["learned_pav"][name] = {
                k: v for k, v in verifier.items() if k not in ("verifier", "key", "arm", "copy_of")
            }
    exact = out["arms"]["exact"]["tokens_to_90"]
    for name in arms:
        if name in ("exact", "outcome"):
            continue
        mine = out["arms"][name]["tokens_to_90"]
        out["arms"][name]["tokens_to_90_over_exact"] = _paired_ratio(mine, exact)
        out["arms"][name]["seeds_reaching_90"] = sum(m is not None for m in mine)
        if name.startswith("mc") and learned:
            out["arms"][name]["tokens_to_90_over_learned"] = {
                other: _paired_ratio(mine, out["arms"][other]["tokens_to_90_with_labeling"]) for other in learned
            }
            out["arms"][name]["learned_break_even_runs"] = {
                other: _break_even_runs(mine, out["arms"][other]["tokens_to_90"], learned[other]["labeling_tokens"])
                for other in learned
            }
    out["prover_refresh"] = _refresh_comparison(out["arms"]) if refresh else None
    copies: dict[str, list[str]] = {}
    for name, record in learned.items():
        copies.setdefault(record.get("copy_of", name), []).append(name)
    out["learned_pooled"] = {
        recipe: _pooled_learned(out["arms"], names) for recipe, names in copies.items() if len(names) > 1
    }
    return out


def _refresh_comparison(arms: dict) -> dict:
    """The prover-refresh arms against the fixed prover and outcome-only RL, paired by seed: the gain in success
    averaged over training (how much sooner a run learns; `mean_success_over_training`) and in final success, each
    as `[mean, low, high]` (95% t-interval over seeds).

    Example:
        >>> arms = {"outcome": {"mean_success": [0.1, 0.2], "final_accuracy": [0.5, 0.5]},
        ...         "bo4_fixed": {"refresh_every": 0, "mean_success": [0.1, 0.3], "final_accuracy": [0.5, 0.7]},
        ...         "bo4_refresh50": {"refresh_every": 50, "mean_success": [0.3, 0.3], "final_accuracy": [0.9, 0.7]}}
        >>> out = _refresh_comparison(arms)
        >>> gain = out["bo4_refresh50"]["mean_success_gain_over_fixed"]
        >>> round(gain[0], 3), round(out["bo4_fixed"]["final_gain_over_outcome"][0], 3), sorted(out)
        (0.1, 0.1, ['bo4_fixed', 'bo4_refresh50'])
    """
    fixed = next((name for name, arm in arms.items() if arm.get("refresh_every") == 0), None)
    out = {}
    for name, arm in arms.items():
        if arm.get("refresh_every") is None:
            continue
        row = {}
        for other, label in (("outcome", "outcome"), (fixed, "fixed")):
            if other is None or other == name:
                continue
            row[f"mean_success_gain_over_{label}"] = _paired_gain(arm["mean_success"], arms[other]["mean_success"])
            row[f"final_gain_over_{label}"] = _paired_gain(arm["final_accuracy"], arms[other]["final_accuracy"])
        out[name] = row
    return out


def _paired_gain(mine: list[float], other: list[float]) -> list[float | None]:
    """`[mean, low, high]` of the per-seed differences (t-interval; one seed: no bounds, as `_paired_ratio`).

    Example:
        >>> [round(x, 3) for x in _paired_gain([0.5, 0.7, 0.6], [0.1, 0.2, 0.3])], _paired_gain([0.5], [0.25])
        ([0.4, 0.152, 0.648], [0.25, None, None])
    """
    diffs = [a - b for a, b in zip(mine, other)]
    return list(t_interval(diffs))


def refresh_arm_name(every: int, prover_k: int) -> str:
    """The arm name of a planted prover-refresh run: Best-of-K of the policy, fixed (`every=0`) or refreshed.

    Example:
        >>> refresh_arm_name(0, 4), refresh_arm_name(50, 4)
        ('bo4_fixed', 'bo4_refresh50')
    """
    return f"bo{prover_k}_fixed" if every == 0 else f"bo{prover_k}_refresh{every}"


def _pooled_learned(arms: dict, names: list[str]) -> dict:
    """One learned-PAV recipe over its copies on other verifier seeds (`names`, each an arm with runs on the same RL
    seeds): how many runs reached 90%, and its comparisons pooled over the copies (`_pooled_ratio`): its RL tokens
    to 90% over the exact arm's, and each MC arm's tokens over its tokens with labeling, with the runs where MC
    reached 90% and the copy did not (their ratios are left out, which favours the learned PAV).

    Example:
        >>> arms = {"exact": {"tokens_to_90": [10, 10]}, "mc8": {"mc_rollouts": 8, "tokens_to_90": [40, 40]}}
        >>> arms |= {n: {"tokens_to_90": t, "tokens_to_90_with_labeling": [None if x is None else x + 70 for x in t]}
        ...          for n, t in (("a", [10, 30]), ("a_v1", [10, None]))}
        >>> out = _pooled_learned(arms, ["a", "a_v1"])
        >>> out["runs_reaching_90"], out["mc_over_learned"]["mc8"][0], out["mc_reached_learned_missed"]["mc8"]
        (3, 0.475, 1)
    """
    mc_arms = [name for name, arm in arms.items() if name.startswith("mc") and arm.get("mc_rollouts")]
    exact = arms["exact"]["tokens_to_90"]
    return {
        "arms": list(names),
        "runs": sum(len(arms[n]["tokens_to_90"]) for n in names),
        "runs_reaching_90": sum(t is not None for n in names for t in arms[n]["tokens_to_90"]),
        "tokens_to_90_over_exact": _pooled_ratio([(arms[n]["tokens_to_90"], exact) for n in names]),
        "mc_over_learned": {
            m: _pooled_ratio([(arms[m]["tokens_to_90"], arms[n]["tokens_to_90_with_labeling"]) for n in names])
            for m in mc_arms
        },
        # How much sooner MC learns than each copy, as success averaged over training: defined on every run, also
        # where one of the two never reached 90%.
        "mean_success_mc_minus_learned": {
            m: _pooled_gain([(arms[m]["mean_success"], arms[n]["mean_success"]) for n in names])
            for m in mc_arms
            if "mean_success" in arms[m]
        },
        "mc_reached_learned_missed": {
            m: sum(
                a is not None and b is None
                for n in names
                for a, b in zip(arms[m]["tokens_to_90"], arms[n]["tokens_to_90"])
            )
            for m in mc_arms
        },
    }


def _pooled_gain(copies: list[tuple[list, list]]) -> list[float | None]:
    """`[mean, low, high]` over verifier seeds of each copy's mean paired difference `mine - other` over the RL seeds
    (t-interval over copies; `_pooled_ratio` says what it covers).

    Example:
        >>> [round(x, 3) for x in _pooled_gain([([0.5, 0.7], [0.1, 0.1]), ([0.5, 0.7], [0.5, 0.5])])]
        [0.3, -2.241, 2.841]
    """
    return list(t_interval([float(np.mean(np.subtract(mine, other))) for mine, other in copies]))


def _pooled_ratio(copies: list[tuple[list, list]]) -> list[float | None] | None:
    """`[mean, low, high]` over verifier seeds: each copy's mean `mine / other` over the RL seeds where both are known,
    then a t-interval over the copies (None: no copy has such a seed; one copy has: no bounds). The RL seeds are the
    same for every copy, so the interval covers the trained verifier's variance and each copy's RL noise, not RL
    seeds beyond those run.

    Example:
        >>> [round(x, 2) for x in _pooled_ratio([([10, 30], [5, 10]), ([20, None], [5, 5])])]  # copies 2.5 and 4
        [3.25, -6.28, 12.78]
        >>> _pooled_ratio([([None], [1])]) is None
        True
    """
    means = [r[0] for r in (_paired_ratio(mine, other) for mine, other in copies) if r is not None]
    if not means:
        return None
    return list(t_interval(means))


def _per_step(tokens: list, column: int) -> float:
    """Mean tokens per step in one column of a run's `GeneratedTokensCallback.per_step` record (0 where the record
    predates the column: planted runs cached before verifier reads were counted read none)."""
    return tokens[-1][column] / len(tokens) if tokens and len(tokens[-1]) > column else 0.0


def _break_even_runs(mc: list, learned: list, labeling: int) -> float | None:
    """RL runs after which a learned verifier, labeled once and reused, has spent no more tokens to 90% than MC
    advantages: labeling over the mean per-run saving on the seeds where both reached 90%. None where the verifier's
    arm missed 90% on a seed where MC reached it (a miss is no saving), where no seed has both, or where it saves
    nothing per run.

    Example:
        >>> _break_even_runs([900, 1000, None], [300, 200, 100], 1400), _break_even_runs([900, 1000], [300, None], 1)
        (2.0, None)
    """
    if any(m is not None and v is None for m, v in zip(mc, learned)):
        return None
    saved = [m - v for m, v in zip(mc, learned) if m is not None and v is not None]
    if not saved or np.mean(saved) <= 0:
        return None
    return float(labeling / np.mean(saved))


def learned_arm_name(prover_share: float, verifier_seed: int | None = None) -> str:
    """The arm (and folder) name of a learned planted PAV: `learned` for the paper's recipe (base-policy states only),
    `learned_mix<share>` with a share of prover traces; a copy trained on another verifier seed adds `_v<seed>`.

    Example:
        >>> learned_arm_name(0.0), learned_arm_name(0.5), learned_arm_name(0.5, 2)
        ('learned', 'learned_mix0.5', 'learned_mix0.5_v2')
    """
    name = "learned" if prover_share == 0 else f"learned_mix{prover_share:g}"
    return name if verifier_seed is None else f"{name}_v{verifier_seed}"


def _paired_ratio(mine: list, other: list) -> list[float | None] | None:
    """`[mean, low, high]`: t-interval of `mine / other` over the seeds where both are known (None: no such seed;
    one such seed: no bounds).

    Example:
        >>> _paired_ratio([10, None, 30], [5, 5, None]), _paired_ratio([None], [1])
        ([2.0, None, None], None)
    """
    ratios = [m / o for m, o in zip(mine, other) if m is not None and o is not None and o > 0]
    if not ratios:
        return None
    return list(t_interval(ratios))


def _median_or_none(values: list[int | None]) -> float | None:
    """Median iterations over seeds, counting a seed that never got there as infinitely slow (None if most did not)."""
    x = sorted(float("inf") if v is None else v for v in values)
    med = x[len(x) // 2] if len(x) % 2 else (x[len(x) // 2 - 1] + x[len(x) // 2]) / 2
    return None if med == float("inf") else med
