"""The demo's quick mode runs the whole pipeline on a tiny budget; every stage must produce numbers."""

import json
import math

from trl_pav.demo import DemoConfig, run_demo


def test_quick_demo_writes_a_complete_report(tmp_path):
    results = run_demo(tmp_path, DemoConfig.quick())
    report = tmp_path / "report"
    saved = json.loads((report / "results.json").read_text())
    for png in (
        "search_accuracy_vs_compute.png",
        "prover_k_sweep.png",
        "rl_arithmetic.png",
        "rl_planted.png",
        "gamma_sweep.png",
    ):
        assert (report / png).stat().st_size > 2000, png
    text = (report / "report.md").read_text()
    assert "## Our numbers beside the paper's" in text and "## Where we disagree" in text
    summary = saved["summary"]
    for key in ("compute_ratio", "accuracy_gain", "best_prover_k"):
        assert isinstance(summary["search"][key], (int, float)) and math.isfinite(summary["search"][key])
    assert "sample_efficiency_ratio" in summary["rl"] and isinstance(summary["rl"]["accuracy_gain"], float)
    assert set(summary["planted"]) >= {"pav_iterations_to_90", "outcome_final_accuracy", "gamma_window"}
    assert summary["runtime_seconds"] == results["runtime_seconds"] > 0
    # Every stage produced numbers.
    assert 0.0 <= saved["arithmetic"]["base_policy_sampled_accuracy"] <= 1.0
    assert saved["arithmetic"]["labeling"]["rollouts"] > 0
    assert all(len(r) == len(DemoConfig.quick().search_budgets) for r in saved["search"]["curves"].values())
    assert len(saved["search"]["prover_sweep"]) == len(DemoConfig.quick().k_sweep)
    assert all(len(c) >= 2 for c in saved["rl"]["curves"].values())
    assert len(saved["planted"]["gamma_sweep"]) == len(DemoConfig.quick().gamma_sweep)
