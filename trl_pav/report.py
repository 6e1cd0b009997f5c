"""The demo's report: plots (PNG), `results.json` and `report.md` with our numbers beside the paper's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]

PAPER = {
    "search_accuracy_gain": "> +8 points (PAV beam vs ORM best-of-N)",
    "search_compute_ratio": "1.5-5x",
    "best_prover_k": "Bo4 (K = 4) for medium-strength policies",
    "rl_sample_efficiency": "5-6x",
    "rl_accuracy_gain": "> +6 points",
    "gamma_window": "gains only for gamma in about [8, 15]",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_curves(path: Path, curves: dict[str, list[dict]], title: str, ylabel: str = "held-out accuracy") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4))
    for name, points in curves.items():
        xs = [p["step"] for p in points]
        ys = [p["accuracy"] for p in points]
        ax.plot(xs, ys, marker="o", ms=3, label=name)
        if points and "std" in points[0]:
            lo = [y - p["std"] for y, p in zip(ys, points)]
            hi = [y + p["std"] for y, p in zip(ys, points)]
            ax.fill_between(xs, lo, hi, alpha=0.15)
    ax.legend(fontsize=8)
    return _save(plt, fig, ax, path, "RL iteration", ylabel, title)


def _plot_sweep(
    path: Path, xs: list, ys: list, xlabel: str, title: str, log_base: int, baseline: float | None = None
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, ys, marker="o")
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="gray", label="outcome-only RL")
        ax.legend(fontsize=8)
    ax.set_xscale("log", base=log_base)
    return _save(plt, fig, ax, path, xlabel, "accuracy", title)


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> str:
    """Label, grid and write a figure as PNG; returns the file name."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "not reached"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def write_report(results: dict, folder: str | Path) -> Path:
    """Write `results.json`, the PNG plots and `report.md` into `folder`."""
    from .search import plot_search_results

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    search, rl, planted = results["search"], results["rl"], results["planted"]
    plots = {
        "search": Path(
            plot_search_results(
                {"methods": search["curves"]},
                str(folder / "search_accuracy_vs_compute.png"),
                title="Arithmetic: accuracy vs generated tokens",
            )
        ).name,
        "k_sweep": _plot_sweep(
            folder / "prover_k_sweep.png",
            [r["k"] for r in search["prover_sweep"]],
            [r["accuracy"] for r in search["prover_sweep"]],
            "prover K (Best-of-K)",
            "PAV beam search accuracy vs prover strength",
            2,
        ),
        "rl": _plot_curves(folder / "rl_arithmetic.png", rl["curves"], "Arithmetic: online RL"),
        "planted": _plot_curves(
            folder / "rl_planted.png", planted["curves"], "Planted subsequence: online RL", ylabel="success rate"
        ),
        "gamma": _plot_sweep(
            folder / "gamma_sweep.png",
            [r["gamma"] for r in planted["gamma_sweep"]],
            [r["final_accuracy"] for r in planted["gamma_sweep"]],
            "prover gamma",
            "Planted: final success vs prover strength",
            10,
            planted["gamma_sweep_outcome_accuracy"],
        ),
    }
    summary = {
        "search": {k: search[k] for k in ("compute_ratio", "ratio_is_lower_bound", "accuracy_gain", "best_prover_k")},
        "rl": {k: rl[k] for k in ("sample_efficiency_ratio", "accuracy_gain", "final_accuracy", "seeds")},
        "planted": {
            k: planted[k]
            for k in (
                "pav_iterations_to_90",
                "outcome_final_accuracy",
                "pav_final_accuracy",
                "gamma_window",
                "base_policy_success",
            )
        },
        "runtime_seconds": results["runtime_seconds"],
    }
    (folder / "results.json").write_text(
        json.dumps({**results, "summary": summary, "plots": plots}, indent=2, default=str)
    )
    (folder / "report.md").write_text(_markdown(results, plots))
    return folder


