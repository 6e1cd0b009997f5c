"""`trl-pav demo`: a small-scale reproduction of the paper's claims on a CPU, written up as a report with plots.

One small orchestrator over three experiments, each in its own module and each cached under the output folder (a
re-run resumes):

1. `arithmetic`: base policy (SFT), Monte-Carlo labels (first pit, Bo4 prover), a PAV and an ORM, and the quality
   of each against the task's exact checker (step AUC, within-problem AUC on best-of-N candidates, calibration).
2. `search`: PAV beam vs Q-only beam vs ORM best-of-N vs majority vote across budgets, each run twice: with the
   learned verifiers and with exact checker-derived values (the decomposition that separates the method from the
   verifier); bootstrap intervals over problems; a prover sweep over K.
3. `rl`: outcome-only GRPO vs PAV-GRPO with the learned PAV and with exact values, several seeds (and, on a task
   with no-progress steps, the App. G ablation: `Q^μ` instead of `A^μ` as the dense reward).
4. `planted`: the paper's didactic task with exact DP values: PAV-RL vs outcome-only RL (GRPO) over several seeds,
   PAV-PPO vs outcome-only PPO with a learned critic, and a sweep over the prover strength γ.

Then `report.write_report` writes `report.md`, `results.json` and PNG plots. `DemoConfig()` is the default
`make demo` budget; `DemoConfig.full()` (`trl-pav demo --full`, `make reproduce`) adds the seeded sweeps, the
Monte-Carlo-advantage arms and more pipeline seeds (the realistic pipeline trained again from scratch per seed), so
that verdicts include the variance of training the policy, labels and verifiers.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .common import Progress, new_ledger, quiet_libraries, t_interval

__all__ = ["DemoConfig", "pipeline_metrics", "pipeline_summary", "run_demo"]


@dataclass
class DemoConfig:
    """Budgets of the demo. `DemoConfig.quick()` runs the same pipeline on a tiny budget; `DemoConfig.full()` adds
    the seeded sweeps and pipeline seeds that do not fit the default's 15 minutes.

    Args:
        realistic_task (`str`): task of the realistic experiment: `"rewrite"` (several evaluation orders, a hard
            step with a safer route around it, no-progress restatements: the paper's regime; docs/tasks.md) or
            `"arithmetic"` (one forced derivation: the documented negative result, where PAV beam equals Q-only beam).
        policy_steps (`int`): SFT steps of the realistic task's run; its final checkpoint is the verifiers' backbone.
        policy_checkpoint_fraction (`float`): the base policy is the same SFT run's checkpoint at this share of its
            steps, so the verifiers start from a stronger model than the policy, as in the paper (1.0: one model).
        label_problems (`int`): problems labeled by Monte-Carlo rollouts.
        n_cov (`int`): seed traces per labeled problem (more traces per problem give same-problem contrasts).
        n_mc (`int`): rollouts per labeled prefix (the paper's 20 does not fit the CPU budget; see docs).
        pit_confirm_rollouts (`int`): extra rollouts that confirm a candidate first pit before it is accepted.
        prover_k (`int`): K of the Best-of-K prover (the paper's Bo4).
        verifier_steps (`int`): most optimizer steps of PAV and ORM training (early stopping on held-out loss).
        verifier_holdout (`float`): share of labeled problems held out for early stopping.
        verifier_learning_rate (`float`): peak learning rate of PAV and ORM training (cosine schedule).
        verifier_likelihood_head (`bool`): PAV and ORM keep the backbone's LM head and add the least completion
            token's log-probability to every value (`PAVRewardConfig.likelihood_head`; docs/verifier_training.md).
        verifier_contrast_weight (`float`): weight of the same-problem ranking term in PAV and ORM training
            (`PAVRewardConfig.contrast_weight`; 0 is the paper's pointwise loss).
        search_problems (`int`): held-out problems for the search comparison.
        search_budgets (`list[int]`): N per prompt for search (each >= 3: beam search keeps N // 3 beams).
        search_alpha (`float`): α of PAV beam search (paper: ~0.5 for small models).
        quality_candidates (`int`): best-of-N candidates per search problem for the verifiers' within-problem AUC.
        bootstrap_samples (`int`): bootstrap resamples over problems for search intervals.
        k_sweep (`list[int]`): prover K values swept at one beam size.
        k_sweep_budget (`int`): N of the prover sweep.
        k_sweep_seeds (`list[int]`): search seeds of every K of the sweep (each problem's success is averaged over
            them before the bootstrap over problems).
        rl_steps (`int`): GRPO steps per realistic RL run (150; `--full`: 500, the issue's budget).
        rl_train_problems (`int`): problems GRPO draws its prompts from (4 per step; cycled when `4 * rl_steps` is
            larger). Dealt before the SFT stream, so changing it retrains the pipeline.
        rl_alpha (`float`): α of PAV-RL (paper: 3-5).
        rl_learning_rate (`float`, *optional*): GRPO learning rate of the realistic RL; unset, the task's: 1e-4 for
            rewrite (chosen on a validation seed, 100, and policy-evaluation problems, which no RL result of the
            report uses: at 2e-5 no arm moved in 60 steps, at 1e-4 outcome-only RL moved in 150; docs/tasks.md) and
            2e-5 for arithmetic (1e-4 degrades its policy; docs/deviations.md).
        rl_seeds (`list[int]`): seeds of each realistic RL arm.
        rl_eval_every (`int`): steps between held-out evaluations.
        rl_mc_rollouts (`list[int]`): rollouts per state of the realistic Monte-Carlo-advantage arms (Bo-K of the
            current policy estimated online, K = min(prover_k, n); empty, the default, skips them: HF rollouts of the
            1M policy add several seconds per GRPO step on 2 cores, minutes per run; docs/mc_advantages.md).
        rl_eval_problems (`int`): held-out problems per evaluation.
        rl_q_value_ablation (`bool`): on a task with no-progress steps (rewrite), also run the paper's App. G
            ablation: exact values, the prover's `Q^μ` as the dense reward instead of `A^μ`, same seeds; the report
            shows the share of no-progress steps per evaluation of it, the `A^μ` arm and outcome-only RL.
        planted_rl_steps (`int`): GRPO steps per planted RL run.
        planted_seeds (`list[int]`): seeds of each planted RL arm. The planted budget, learning rate and α were
            chosen on seeds 0-2, so the reported seeds are others (docs/deviations.md).
        planted_ppo_steps (`int`): iterations of each planted PPO run (PAV-PPO and outcome-only PPO; 0 skips them).
        planted_ppo_seeds (`list[int]`): seeds of each planted PPO arm (the critic settings were chosen on seed 0;
            reported on others).
        planted_string (`str`): the planted task's hidden string, in the traces' letters (`a` is symbol 0; the
            default `"dgadf"` is `3 6 0 3 5`).
        planted_vocab_size (`int`): symbols of the planted task (paper: 15).
        planted_length (`int`): symbols per planted trace (paper: 10).
        planted_gamma (`float`): γ of the procedural prover (paper: 10).
        planted_alpha (`float`): α of planted PAV-RL (paper: 1).
        planted_mc_rollouts (`list[int]`): rollouts per state of the planted Monte-Carlo-advantage arms (the γ
            prover's values estimated online instead of its exact values; empty skips them).
        planted_pav_traces (`int`): traces labeled (20 rollouts of the γ prover after every step) to train each
            learned planted PAV, whose RL arms run beside the Monte-Carlo arms on the same seeds (0 skips them).
        planted_pav_prover_shares (`list[float]`): one learned planted PAV per value: the share of its labeled traces
            drawn from the γ prover instead of the base policy (0: the paper's recipe, base-policy states only; the
            planted base policy almost never reaches the states where planted progress is made, and a PAV trained on
            its states alone does not fit there: docs/mc_advantages.md). Default 0.5; `--full` adds 0.
        planted_pav_verifier_steps (`int`): most optimizer steps of each learned planted PAV's training (early
            stopping on held-out loss).
        planted_pav_seeds (`list[int]`): verifier seeds: each learned planted PAV is labeled and trained once per
            value (its traces, rollouts, held-out split and training order; the base policy stays the one of
            `seed`), and each copy runs its own RL arms on `planted_seeds`. The first is `seed` (that copy keeps the
            plain arm name); with more than one, the report pools the learned arms' comparisons over them (an
            interval over verifier seeds, which covers the trained verifier's variance on these RL seeds; every
            copy is paired with the same exact and MC runs, so their RL noise is not in it).
        planted_prover_refresh (`list[int]`): prover-refresh arms of the planted comparison, one per value M: the
            prover is Best-of-K of the policy (K = `prover_k`, at most 8), its values estimated online by 8 rollouts
            per state of a
            frozen copy of the base policy (`MCStepScorer(policy="frozen")`), whose weights are replaced by the
            trained policy's every M steps (0: never, the fixed prover of the paper). Empty skips them; `--full`
            runs 0 and 50.
        gamma_sweep (`list[float]`): γ values of the prover-strength sweep.
        gamma_sweep_steps (`int`): GRPO steps per sweep run (the planted RL arms' budget: the sweep shares their
            γ = `planted_gamma` and outcome-only runs where the seeds match, and at 100 steps no γ had taken off).
        gamma_sweep_seeds (`list[int]`): seeds of every sweep value (and of its outcome-only baseline, paired).
        seed (`int`): base seed; the first pipeline seed.
        pipeline_seeds (`list[int]`): seeds of the realistic pipeline (problem pools, policy, labels, verifiers). The
            first is `seed`; every other one trains the pipeline again in `pipelines/seed-<s>/` and runs its search
            (its RL too when `pipeline_rl`), and the report pools the verdicts over all of them (a t-interval over
            pipelines, which covers problem, seed and training variance).
        pipeline_rl (`bool`): also run the realistic RL arms on every extra pipeline seed (the costliest stage).
    """

    realistic_task: str = "rewrite"
    policy_steps: int = 600
    policy_checkpoint_fraction: float = 0.75
    label_problems: int = 512
    n_cov: int = 4
    n_mc: int = 8
    pit_confirm_rollouts: int = 8
    prover_k: int = 4
    verifier_steps: int = 600
    verifier_holdout: float = 0.1
    verifier_learning_rate: float = 3e-5
    verifier_likelihood_head: bool = True
    verifier_contrast_weight: float = 0.0
    search_problems: int = 128
    search_budgets: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    search_alpha: float = 0.5
    quality_candidates: int = 24
    bootstrap_samples: int = 1000
    k_sweep: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    k_sweep_budget: int = 12
    k_sweep_seeds: list[int] = field(default_factory=lambda: [0])
    rl_steps: int = 150
    rl_train_problems: int = 304
    rl_alpha: float = 3.0
    rl_learning_rate: float | None = None
    rl_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    rl_eval_every: int = 50
    rl_mc_rollouts: list[int] = field(default_factory=list)
    rl_eval_problems: int = 128
    rl_q_value_ablation: bool = True
    planted_rl_steps: int = 300
    planted_seeds: list[int] = field(default_factory=lambda: [10, 11, 12])
    planted_ppo_steps: int = 300
    planted_ppo_seeds: list[int] = field(default_factory=lambda: [10])
    planted_string: str = "dgadf"
    planted_vocab_size: int = 15
    planted_length: int = 10
    planted_gamma: float = 10.0
    planted_alpha: float = 1.0
    planted_mc_rollouts: list[int] = field(default_factory=list)
    planted_pav_traces: int = 2048
    planted_pav_prover_shares: list[float] = field(default_factory=lambda: [0.5])
    planted_pav_verifier_steps: int = 2000
    planted_pav_seeds: list[int] = field(default_factory=lambda: [0])
    planted_prover_refresh: list[int] = field(default_factory=list)
    gamma_sweep: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])
    gamma_sweep_steps: int = 300
    gamma_sweep_seeds: list[int] = field(default_factory=lambda: [10])
    seed: int = 0
    pipeline_seeds: list[int] = field(default_factory=lambda: [0])
    pipeline_rl: bool = False

    def __post_init__(self) -> None:
        if not self.pipeline_seeds or self.pipeline_seeds[0] != self.seed:
            raise ValueError(f"pipeline_seeds must start with seed={self.seed}, got {self.pipeline_seeds}")
        if len(set(self.pipeline_seeds)) != len(self.pipeline_seeds):
            raise ValueError(f"pipeline_seeds has repeats: {self.pipeline_seeds}")
        if not self.planted_pav_seeds or self.planted_pav_seeds[0] != self.seed:
            raise ValueError(f"planted_pav_seeds must start with seed={self.seed}, got {self.planted_pav_seeds}")
        if len(set(self.planted_pav_seeds)) != len(self.planted_pav_seeds):
            raise ValueError(f"planted_pav_seeds has repeats: {self.planted_pav_seeds}")
        bad = [n for n in self.search_budgets if not isinstance(n, int) or isinstance(n, bool) or n < 3]
        if bad or not self.search_budgets:
            # Beam search keeps N // C beams with the paper's C = 3 expansions: below 3 it keeps none.
            raise ValueError(f"search_budgets must be integers >= 3 (N; C = 3 expansions per beam), got {bad or []}")
        if self.planted_pav_verifier_steps < 1:
            raise ValueError(f"planted_pav_verifier_steps must be >= 1, got {self.planted_pav_verifier_steps}")
        if self.planted_pav_traces and self.planted_pav_traces < 4:
            raise ValueError(
                f"planted_pav_traces must be 0 (no learned arm) or at least 4, got {self.planted_pav_traces}"
            )
        bad = [m for m in self.planted_prover_refresh if not isinstance(m, int) or isinstance(m, bool) or m < 0]
        if bad:
            raise ValueError(f"planted_prover_refresh values must be integers >= 0 (0: fixed), got {bad}")
        if len(set(self.planted_prover_refresh)) != len(self.planted_prover_refresh):
            raise ValueError(f"planted_prover_refresh has repeats: {self.planted_prover_refresh}")
        bad = [x for x in self.planted_pav_prover_shares if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"planted_pav_prover_shares must lie in [0, 1], got {bad}")
        from .planted import learned_arm_name

        names = [learned_arm_name(x) for x in self.planted_pav_prover_shares]
        if len(set(names)) != len(names):
            raise ValueError(f"planted_pav_prover_shares has repeats (arms {names})")
        self.planted_task()  # raises naming the bad planted setting

    @property
    def realistic_rl_learning_rate(self) -> float:
        """`rl_learning_rate`, or unset the realistic task's own (resolved on use, not stored: a config copied with
        another `realistic_task` then gets that task's rate)."""
        if self.rl_learning_rate is not None:
            return self.rl_learning_rate
        return 2e-5 if self.realistic_task == "arithmetic" else 1e-4

    def planted_task(self):
        """The planted task of `planted_string`, `planted_vocab_size` and `planted_length`."""
        from ..tasks import PlantedTask

        return PlantedTask.from_letters(self.planted_string, self.planted_vocab_size, self.planted_length)

    @classmethod
    def full(cls) -> DemoConfig:
        """`--full`: the default budget plus what needs more seeds or compute: three pipeline seeds, the
        Monte-Carlo-advantage arms and a second learned planted PAV (base-policy states only, the paper's), each
        learned planted PAV on three verifier seeds, the prover-refresh arms, PPO and the γ sweep (γ in 5..17
        included) on three seeds, the K sweep on three search seeds, and longer realistic RL evaluated on more
        problems."""
        return cls(
            k_sweep_seeds=[0, 1, 2],
            rl_steps=500,
            rl_train_problems=2064,
            rl_eval_every=50,
            rl_eval_problems=512,
            planted_ppo_seeds=[10, 11, 12],
            planted_mc_rollouts=[2, 4, 8],
            planted_pav_prover_shares=[0.0, 0.5],
            planted_pav_seeds=[0, 1, 2],
            planted_prover_refresh=[0, 50],
            gamma_sweep=[1.0, 3.0, 5.0, 10.0, 17.0, 30.0, 100.0],
            gamma_sweep_seeds=[10, 11, 12],
            pipeline_seeds=[0, 1, 2],
        )

    @classmethod
    def quick(cls) -> DemoConfig:
        """The same pipeline on a tiny budget, for smoke tests."""
        return cls(
            policy_steps=80,
            label_problems=24,
            n_cov=2,
            n_mc=4,
            pit_confirm_rollouts=2,
            verifier_steps=30,
            verifier_holdout=0.25,
            search_problems=16,
            search_budgets=[3, 6],
            quality_candidates=4,
            bootstrap_samples=50,
            k_sweep=[1, 4, 32],
            k_sweep_budget=6,
            k_sweep_seeds=[0],
            rl_steps=6,
            rl_train_problems=88,
            rl_seeds=[0, 1],
            rl_eval_every=3,
            rl_eval_problems=32,
            rl_mc_rollouts=[2],
            planted_rl_steps=6,
            planted_seeds=[0, 1],
            planted_ppo_steps=4,
            planted_ppo_seeds=[0],
            planted_mc_rollouts=[2],
            planted_pav_traces=32,
            planted_pav_prover_shares=[0.0, 0.5],
            planted_pav_verifier_steps=40,
            planted_pav_seeds=[0, 1],
            planted_prover_refresh=[0, 2],
            gamma_sweep=[1.0, 10.0],
            gamma_sweep_steps=4,
            gamma_sweep_seeds=[0, 1],
        )


def docstring_field_help(cls) -> None:
    """Give every field of a dataclass the `help` its class docstring's `Args:` entry writes (`name (`type`): text`),
    so `TrlParser`'s `--help` shows the docstring's words and the docstring stays their one source.

    Raises:
        TypeError: if a field has no entry.
    """
    import dataclasses
    import re
    import types

    doc = cls.__doc__ or ""
    entries = {m.group(1): m.group(2) for m in re.finditer(r"^ {8}(\w+) \(`[^`]*`[^)]*\):((?:.|\n {12,})*)", doc, re.M)}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in entries]
    if missing:
        raise TypeError(f"{cls.__name__}: fields without an Args entry in its docstring: {missing}")
    for f in dataclasses.fields(cls):
        if f.init and not f.metadata.get("help"):
            f.metadata = types.MappingProxyType({**f.metadata, "help": " ".join(entries[f.name].split())})


docstring_field_help(DemoConfig)


def sweeps_summary(k_sweep: list[dict], gamma_sweep: list[dict]) -> dict:
    """results.json's `sweeps`: per prover K (search accuracy) and per γ (planted final RL success, and the success
    averaged over training that defines the γ window), the mean and its 95% interval (`None` where a sweep ran
    without one; `[None, None]` over one seed, which has no interval).

    Example:
        >>> k_rows = [{"k": 4, "accuracy": 0.5, "interval": [0.4, 0.6]}]
        >>> out = sweeps_summary(k_rows, [{"gamma": 10.0, "final_accuracy": 0.9}])
        >>> out["k_accuracy"]["4"], out["gamma_final"]["10"]
        ({'mean': 0.5, 'interval': [0.4, 0.6]}, {'mean': 0.9, 'interval': None})
    """
    gamma_interval = lambda r: r["interval"][1:] if r.get("interval") else None  # noqa: E731  (mean, low, high)
    return {
        "k_accuracy": {str(r["k"]): {"mean": r["accuracy"], "interval": r.get("interval")} for r in k_sweep},
        "gamma_final": {
            f"{r['gamma']:g}": {"mean": r["final_accuracy"], "interval": gamma_interval(r)} for r in gamma_sweep
        },
        "gamma_mean_success": {
            f"{r['gamma']:g}": {
                "mean": r["mean_success"],
                "interval": list(t_interval(r["mean_success_per_seed"])[1:]) if "mean_success_per_seed" in r else None,
                "paired_gain_over_outcome": r.get("mean_success_gain_over_outcome"),
            }
            for r in gamma_sweep
            if "mean_success" in r
        },
    }


def pipeline_metrics(results: dict) -> dict[str, float | None]:
    """One realistic pipeline's headline estimates (`results` of `run_demo`'s realistic stages), the numbers that
    `pipeline_summary` pools over pipeline seeds. Differences are method minus baseline (accuracy or AUC).

    Example:
        >>> vs = {"orm_bon": {"accuracy_gain": 0.05}, "q_beam": {"accuracy_gain": 0.0}}
        >>> q = {"pav": {"within_problem_auc": 0.8}, "orm": {"within_problem_auc": 0.7}, "policy_likelihood": {}}
        >>> m = pipeline_metrics({"search": {"learned": {"vs": vs}}, "arithmetic": {"verifier_quality": q}})
        >>> round(m["search_pav_vs_orm_gain"], 2), round(m["pav_minus_orm_auc"], 2), m["rl_accuracy_gain"]
        (0.05, 0.1, None)
    """
    vs = results["search"]["learned"]["vs"]
    quality = results["arithmetic"]["verifier_quality"]
    backbone = quality.get("backbone_likelihood") or quality.get("policy_likelihood") or {}
    pav_auc = quality["pav"]["within_problem_auc"]
    rl = results.get("rl") or {}
    return {
        "search_pav_vs_orm_gain": vs["orm_bon"]["accuracy_gain"],
        "search_pav_vs_q_gain": vs["q_beam"]["accuracy_gain"],
        "pav_minus_orm_auc": pav_auc - quality["orm"]["within_problem_auc"],
        "pav_minus_backbone_likelihood_auc": (
            pav_auc - backbone["within_problem_auc"] if backbone.get("within_problem_auc") is not None else None
        ),
        "rl_accuracy_gain": rl.get("accuracy_gain"),
    }


def pipeline_summary(per_seed: dict[int, dict[str, float | None]]) -> dict:
    """Each metric of `pipeline_metrics` over pipeline seeds: the per-seed values, their mean and a two-sided 95%
    Student-t interval over seeds, and a verdict (`"reproduced"` when the interval lies above 0, `"opposite"` when
    below, else `"not resolved"`; `"single pipeline"` with one seed).

    Example:
        >>> out = pipeline_summary({0: {"g": 0.05}, 1: {"g": 0.07}, 2: {"g": 0.06}})
        >>> out["g"]["verdict"], [round(x, 3) for x in out["g"]["interval"]]
        ('reproduced', [0.035, 0.085])
    """
    from .common import t_interval

    out = {}
    names = sorted({k for m in per_seed.values() for k in m})
    for name in names:
        values = {s: m[name] for s, m in per_seed.items() if m.get(name) is not None}
        if not values:
            continue
        mean, low, high = t_interval(list(values.values()))
        verdict = (
            "single pipeline"
            if len(values) < 2
            else "reproduced"
            if low > 0
            else "opposite"
            if high < 0
            else "not resolved"
        )
        out[name] = {
            "per_seed": {str(s): v for s, v in values.items()},
            "mean": mean,
            "interval": [low, high],
            "verdict": verdict,
        }
    return out


def run_demo(output_dir: str | os.PathLike = "outputs/demo", config: DemoConfig | None = None, log=None) -> dict:
    """Run the whole reproduction and write the report into `output_dir/report`. Returns `results.json`'s content."""
    from ..report import write_report
    from . import arithmetic, planted, rl, search

    cfg = config or DemoConfig()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(log or (lambda m: None))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    quiet_libraries()
    start = time.time()
    ledger = new_ledger(out)
    results: dict[str, Any] = {
        "config": asdict(cfg) | {"rl_learning_rate": cfg.realistic_rl_learning_rate},
        "stage_seconds": {},
        "fresh_stage_seconds": {},
    }

    def timed(name: str, fn, *args):
        t0, saved = time.time(), ledger.saved_seconds()
        value = fn(*args)
        wall = time.time() - t0
        results["stage_seconds"][name] = round(wall, 1)
        results["fresh_stage_seconds"][name] = round(wall + ledger.saved_seconds() - saved, 1)
        return value

    arith = timed("arithmetic", arithmetic.run, cfg, out, progress, results)
    results["search"] = timed("search", search.run, cfg, out, progress, arith)
    results["rl"] = timed("rl", rl.run, cfg, out, progress, arith)
    per_pipeline = {cfg.seed: pipeline_metrics(results)}
    for pipeline_seed in cfg.pipeline_seeds[1:]:
        # The realistic pipeline trained again from scratch: other pools, policy, labels and verifiers.
        seed_cfg = replace(cfg, seed=pipeline_seed, pipeline_seeds=[pipeline_seed])
        seed_out, seed_results = out / "pipelines" / f"seed-{pipeline_seed}", {}
        progress(f"pipeline seed {pipeline_seed}: the realistic pipeline again, in {seed_out}")
        seed_arith = timed(f"pipeline-{pipeline_seed}", arithmetic.run, seed_cfg, seed_out, progress, seed_results)
        seed_results["search"] = timed(
            f"pipeline-{pipeline_seed}-search", search.run, seed_cfg, seed_out, progress, seed_arith
        )
        if cfg.pipeline_rl:
            seed_results["rl"] = timed(f"pipeline-{pipeline_seed}-rl", rl.run, seed_cfg, seed_out, progress, seed_arith)
        per_pipeline[pipeline_seed] = pipeline_metrics(seed_results)
    results["pipelines"] = pipeline_summary(per_pipeline)
    results["planted"] = timed("planted", planted.run, cfg, out, progress)
    quality, labels = results["arithmetic"]["verifier_quality"], results["arithmetic"]["label_quality"]
    results["verifier"] = {
        "pav_step_auc": quality["pav"]["step_auc"],
        "orm_outcome_auc": quality["orm"]["outcome_auc"],
        "pav_outcome_auc": quality["pav"]["outcome_auc"],
        "pav_within_problem_auc": quality["pav"]["within_problem_auc"],
        "orm_within_problem_auc": quality["orm"]["within_problem_auc"],
        "likelihood_within_problem_auc": quality["policy_likelihood"]["within_problem_auc"],
        "backbone_likelihood_within_problem_auc": quality.get("backbone_likelihood", {}).get("within_problem_auc"),
    }
    # With one pipeline seed (the default) the verdicts do not cover pipeline-seed variance; `pipelines` says so.
    results["pipeline_seeds"] = list(cfg.pipeline_seeds)
    results["labels"] = {"pit_precision": labels["pit_precision"]}
    results["sweeps"] = sweeps_summary(results["search"]["prover_sweep"], results["planted"]["gamma_sweep"])
    selection = results["planted"].get("prover_selection")
    if selection:  # the selector's γ beside the window the sweep measured (issue 24's validation)
        results["sweeps"]["gamma_selected"] = {k: selection[k] for k in ("best_gamma", "window", "in_window")}
        if selection.get("lookahead"):
            look = selection["lookahead"]
            results["sweeps"]["gamma_selected"]["lookahead"] = {k: look[k] for k in ("best_gamma", "in_window")}
    results["runtime_seconds"] = round(time.time() - start, 1)
    # What a run from scratch takes: this run's wall time plus what its cache hits saved (docs of BuildLedger).
    results["fresh_runtime_seconds"] = round(results["runtime_seconds"] + ledger.saved_seconds(), 1)
    results["builds"] = ledger.builds
    report_dir = out / "report"
    write_report(results, report_dir)
    progress(f"report written to {report_dir}")
    return results
