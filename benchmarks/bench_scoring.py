"""Verifier scoring and training throughput, each against a named baseline in the same run.

(1) Scoring: traces of 8 steps, one forward per trace (the PAV scoring API, every step read in one pass) against one
    forward per prefix (batched: what a prefix-at-a-time PRM interface costs), same verifier and traces.
(2) Training: `PAVRewardTrainer` steps against a plain causal-LM forward/backward/step loop of the same backbone size
    on the same token batches.
Both pairs are interleaved over repetitions after a warm-up; speedups are medians of per-repetition ratios with
their spread. Final line: {"benchmark": "scoring", "speedup": {...}, "overhead": {...}}.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _common import emit, interleave, ratio_summary
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaConfig

from trl_pav import PAVMetadata, PAVRewardConfig, PAVRewardTrainer, PAVVerifier
from trl_pav.tasks import ArithmeticTask, reference_steps
from trl_pav.testing import tiny_token_classifier

BATCH = 32


def traces(n: int):
    task = ArithmeticTask(min_ops=7, max_ops=7)  # 7 operations + the answer: 8 steps per trace
    probs = task.sample_problems(n, seed=0)
    return task, [p.prompt for p in probs], [reference_steps(p.expression) for p in probs]


def backbone_kwargs():
    return dict(hidden_size=128, num_layers=4, num_heads=4, max_positions=256)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=256)
    parser.add_argument("--train_steps", type=int, default=20, help="optimizer steps per repetition")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    task, prompts, steps = traces(args.traces)
    tok = task.tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok, **backbone_kwargs()), tok, PAVMetadata(), batch_size=BATCH)
    prefix_prompts = [p for p, s in zip(prompts, steps) for h in range(len(s) + 1)]
    prefix_steps = [s[:h] for s in steps for h in range(len(s) + 1)]
    # Same numbers either way (segment-wise tokenization makes prefixes exact prefixes).
    whole, prefix_values = verifier.score(prompts, steps), verifier.score(prefix_prompts, prefix_steps)
    assert max(abs(a - b) for a, b in zip([v[-1] for v in prefix_values], [x for v in whole for x in v])) < 1e-4
    scoring = interleave(
        {
            "one_forward_per_trace": lambda rep: verifier.score(prompts, steps),
            "one_forward_per_prefix": lambda rep: verifier.score(prefix_prompts, prefix_steps),
        },
        args.reps,
        args.warmup,
        log=print,
    )

    # Training: the trainer's own steps (collation, loss at the read positions, backward, optimizer) against a plain
    # causal-LM loop on the same batches of token ids.
    rows = [
        {"prompt": p, "completions": s, "labels": [0.5] * len(s), "root_value": 0.5} for p, s in zip(prompts, steps)
    ]
    config = PAVRewardConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=args.train_steps,
        per_device_train_batch_size=BATCH,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1000,
        dataloader_num_workers=0,
    )
    data = Dataset.from_list(rows * 8)
    model = tiny_token_classifier(tok, **backbone_kwargs())

    def trainer_arm(rep: int) -> float:
        trainer = PAVRewardTrainer(model, config, data, processing_class=tok)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start

    tokenized = PAVRewardTrainer(model, config, data, processing_class=tok).train_dataset
    batches = [tokenized[i * BATCH : (i + 1) * BATCH]["input_ids"] for i in range(args.train_steps)]
    tokens = sum(len(r) for ids in batches for r in ids)
    lm = AutoModelForCausalLM.from_config(
        LlamaConfig(
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
    )
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)

    def plain_arm(rep: int) -> None:
        for ids in batches:
            width = max(map(len, ids))
            x = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
            loss = lm(input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

    training = interleave(
        {"pav_reward_trainer": trainer_arm, "plain_lm_loop": plain_arm}, args.reps, args.warmup, log=print
    )
    speedup = ratio_summary(scoring["one_forward_per_prefix"], scoring["one_forward_per_trace"], 2)
    overhead = ratio_summary(training["pav_reward_trainer"], training["plain_lm_loop"])
    med = {k: sorted(v)[len(v) // 2] for k, v in {**scoring, **training}.items()}
    print(
        f"scoring {len(prompts)} traces x 8 steps: one forward per trace {med['one_forward_per_trace']:.2f}s, one per "
        f"prefix {med['one_forward_per_prefix']:.2f}s; speedup median {speedup['median']} "
        f"[{speedup['min']}, {speedup['max']}]"
    )
    print(
        f"training {args.train_steps} steps: PAVRewardTrainer {med['pav_reward_trainer']:.2f}s, plain causal-LM loop "
        f"{med['plain_lm_loop']:.2f}s; overhead median {overhead['median']} [{overhead['min']}, {overhead['max']}]"
    )
    emit(
        {
            "benchmark": "scoring",
            "baseline": "one batched forward per prefix; plain causal-LM forward/backward loop for training",
            "traces_per_s_one_forward": round(len(prompts) / med["one_forward_per_trace"], 1),
            "traces_per_s_per_prefix": round(len(prompts) / med["one_forward_per_prefix"], 1),
            "speedup": speedup,
            "trainer_tokens_per_s": round(tokens / med["pav_reward_trainer"]),
            "plain_lm_tokens_per_s": round(tokens / med["plain_lm_loop"]),
            "overhead": overhead,
        }
    )


if __name__ == "__main__":
    main()