def _disagreements(results: dict) -> list[str]:
    search, rl, planted, arith = results["search"], results["rl"], results["planted"], results["arithmetic"]
    auc = arith["pav_quality"]["step_auc"]
    notes = []
    pav_curve = sorted(search["curves"]["pav_beam"], key=lambda r: r["n"])
    if pav_curve[-1]["accuracy"] < pav_curve[0]["accuracy"]:
        notes.append(
            "Search: accuracy of every verifier-guided method falls as N grows (PAV beam "
            f"{pav_curve[0]['accuracy']:.3f} at N={pav_curve[0]['n']} to {pav_curve[-1]['accuracy']:.3f} at "
            f"N={pav_curve[-1]['n']}), while majority vote and Pass@N rise: more candidates give an imperfect "
            "verifier more wrong answers to prefer. So the compute ratio compares the PAV's smallest budget with an "
            "ORM curve that never recovers; it is not evidence of the paper's efficiency gain."
        )
    if search["accuracy_gain"] < 0.08:
        notes.append(
            f"Search: our accuracy gain at equal compute ({search['accuracy_gain']:+.3f}) falls short of the paper's "
            f"> +0.08. Likely reason: our verifier is a 1M-parameter model trained for minutes on "
            f"{arith['labeling']['num_traces']} traces; its step AUC against the exact checker is {auc:.2f} (ORM "
            f"{arith['orm_quality']['step_auc']:.2f}), and search can only exploit progress the verifier can see. "
            "The paper's verifiers are 2B-27B models trained on millions of labels."
        )
    orm_auc = arith.get("orm_quality", {}).get("step_auc")
    if orm_auc is not None and orm_auc > auc:
        notes.append(
            f"Verifier labels: the ORM ranks steps better than the PAV (step AUC {orm_auc:.2f} vs {auc:.2f}). "
            "The PAV's "
            f"labels come from first-pit search with n_mc = {results['config']['n_mc']}: a prefix whose success is "
            "small but not zero is often estimated at 0, the search declares a pit there, and the later steps, many "
            "of them correct, are labeled 0 without rollouts. The pit matched the exact first error in only "
            f"{arith['first_pit_matches_true_first_error']:.0%} of failing traces. The paper's n_mc = 20 (and far "
            "more labels) makes such false pits rarer; `strategy='all'` avoids them at a higher rollout cost."
        )
    accs = {r["accuracy"] for r in search["prover_sweep"]}
    if len(accs) == 1:
        notes.append(
            "Prover sweep: every K gives the same accuracy. Among children of one parent, Q + α·(f(Q) − f(Q_parent)) "
            "ranks exactly as Q does for any K (f is monotone), so K can only matter when children of different "
            "parents compete for a slot; with 3-4 step traces and the first level all sharing the root, that rarely "
            "changes the kept beams. The paper's MATH traces are far longer."
        )
    elif len(search.get("best_prover_k_ties", [])) > 1:
        notes.append(
            f"Prover sweep: K in {search['best_prover_k_ties']} tie for the best accuracy (we report the smallest); "
            "the "
            "differences between K values are one or two problems, within noise. Among children of one parent the "
            "effective reward ranks as Q does for any K, so K only matters when children of different parents "
            "compete."
        )
    elif search["best_prover_k"] != 4:
        notes.append(
            f"Prover sweep: the best K here is {search['best_prover_k']}, not 4. With a noisy small verifier the "
            "differences between K values are within a few problems (see the sweep plot); the paper's optimum "
            "depends on the base policy's strength, and ours is weaker at the step level."
        )
    ratio = rl["sample_efficiency_ratio"]
    if ratio is None or ratio < 5 or rl["accuracy_gain"] < 0.06:
        notes.append(
            f"Arithmetic RL: sample-efficiency ratio {_fmt(ratio, 2)} and accuracy gain {rl['accuracy_gain']:+.3f} "
            f"over {rl['seeds']} seed(s) of a short run. Likely reasons: few RL iterations on a CPU budget, and the "
            "same imperfect verifier supplying the process term."
        )
    window = planted["gamma_window"]
    if window is None or window[0] < 8 or window[1] > 15:
        notes.append(
            f"Planted γ sweep: the window where PAV-RL beats outcome-only RL is {window}, the paper's is about "
            "[8, 15]. The shape agrees (too weak and too strong provers both give nothing) but our sweep has five "
            "points and 100-iteration runs, so its edges are coarse."
        )
    return notes


