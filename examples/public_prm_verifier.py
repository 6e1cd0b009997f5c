"""A public process reward model as the verifier: Qwen2.5-Math-PRM, Math-Shepherd or RLHFlow conventions.

The adapters implement the same `score(prompts, steps)` as a PAV, so they drop into beam search, best-of-N, the
PAV RL trainers (as Q estimates: advantages are differences of their step probabilities) and step-error evaluation.
Here tiny random models built with each PRM's conventions stand in for the real ones (CPU, seconds):

    python examples/public_prm_verifier.py

With the real models (GPU recommended):

    from trl_pav.prm_adapters import QwenMathPRM, MathShepherdPRM, RLHFlowPRM
    prm = QwenMathPRM.from_pretrained("Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True, dtype="bfloat16")
    prm = MathShepherdPRM.from_pretrained("peiyi9979/math-shepherd-mistral-7b-prm")
    prm = RLHFlowPRM.from_pretrained("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")

    trl-pav rl --model_name_or_path Qwen/Qwen2.5-Math-1.5B-Instruct --dataset_name my_problems.jsonl \\
        --verifier_model_name_or_path RLHFlow/Llama3.1-8B-PRM-Deepseek-Data --verifier_type rlhflow \\
        --step_separator $'\\n\\n' --pav_alpha 3.0 --output_dir outputs/prm-rl
"""

import torch

from trl_pav import StepFormat
from trl_pav.prm_adapters import MathShepherdPRM, QwenMathPRM, RLHFlowPRM
from trl_pav.search import BeamSearchConfig, beam_search
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_public_prm


def main() -> None:
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate=0.2)
    prompts = [p.prompt for p in task.sample_problems(2, seed=0)]
    for name, cls in (("qwen-prm", QwenMathPRM), ("math-shepherd", MathShepherdPRM), ("rlhflow", RLHFlowPRM)):
        prm = cls(*tiny_public_prm(name), step_format=StepFormat())  # cls.from_pretrained("<hub id>")
        values = prm.score(prompts[:1], [["2*3=6", "6+1=7"]])[0]
        results = beam_search(policy, prm, prompts, BeamSearchConfig(budget=6, expansions=3, alpha=0.5, prover_k=1))
        reward = prm.as_reward_func(mode="final")(prompts=prompts[:1], completions=["\n".join(results[0].steps)])
        print(f"{name}: step values {[round(v, 3) for v in values]}, beam answer {results[0].steps[-1]!r}, "
              f"reward {reward[0]:.3f}")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
