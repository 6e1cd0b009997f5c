"""The learned planted PAV (`trl_pav.demo.planted.learned_pav`): trained on Monte-Carlo labels of the γ prover from
states of a base policy, checked against the exact DP values; and its fitting-error measure by hand."""

import numpy as np
import pytest

from trl_pav.demo.planted import learned_pav, planted_pav_fit, planted_pav_recipe
from trl_pav.generation import GenerationRequest
from trl_pav.modeling import PAVVerifier
from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
from trl_pav.testing import tiny_causal_lm

TASK = PlantedTask()


class Offset(PlantedOracleScorer):
    """Exact values plus a constant: every value is off by `shift`, every one-step advantage is exact."""

    shift: float = 0.1

    def score(self, prompts, steps):
        return [[v + self.shift for v in row] for row in super().score(prompts, steps)]


@pytest.mark.parametrize("task", [TASK, PlantedTask(vocab_size=6, length=7, planted=(2, 4, 1))])
def test_fit_by_hand(task):
    base = PlantedProverPolicy(task, 5.0)
    fit = planted_pav_fit(Offset(task, 10.0), task, 10.0, base, seed=0, traces=16)
    assert fit["traces"] == 16 and fit["value_mae"] == pytest.approx(0.1)
    assert fit["advantage_mae"] == pytest.approx(0.0, abs=1e-12) and fit["advantage_corr"] == pytest.approx(1.0)
    by_state = fit["by_match_state"]
    assert sum(r["steps"] for r in by_state) == 16 * task.length and by_state[0]["matched"] == 0
    assert all(r["advantage_mae"] == pytest.approx(0.0, abs=1e-12) for r in by_state)
    assert max(r["matched"] for r in by_state) <= len(task.planted)
    # Scored against another prover's values, the same verifier is wrong in its advantages too.
    other = planted_pav_fit(PlantedOracleScorer(task, 30.0), task, 10.0, base, seed=0, traces=16)
    assert other["advantage_mae"] > 0.01 and other["value_mae"] > 0.01


def test_learned_planted_pav_beats_a_constant_against_exact_values(tmp_path):
    """Labels of the γ = 30 prover on states of the γ = 5 procedural policy; the trained verifier's values are
    closer to the exact ones than the best constant is, on fresh traces; the checkpoint says it predicts the
    prover's values (target q_mu, K = 1) in the task's step format; labeling's tokens are what it generated."""
    tok = TASK.tokenizer()
    backbone = tmp_path / "backbone"
    tiny_causal_lm(tok, seed=0, hidden_size=32).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    base = PlantedProverPolicy(TASK, 5.0)
    out = learned_pav(TASK, base, backbone, 30.0, 256, 0, tmp_path / "pav", recipe=planted_pav_recipe(300))
    verifier = PAVVerifier.from_pretrained(out["verifier"])
    assert verifier.metadata.target == "q_mu" and verifier.metadata.prover_k == 1
    assert verifier.step_format.separator == TASK.step_format.separator
    assert out["labeled_traces"] == 256 and out["labeling_tokens"] > 256 * TASK.length  # seed traces + rollouts
    gens = base.generate([GenerationRequest(TASK.prompt, seed=7919 * 100_003 + i) for i in range(256)])
    exact = np.concatenate([TASK.exact_values(30.0, g.steps) for g in gens])
    constant_mae = float(np.abs(exact - np.median(exact)).mean())  # the best constant under absolute error
    assert out["fit"]["traces"] == 256 and out["fit"]["value_mae"] < 0.5 * constant_mae, (out["fit"], constant_mae)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"planted_pav_traces": 2}, "planted_pav_traces must be 0"),
        ({"planted_pav_prover_shares": [0.0, 1.5]}, r"must lie in \[0, 1\], got \[1.5\]"),
        ({"planted_pav_prover_shares": [0.5, 0.5]}, "has repeats"),
        ({"planted_pav_seeds": [1, 0]}, r"planted_pav_seeds must start with seed=0, got \[1, 0\]"),
        ({"planted_pav_seeds": []}, "planted_pav_seeds must start with seed=0"),
        ({"planted_pav_seeds": [0, 2, 2]}, r"planted_pav_seeds has repeats: \[0, 2, 2\]"),
    ],
)
def test_demo_config_rejects_bad_learned_arms(fields, message):
    from trl_pav.demo import DemoConfig

    with pytest.raises(ValueError, match=message):
        DemoConfig(**fields)


def test_learned_pav_rejects_bad_inputs_before_any_work(tmp_path):
    base = PlantedProverPolicy(TASK, 5.0)
    with pytest.raises(ValueError, match=r"prover_share must be in \[0, 1\], got -0.1"):
        learned_pav(TASK, base, tmp_path, 10.0, 64, 0, tmp_path / "pav", prover_share=-0.1)
    with pytest.raises(ValueError, match="traces must be at least 4"):
        learned_pav(TASK, base, tmp_path, 10.0, 3, 0, tmp_path / "pav")
    assert not (tmp_path / "pav").exists()