def _markdown(results: dict, plots: dict) -> str:
    search, rl, planted, arith = results["search"], results["rl"], results["planted"], results["arithmetic"]
    cfg = results["config"]
    ratio = rl["sample_efficiency_ratio"]
    bound = " (lower bound: ORM never reached it)" if search["ratio_is_lower_bound"] else ""
    rows = [
        (
            "Search: accuracy gain, PAV beam vs ORM best-of-N (equal compute)",
            f"{search['accuracy_gain'] * 100:+.1f} points",
            PAPER["search_accuracy_gain"],
        ),
        (
            "Search: compute ORM needs to match PAV's best accuracy",
            f"{search['compute_ratio']:.2f}x{bound}",
            PAPER["search_compute_ratio"],
        ),
        ("Search: best prover K", str(search["best_prover_k"]), PAPER["best_prover_k"]),
        (
            "RL: sample efficiency (outcome-only steps / PAV steps to its final accuracy)",
            f"{_fmt(ratio, 2)}x" if ratio else "not reached",
            PAPER["rl_sample_efficiency"],
        ),
        ("RL: accuracy gain at the end", f"{rl['accuracy_gain'] * 100:+.1f} points", PAPER["rl_accuracy_gain"]),
        (
            "Planted: PAV-RL iterations to 90% success",
            _fmt(planted["pav_iterations_to_90"]),
            "tens to hundreds (paper Fig. 4)",
        ),
        ("Planted: outcome-only RL final success", _fmt(planted["outcome_final_accuracy"]), "stays low"),
        ("Planted: γ window where PAV-RL helps", str(planted["gamma_window"]), PAPER["gamma_window"]),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    curves = search["curves"]
    search_rows = "\n".join(
        f"| {m} | "
        + " | ".join(f"{r['accuracy']:.3f} ({r['generated_tokens']:,} tok)" for r in sorted(recs, key=lambda r: r["n"]))
        + " |"
        for m, recs in curves.items()
    )
    budgets = sorted({r["n"] for recs in curves.values() for r in recs})
    sweep_text = ", ".join(f"K={r['k']}: {r['accuracy']:.3f}" for r in search["prover_sweep"])
    rl_text = ", ".join(f"{k}: {v:.3f}" for k, v in rl["final_accuracy"].items())
    gamma_text = ", ".join(f"γ={r['gamma']:g}: {r['final_accuracy']:.3f}" for r in planted["gamma_sweep"])
    first_error = _fmt(arith["pav_quality"]["first_error_accuracy"])
    notes = _disagreements(results)
    notes_md = "\n".join(f"- {n}" for n in notes) or "- None: every number falls within the paper's range."
    return f"""# trl_pav demo: a small-scale reproduction of "Rewarding Progress" (arXiv 2410.08146)

Runtime: {results["runtime_seconds"]:.0f} s on this machine. Everything below was measured in this run.

## Our numbers beside the paper's

| claim | ours | paper |
|---|---|---|
{table}

## Where we disagree with the paper, and why

{notes_md}

## What ran

**Arithmetic task** (`Q:25-29*14-2?` → one operation per step, `#### answer`; operands 1-15, 2-3 operators).

- Base policy: a 1M-parameter Llama trained from scratch with TRL's `SFTTrainer` for {cfg["policy_steps"]} steps
  ({arith["base_policy_train_seconds"]:.0f} s); sampled accuracy (T = 1) {arith["base_policy_sampled_accuracy"]:.3f}.
- Labels: {cfg["label_problems"]} problems × {cfg["n_cov"]} seed traces, first-pit strategy, n_mc = {cfg["n_mc"]},
  Bo{cfg["prover_k"]} prover: {arith["labeling"]["num_traces"]} traces, {arith["labeling"]["num_labels"]} step labels,
  {arith["labeling"]["rollouts"]:,} rollouts ({arith["labeling"]["prefix_cache_hits"]} shared-prefix reuses),
  {arith["labeling"]["wall_seconds"]:.0f} s. The first pit equals the exact first wrong step in
  {arith["first_pit_matches_true_first_error"]:.1%} of {arith["failing_traces"]} failing traces.
- Verifiers: PAV (every step and the root, class-balanced soft BCE) and ORM (final outcome), each initialised from
  the base policy and trained {cfg["verifier_steps"]} steps. Step AUC against the exact step checker on
  {arith["pav_quality"]["traces"]} held-out base-policy traces: PAV {arith["pav_quality"]["step_auc"]:.3f}, ORM
  {arith["orm_quality"]["step_auc"]:.3f}; PAV first-error localisation {first_error}.
- Search on {cfg["search_problems"]} held-out problems, C = 3 expansions, α = {cfg["search_alpha"]}:

| method | {" | ".join(f"N={n}" for n in budgets)} |
|---|{"---|" * len(budgets)}
{search_rows}

  Prover sweep at N = {cfg["k_sweep_budget"]}: {sweep_text}.

- Online RL: GRPO ({cfg["rl_steps"]} steps, 32 completions per step, KL β = 0.001, {len(cfg["rl_seeds"])} seed(s)),
  outcome-only vs PAV-RL with α = {cfg["rl_alpha"]} (Bo{cfg["prover_k"]} and K = 1 provers). Final held-out sampled
  accuracy: {rl_text}.

**Planted subsequence** (vocabulary 15, length 10, planted `3 6 0 3 5`): base policy by SFT on 3,200 samples of
μ_5 (success {planted["base_policy_success"]:.3f}); RL with the effective reward from the procedural prover
(γ = {cfg["planted_gamma"]:g}, α = {cfg["planted_alpha"]:g}, exact DP values) vs outcome-only,
{cfg["planted_rl_steps"]} steps:
final success {planted["pav_final_accuracy"]:.3f} vs {planted["outcome_final_accuracy"]:.3f}. γ sweep
({cfg["gamma_sweep_steps"]} steps each): {gamma_text};
outcome-only {planted["gamma_sweep_outcome_accuracy"]:.3f}.

## Plots

![search]({plots["search"]})
![prover sweep]({plots["k_sweep"]})
![arithmetic RL]({plots["rl"]})
![planted RL]({plots["planted"]})
![gamma sweep]({plots["gamma"]})

Deviations from the paper's setup (model sizes, n_mc, budgets) are listed in `docs/deviations.md` of the project.
"""
