"""Verifier scoring and training throughput.

(1) Score traces of 8 steps with one forward per trace (the PAV scoring API) vs one forward per prefix (batched,
    the fair baseline: what a prefix-at-a-time PRM interface costs). (2) Training tokens/s of `PAVRewardTrainer` vs a
    plain causal-LM forward/backward/step of the same backbone on the same batches.
Final line: {"benchmark": "scoring", "speedup": ..., "overhead": ...}.
"""

from __future__ import annotations

import tempfile
import time

import torch
from _common import emit
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaConfig

from trl_pav import PAVMetadata, PAVRewardConfig, PAVRewardTrainer, PAVVerifier
from trl_pav.tasks import ArithmeticTask, reference_steps
from trl_pav.testing import tiny_token_classifier

BATCH, STEPS = 32, 60


def traces(n: int):
    task = ArithmeticTask(min_ops=7, max_ops=7)  # 7 operations + the answer: 8 steps per trace
    probs = task.sample_problems(n, seed=0)
    return task, [p.prompt for p in probs], [reference_steps(p.expression) for p in probs]


def backbone_kwargs():
    return dict(hidden_size=128, num_layers=4, num_heads=4, max_positions=256)


def main() -> None:
    task, prompts, steps = traces(256)
    tok = task.tokenizer()
    model = tiny_token_classifier(tok, **backbone_kwargs())
    verifier = PAVVerifier(model, tok, PAVMetadata(), batch_size=BATCH)
    verifier.score(prompts[:8], steps[:8])  # warm-up
    start = time.perf_counter()
    whole = verifier.score(prompts, steps)
    per_trace = time.perf_counter() - start
    prefix_prompts = [p for p, s in zip(prompts, steps) for h in range(len(s) + 1)]
    prefix_steps = [s[:h] for s in steps for h in range(len(s) + 1)]
    start = time.perf_counter()
    prefix_values = verifier.score(prefix_prompts, prefix_steps)
    per_prefix = time.perf_counter() - start
    # Same numbers either way (segment-wise tokenization makes prefixes exact prefixes).
    flat = [v[-1] for v in prefix_values]
    assert max(abs(a - b) for a, b in zip(flat, [x for v in whole for x in v])) < 1e-4
    n_traces = len(prompts)
    print(
        f"scoring {n_traces} traces x 8 steps: one forward per trace {per_trace:.2f}s, one per prefix {per_prefix:.2f}s"
    )

    # Training throughput: PAVRewardTrainer vs a plain causal-LM loop, same backbone size, same token batches.
    rows = [
        {"prompt": p, "completions": s, "labels": [0.5] * len(s), "root_value": 0.5} for p, s in zip(prompts, steps)
    ]
    data = Dataset.from_list(rows * 8)
    args = PAVRewardConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1000,
        dataloader_num_workers=0,
    )
    trainer = PAVRewardTrainer(tiny_token_classifier(tok, **backbone_kwargs()), args, data, processing_class=tok)
    tokens = sum(len(trainer.train_dataset[i]["input_ids"]) for i in range(BATCH * STEPS))
    start = time.perf_counter()
    trainer.train()
    trainer_tps = tokens / (time.perf_counter() - start)

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
    )
    lm = AutoModelForCausalLM.from_config(cfg)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    batches = [trainer.train_dataset[i * BATCH : (i + 1) * BATCH]["input_ids"] for i in range(STEPS)]
    start = time.perf_counter()
    for ids in batches:
        width = max(map(len, ids))
        x = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
        loss = lm(input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    plain_tps = tokens / (time.perf_counter() - start)
    print(f"training: PAVRewardTrainer {trainer_tps:,.0f} tokens/s, plain causal-LM loop {plain_tps:,.0f} tokens/s")
    emit(
        {
            "benchmark": "scoring",
            "baseline": "one batched forward per prefix; plain causal-LM forward/backward loop for training",
            "traces_per_s_one_forward": round(n_traces / per_trace, 1),
            "traces_per_s_per_prefix": round(n_traces / per_prefix, 1),
            "speedup": round(per_prefix / per_trace, 2),
            "trainer_tokens_per_s": round(trainer_tps),
            "plain_lm_tokens_per_s": round(plain_tps),
            "overhead": round(plain_tps / trainer_tps, 3),
        }
    )


if __name__ == "__main__":
    main()
