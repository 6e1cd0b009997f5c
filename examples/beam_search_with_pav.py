"""Step-level beam search guided by a PAV (`Q + α·A`), next to best-of-N with the same verifier.

Here a procedural arithmetic policy (steps with known error rate) and a tiny random verifier stand in for your
policy and your trained PAV (CPU, seconds):

    python examples/beam_search_with_pav.py

With real models (beam search, best-of-N, majority vote over the same budgets; results.json and a plot):

    trl-pav search --model_name_or_path Qwen/Qwen2.5-Math-1.5B-Instruct --pav_model_name_or_path you/your-pav \\
        --dataset_name HuggingFaceH4/MATH-500 --dataset_train_split test --output_dir outputs/search
"""

import torch

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.search import BeamSearchConfig, ComputeLedger, beam_search, best_of_n, sample_candidates
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_token_classifier


def accuracy(task, results, problems) -> str:
    correct = sum(task.grader.grade(task.step_format.join(r.steps), p.gold) for r, p in zip(results, problems))
    return f"{int(correct)}/{len(problems)}"


def main() -> None:
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate=0.2)  # your HFPolicy(model, tokenizer, step_format) or VLLMPolicy
    tok = task.tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(prover_k=4))  # PAVVerifier.from_pretrained(...)
    problems = task.sample_problems(6, seed=0)
    prompts = [p.prompt for p in problems]
    config = BeamSearchConfig(budget=6, expansions=3, alpha=0.5, prover_k=4)

    # The untrained verifier shows the API (its picks are arbitrary); the task's exact values show what a
    # well-trained PAV does with the same search.
    for name, scorer in (("tiny random PAV", verifier), ("exact values", policy)):
        ledger = ComputeLedger()
        beams = beam_search(policy, scorer, prompts, config, ledger)
        print(f"{name}: beam search {accuracy(task, beams, problems)} correct, compute {ledger.totals()}")
        ledger = ComputeLedger()
        candidates = sample_candidates(policy, prompts, n=6, ledger=ledger)
        best = best_of_n(prompts, candidates, scorer, ledger)
        print(f"{name}: best-of-6 {accuracy(task, best, problems)} correct, compute {ledger.totals()}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
