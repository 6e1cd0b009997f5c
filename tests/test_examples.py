"""Every script in examples/ runs (in this process, to share imports) and prints what it promises."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "train_pav_on_your_data.py": ["held-out metrics:", "Q per step:", "Bo4 prover advantages:"],
    "grpo_with_hub_pav.py": ["PAV-GRPO: {'pav/", "GRPO + PAV reward: {'rewards/"],
    "beam_search_with_pav.py": ["exact values: beam search 6/6 correct", "exact values: best-of-6 6/6 correct"],
    "public_prm_verifier.py": ["qwen-prm: step values [1.0,", "math-shepherd:", "rlhflow:"],
    "evaluate_step_errors.py": ["'f1': 1.0", "CHAMP"],
    "custom_step_combination.py": ["pav/"],
    "ppo_custom_rewards.py": ["ppo/value_mean"],
}


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, capsys):
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    for expected in EXPECTED[name]:
        assert expected in out, (expected, out[-2000:])
