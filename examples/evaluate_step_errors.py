"""Evaluate how well a step scorer finds the first wrong step (ProcessBench style): accuracy on erroneous and on
correct traces and their harmonic mean (F1), per subset, with the threshold tuned on a separate split.

Here: the arithmetic task's exact values (truth known) and a tiny random PRM on CHAMP's annotated solutions (if the
`champ-dataset` package is installed). CPU, seconds:

    python examples/evaluate_step_errors.py

With real scorers and data:

    trl-pav eval-steps --scorer you/your-pav --data champ --tune_fraction 0.3
    trl-pav eval-steps --scorer Qwen/Qwen2.5-Math-PRM-7B --scorer_type qwen-prm --trust_remote_code true \\
        --data Qwen/ProcessBench --split gsm8k --threshold 0.5
"""

import importlib.util

import torch

from trl_pav.prm_adapters import QwenMathPRM
from trl_pav.step_eval import arithmetic_step_errors, evaluate_step_errors, load_champ
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_public_prm


def main() -> None:
    oracle = NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.3)  # any StepScorer: PAVVerifier, a public PRM...
    report = evaluate_step_errors(
        oracle, arithmetic_step_errors(100, seed=0), threshold=None, tune_data=arithmetic_step_errors(50, seed=1)
    )
    print("arithmetic, exact values:", report["threshold"], report["overall"])
    if importlib.util.find_spec("champ_dataset") is None:
        print("CHAMP skipped: pip install champ-dataset")
        return
    data = load_champ(limit=12)
    # QwenMathPRM.from_pretrained("Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True) in real use
    prm = QwenMathPRM(*tiny_public_prm("qwen-prm", max_positions=4096))
    report = evaluate_step_errors(prm, data.select(range(4, 12)), threshold=None, tune_data=data.select(range(4)))
    print("CHAMP, tiny random PRM:", report["overall"], {k: round(v["f1"], 3) for k, v in report["subsets"].items()})


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
