"""Helpers shared by the benchmarks: a base policy to measure with, and the closing JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


def arithmetic_policy_dir(steps: int = 200) -> Path:
    """The demo's cached arithmetic base policy if `make demo` ran, else a quickly trained one (cached too)."""
    demo = ROOT / "outputs" / "demo" / "arithmetic" / "policy"
    if (demo / ".done").exists():
        return demo
    out = ROOT / "outputs" / "bench" / f"arith-policy-{steps}"
    if not (out / "config.json").exists():
        from trl_pav.tasks import ArithmeticTask, TinyPolicyConfig, train_base_policy

        train_base_policy(ArithmeticTask(), out, TinyPolicyConfig(max_steps=steps))
    return out


def emit(result: dict) -> None:
    """Print the benchmark's result as one JSON line (the last line of its output)."""
    print(json.dumps(result), flush=True)


def interleave(arms: dict, reps: int, warmup: int = 1, log=None) -> dict[str, list[float]]:
    """Seconds of each arm per repetition, the arms run in turn within each repetition (their order rotating from one
    repetition to the next), so drifts in machine load hit every arm alike. `arms` maps a name to `fn(rep)`, which
    either is timed whole or returns the seconds of the part it measured (set-up left out); the first `warmup`
    repetitions are run and dropped.
    """
    import time

    names = list(arms)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            measured = arms[name](rep)
            seconds = measured if isinstance(measured, float) else time.perf_counter() - start
            if log is not None:
                log(f"rep {rep}{' (warm-up)' if rep < warmup else ''} {name}: {seconds:.3f} s")
            if rep >= warmup:
                times[name].append(seconds)
    return times


def ratio_summary(numerator: list[float], denominator: list[float], digits: int = 3) -> dict:
    """Median of the per-repetition ratios `numerator / denominator`, with their min, max and quartiles."""
    import statistics

    ratios = sorted(a / b for a, b in zip(numerator, denominator))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "median": round(statistics.median(ratios), digits),
        "min": round(ratios[0], digits),
        "max": round(ratios[-1], digits),
        "iqr": [round(quartiles[0], digits), round(quartiles[2], digits)],
        "repetitions": len(ratios),
    }


# Arguments of the RL step benchmarks: one generation batch of 32 completions (8 per prompt, up to 48 tokens), learning
# rate 0 so every arm keeps the same policy and, with the same seed, samples the same completions; CPU, fp32, quiet.
RL_STEP_ARGS = dict(
    max_steps=1,
    per_device_train_batch_size=32,
    num_generations=8,
    max_completion_length=48,
    learning_rate=0.0,
    beta=0.001,
    logging_steps=1000,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    seed=0,
    disable_tqdm=True,
)


def ready_for_steps(trainer):
    """Put a TRL online trainer in the state its training loop would (train mode, optimizer, accumulation count), so
    `rl_step` can drive it one generation batch at a time."""
    trainer.model.train()
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which the benchmarks bypass
    return trainer


def rl_step(trainer, rows: list[dict], seed: int) -> float:
    """Seconds for one generation batch of a TRL online trainer: generate, score, one loss/backward/optimizer step."""
    import time

    torch.manual_seed(seed)
    start = time.perf_counter()
    inputs = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return time.perf_counter() - start
