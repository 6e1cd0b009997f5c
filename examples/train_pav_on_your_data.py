"""Train a process verifier on your own stepwise data, save it, reload it, score new traces.

Your data: one row per trace with `prompt`, `completions` (the steps) and `labels` (per step, the probability that
the trace still ends correct: Monte-Carlo estimates from `trl-pav label`, or 0/1 from human or PRM800K-style labels).
Here a dozen rows and a tiny random backbone stand in for them (CPU, seconds):

    python examples/train_pav_on_your_data.py

With a real model and your labels (a JSONL file or a Hub dataset in the same layout):

    trl-pav train-pav --model_name_or_path Qwen/Qwen2.5-Math-1.5B --dataset_name my_labels.jsonl \\
        --output_dir outputs/my-pav --per_device_train_batch_size 8 --learning_rate 2e-5 --bf16 true
    # (or accelerate launch recipes/train_pav.py --config recipes/configs/math_1.5b/train_pav.yaml)
"""

import tempfile

import torch
from datasets import Dataset

from trl_pav import PAVRewardConfig, PAVRewardTrainer, PAVVerifier
from trl_pav.testing import char_tokenizer, tiny_token_classifier

MY_ROWS = [
    {"prompt": "Q:2*3+1?\n", "completions": ["2*3=6", "6+1=7", "#### 7"], "labels": [0.9, 1.0, 1.0]},
    {"prompt": "Q:2*3+1?\n", "completions": ["2*3=5", "5+1=6", "#### 6"], "labels": [0.0, 0.0, 0.0]},
    {"prompt": "Q:4-2*2?\n", "completions": ["2*2=4", "4-4=0", "#### 0"], "labels": [0.8, 1.0, 1.0]},
    {"prompt": "Q:4-2*2?\n", "completions": ["4-2=2", "2*2=4", "#### 4"], "labels": [0.1, 0.0, 0.0]},
] * 3


def main() -> None:
    tok = char_tokenizer()
    output_dir = tempfile.mkdtemp()
    args = PAVRewardConfig(
        output_dir=output_dir,
        max_steps=10,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        prover_k=4,  # the Best-of-4 prover whose advantages the verifier will serve
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    data = Dataset.from_list(MY_ROWS)
    trainer = PAVRewardTrainer(tiny_token_classifier(tok), args, data, eval_dataset=data, processing_class=tok)
    trainer.train()
    print("held-out metrics:", {k: round(v, 3) for k, v in trainer.evaluate().items() if k.startswith("eval_")})
    trainer.save_model()  # weights, tokenizer, pav_config.json and the model card (README.md)
    verifier = PAVVerifier.from_pretrained(output_dir)
    prompts, steps = ["Q:2*3+1?\n"], [["2*3=6", "6+1=7", "#### 7"]]
    print("Q per step:", [round(q, 3) for q in verifier.score(prompts, steps)[0]])
    print("Bo4 prover advantages:", [round(a, 3) for a in verifier.advantages(prompts, steps)[0]])


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
