r"""GPU runbook: the MATH recipe end to end at a tiny budget, timed stage by stage.

On a machine with an NVIDIA GPU, vLLM and DeepSpeed, it runs the shipped recipes as a user would
(`accelerate launch recipes/<stage>.py --config <config>`), each from its config in `recipes/configs/math_1.5b/`
with the sizes overridden (the derived configs are written to `<out>/configs/`, the logs to `<out>/logs/`):

  1. label      `recipes/label.py`: MC labels of 16 MATH-500 problems with vLLM (first pit, Bo4 prover)
  2. train_pav  `recipes/train_pav.py --use_peft`: a LoRA PAV on those labels, a few steps
  3. rl         `recipes/rl_pav.py`: PAV-GRPO for a few steps under DeepSpeed ZeRO-3 (`zero3.yaml`), vLLM colocated
  4. search     `recipes/search_eval.py`: PAV beam search (and best-of-N baselines, base-policy sampling) with vLLM

MATH-500 is fetched from the Hub with `datasets` (`--math500`, default `HuggingFaceH4/MATH-500`) or read from a
jsonl file (`--math500 FILE`).

Each stage's output is checked (files present, values finite and in range; search not below base-policy sampling
beyond noise: `compare_to_base_sampling`) and its wall time and throughput
(problems/s, rollouts/s, tokens/s, from what the recipe writes: labeling metadata, trainer logs, search results)
recorded. The last line printed is one JSON object. The base model is `--model` (a Hub id or a local folder; the
MATH configs expect the rejection-fine-tuned policy of `sft.yaml`, which this runbook skips).

    python benchmarks/gpu/run_math_tiny.py                       # GPU: Qwen2.5-Math-1.5B-Instruct
    python benchmarks/gpu/run_math_tiny.py --model /path/to/model
    python benchmarks/gpu/run_math_tiny.py --cpu-dry-run          # the same stages on a CPU, tiny model, HF backend

Without an NVIDIA GPU, vLLM or DeepSpeed it stops with a one-line message (exit status 2) unless `--cpu-dry-run`
is given: then a tiny randomly initialised model (`trl_pav.testing`) goes through the same stages with the HF
generation backend, `use_cpu: true`, and ZeRO-3 on the CPU (`zero3_cpu.yaml`, `DS_ACCELERATOR=cpu`) for RL when
DeepSpeed is importable (plain one-process otherwise). The dry run checks the runbook, not the hardware.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATH_CONFIGS = ROOT / "recipes" / "configs" / "math_1.5b"
ACCELERATE = ROOT / "recipes" / "accelerate_configs"
MATH500_HUB = "HuggingFaceH4/MATH-500"  # the default source: fetched with `datasets` into <out>/data/
DEFAULT_MODEL = "Qwen/Qwen2.5-Math-1.5B-Instruct"  # the base of recipes/configs/math_1.5b/sft.yaml


class RunbookError(Exception):
    """A failure the runbook explains in one line (no traceback)."""


def log(msg: str) -> None:
    print(f"[gpu-runbook {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Budgets: (GPU, CPU dry run). A flag left unset takes the value of its mode.
BUDGETS = {
    "problems": (16, 4),
    "n_cov": (2, 2),
    "n_mc": (8, 2),
    "label_tokens": (512, 16),
    "pav_steps": (8, 2),
    "rl_steps": (4, 1),
    "rl_batch": (8, 4),
    "num_generations": (8, 4),
    "rl_tokens": (512, 12),
    "search_problems": (16, 2),
    "search_budgets": ([4, 8], [3]),
    "search_depth": (16, 2),
    "search_tokens": (1024, 12),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "gpu-runbook"), help="working folder (wiped first)")
    p.add_argument(
        "--math500",
        default=MATH500_HUB,
        help=f"MATH-500: a jsonl file (problem, answer, ...) or a Hub dataset id (default {MATH500_HUB}, split test)",
    )
    p.add_argument(
        "--noise-z",
        type=float,
        default=2.0,
        help="search may fall below base-policy sampling by at most this many paired standard errors",
    )
    p.add_argument("--model", default=None, help=f"base policy, Hub id or folder (GPU default: {DEFAULT_MODEL})")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny local model on the CPU, HF backend")
    p.add_argument("--num-gpus", type=int, default=None, help="processes (GPUs) per stage; default: all visible")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto", help="auto: if the model has one")
    p.add_argument(
        "--deepspeed",
        choices=["auto", "on", "off"],
        default="auto",
        help="dry run only: ZeRO-3 on the CPU for RL (auto: when deepspeed is importable)",
    )
    for name, (gpu, cpu) in BUDGETS.items():
        kind = int if not isinstance(gpu, list) else None
        flag = "--" + name.replace("_", "-")
        if kind is None:
            p.add_argument(flag, type=int, nargs="+", default=None, help=f"default {gpu} (dry run {cpu})")
        else:
            p.add_argument(flag, type=kind, default=None, help=f"default {gpu} (dry run {cpu})")
    p.add_argument("--stage-timeout", type=int, default=1800, help="seconds per stage before it is stopped")
    args = p.parse_args(argv)
    for name, (gpu, cpu) in BUDGETS.items():
        if getattr(args, name) is None:
            setattr(args, name, cpu if args.cpu_dry_run else gpu)
    if args.rl_batch % args.num_generations:
        p.error(f"--rl-batch {args.rl_batch} must be a multiple of --num-generations {args.num_generations}")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Environment checks and device facts


def check_environment(args) -> dict:
    """Facts about the machine; raises `RunbookError` when the GPU run cannot work here."""
    import torch

    facts: dict = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("trl", "transformers", "vllm", "deepspeed", "peft"):
        facts[mod] = _version(mod)
    if args.cpu_dry_run:
        facts.update(device="cpu (dry run)", gpu_count=0, gpu_memory_gib=None)
        return facts
    dry = "; or pass --cpu-dry-run to run the same stages on the CPU with a tiny model"
    if torch.version.cuda is None or not torch.cuda.is_available():
        build = f"torch {torch.__version__} built without CUDA" if torch.version.cuda is None else "no device visible"
        raise RunbookError(f"no NVIDIA GPU available to torch ({build}): run this on a GPU machine{dry}")
    if facts["vllm"] is None:
        raise RunbookError(f'vLLM is not installed (pip install "trl-pav[vllm]"): labeling and search use it{dry}')
    if facts["deepspeed"] is None:
        raise RunbookError(f'DeepSpeed is not installed (pip install "trl-pav[deepspeed]"): RL runs under ZeRO-3{dry}')
    count = torch.cuda.device_count()
    if args.num_gpus is not None and not 1 <= args.num_gpus <= count:
        raise RunbookError(f"--num-gpus {args.num_gpus} but {count} GPU(s) are visible")
    gpus = _nvidia_smi(["name", "memory.total", "driver_version"])
    if gpus:
        facts["device"] = gpus[0][0]
        facts["gpu_memory_gib"] = round(float(gpus[0][1]) / 1024, 1)
        facts["driver"] = gpus[0][2]
    else:  # no nvidia-smi: ask torch (this creates a CUDA context in this process, which the stages do not share)
        props = torch.cuda.get_device_properties(0)
        facts["device"] = props.name
        facts["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    facts["gpu_count"] = count
    return facts


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


def _nvidia_smi(fields: list[str]) -> list[list[str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[x.strip() for x in line.split(",")] for line in out.splitlines() if line.strip()]


class GpuMemoryPoller:
    """Peak GPU memory in use (MiB, summed over the GPUs) while a stage runs, from `nvidia-smi` once a second."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            used = [float(r[0]) for r in _nvidia_smi(["memory.used"]) if r and r[0].replace(".", "").isdigit()]
            if used:
                self.peak_mib = max(self.peak_mib, sum(used))
            self._stop.wait(1.0)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def peak_gib(self) -> float | None:
        return round(self.peak_mib / 1024, 2) if self.enabled else None


# ----------------------------------------------------------------------------------------------------------------
# Running one recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def derived_config(stage_config: str, overrides: dict, out: Path) -> Path:
    """The shipped MATH config with `overrides` applied (a `None` value removes the key), written to `out/configs`."""
    import yaml

    config = yaml.safe_load((MATH_CONFIGS / stage_config).read_text())
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = out / "configs" / stage_config
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Derived by benchmarks/gpu/run_math_tiny.py from recipes/configs/math_1.5b/{stage_config}\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def run_stage(name: str, recipe: str, config: Path, launch: list[str], env: dict, out: Path, args, gpu: bool):
    """Run `accelerate launch <launch> recipes/<recipe>.py --config <config>`; its wall time, its JSON summary
    (the one line the recipe prints) and the trainer's logged dicts."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--main_process_port", str(_free_port())]
    cmd += [str(ROOT / "recipes" / f"{recipe}.py"), "--config", str(config)]
    shown = " ".join(["accelerate launch", *launch, f"recipes/{recipe}.py", "--config", str(config)])
    log(f"{name}: {shown}")
    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with GpuMemoryPoller(gpu) as poller, log_path.open("w") as logf:
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=logf, text=True, timeout=args.stage_timeout
            )
        except subprocess.TimeoutExpired:
            msg = f"{name}: stopped after {args.stage_timeout} s (--stage-timeout); log: {log_path}"
            raise RunbookError(msg) from None
    seconds = time.perf_counter() - start
    stderr = log_path.read_text()
    with log_path.open("a") as logf:
        logf.write("\n--- stdout ---\n" + proc.stdout)
    if proc.returncode != 0:
        raise RunbookError(
            f"{name}: {recipe}.py exited with status {proc.returncode}: {_first_error(stderr)} (log: {log_path})"
        )
    summaries = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    if len(summaries) != 1:
        raise RunbookError(f"{name}: {recipe}.py printed {len(summaries)} JSON summaries, not 1 (log: {log_path})")
    logs = []
    for line in proc.stdout.splitlines():
        if line.startswith("{'"):
            with contextlib.suppress(ValueError, SyntaxError):
                logs.append(ast.literal_eval(line))
    return {"seconds": seconds, "summary": json.loads(summaries[0]), "logs": logs, "peak_gib": poller.peak_gib}


def _first_error(stderr: str) -> str:
    """The recipe's own error line (the first `SomeError: ...` line: the launcher's re-raise comes after it)."""
    import re

    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", line)]
    return (errors[0] if errors else lines[-1] if lines else "(no output)")[:400]


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _rate(amount, seconds) -> float | None:
    amount, seconds = _num(amount), _num(seconds)
    return round(amount / seconds, 3) if amount is not None and seconds else None


def _require(ok: bool, stage: str, what: str) -> None:
    if not ok:
        raise RunbookError(f"{stage}: output check failed: {what}")


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


def prepare_model(args, out: Path) -> str:
    """The base policy: `--model`, or in a dry run a tiny randomly initialised Llama with a character tokenizer."""
    if args.model is not None:
        return args.model
    if not args.cpu_dry_run:
        return DEFAULT_MODEL
    sys.path.insert(0, str(ROOT))
    from trl_pav.testing import char_tokenizer, tiny_causal_lm

    path = out / "model"
    tok = char_tokenizer()
    tiny_causal_lm(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def fetch_math500(source: str, folder: Path) -> Path:
    """MATH-500's test split from the Hub id `source`, through `datasets`, written to `folder/math500.jsonl` (the
    stages read that file). Raises `RunbookError` saying what to do when it cannot be fetched (no Hub access)."""
    try:
        from datasets import load_dataset

        data = load_dataset(source, split="test")
    except Exception as e:  # offline, a wrong id, no such split: one line with the way out
        raise RunbookError(
            f"could not fetch MATH-500 ({source!r}, split test) with datasets: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; pass --math500 FILE (a MATH-500 jsonl with problem and "
            "answer) or allow Hub access"
        ) from None
    missing = [c for c in ("problem", "answer") if c not in data.column_names]
    if missing:
        raise RunbookError(f"{source!r} has no column(s) {missing} (found {data.column_names}): not MATH-500")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "math500.jsonl"
    data.to_json(str(path), lines=True)
    log(f"MATH-500: {len(data)} problems from {source} (datasets) -> {path}")
    return path


def compare_to_base_sampling(results: dict, methods: tuple[str, ...], z: float = 2.0) -> dict:
    """Each search method's accuracy at each N against base-policy sampling (`random_pick` at the same N: the mean
    accuracy of the N samples), paired over problems: `below` when `mean(method - base) + z * SE < 0`, i.e. the
    method is below sampling by more than noise.

    Example:
        >>> r = {"methods": {"pav_beam": [{"n": 4, "accuracy": 0.0, "per_problem_correct": [0.0, 0.0, 0.0, 0.0]}],
        ...                  "random_pick": [{"n": 4, "accuracy": 0.5, "per_problem_correct": [0.5, 0.5, 0.5, 0.5]}]}}
        >>> compare_to_base_sampling(r, ("pav_beam",))["pav_beam"][4]["below"]
        True
    """
    base = {r["n"]: r["per_problem_correct"] for r in results["methods"].get("random_pick", [])}
    if not base:
        raise RunbookError("search: no random_pick records (base-policy sampling) to compare with")
    out: dict = {}
    for method in methods:
        for rec in results["methods"].get(method, []):
            ref = base.get(rec["n"])
            if ref is None:
                raise RunbookError(f"search: random_pick has no record at N={rec['n']} to compare {method} with")
            d = [a - b for a, b in zip(rec["per_problem_correct"], ref, strict=True)]
            mean = sum(d) / len(d)
            var = sum((x - mean) ** 2 for x in d) / (len(d) - 1) if len(d) > 1 else 0.0
            se = math.sqrt(var / len(d))
            out.setdefault(method, {})[rec["n"]] = {
                "accuracy": rec["accuracy"],
                "base": sum(ref) / len(ref),
                "diff": mean,
                "se": se,
                "below": mean + z * se < 0,
            }
    return out


def wants_chat_template(args, model: str) -> bool:
    if args.chat_template != "auto":
        return args.chat_template == "on"
    sys.path.insert(0, str(ROOT))
    from trl_pav.tokenization import load_tokenizer

    try:
        return bool(getattr(load_tokenizer(model), "chat_template", None))
    except Exception as e:  # a missing model fails with its own message in the first stage
        log(f"could not read the tokenizer of {model} ({type(e).__name__}); chat template off")
        return False


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cpu_dry_run:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import re

    local_data = Path(args.math500).is_file()
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", args.math500) is not None
    hub_id = hub_id and Path(args.math500).suffix not in (".json", ".jsonl", ".parquet", ".csv")
    if not local_data and not hub_id:
        raise RunbookError(f"no MATH-500 file at {args.math500} (--math500: a jsonl file or a Hub dataset id)")
    facts = check_environment(args)
    gpu = not args.cpu_dry_run
    use_ds = gpu or args.deepspeed == "on" or (args.deepspeed == "auto" and facts["deepspeed"] is not None)
    if args.cpu_dry_run and args.deepspeed == "on" and facts["deepspeed"] is None:
        raise RunbookError('--deepspeed on but DeepSpeed is not installed (pip install "trl-pav[deepspeed]")')
    out = Path(args.out).resolve()
    if out.is_dir() and any(out.iterdir()) and not (out / ".gpu-runbook").exists():
        raise RunbookError(f"--out {out} is a non-empty folder this runbook did not write: pick another")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / ".gpu-runbook").write_text("written by benchmarks/gpu/run_math_tiny.py; wiped on the next run\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if args.cpu_dry_run and use_ds:
        env["DS_ACCELERATOR"] = "cpu"

    t0 = time.perf_counter()
    math500 = Path(args.math500).resolve() if local_data else fetch_math500(args.math500, out / "data")
    model = prepare_model(args, out)
    chat = wants_chat_template(args, model)
    log(f"{'cpu dry run' if args.cpu_dry_run else facts['device']}: model {model}, chat template {chat}")

    n_gpus = args.num_gpus or facts.get("gpu_count") or 1
    if gpu:
        plain = ["--config_file", str(ACCELERATE / ("single_gpu.yaml" if n_gpus == 1 else "multi_gpu.yaml"))]
        plain += ["--num_processes", str(n_gpus)]
        zero3 = ["--config_file", str(ACCELERATE / "zero3.yaml"), "--num_processes", str(n_gpus)]
    else:
        plain = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
        plain += ["--dynamo_backend", "no"]
        zero3 = ["--config_file", str(ACCELERATE / "zero3_cpu.yaml"), "--num_processes", "1"] if use_ds else plain
    # What differs between the GPU and the dry run in every config: backend, precision, device.
    device = {"dtype": "bfloat16"} if gpu else {"dtype": "float32"}
    trainer_device = {"bf16": True} if gpu else {"bf16": False, "use_cpu": True, "gradient_checkpointing": False}
    problems = {"dataset_name": str(math500), "use_chat_template": chat}
    stages: dict[str, dict] = {}

    # 1. MC labels with vLLM.
    labels = out / "labels"
    cfg = derived_config(
        "label.yaml",
        {
            "model_name_or_path": model,
            **device,
            **problems,
            "dataset_train_split": "train",
            "num_problems": args.problems,
            "output_dir": str(labels),
            "n_cov": args.n_cov,
            "n_mc": args.n_mc,
            "shard_size": max(1, args.problems // max(n_gpus, 1)),
            "max_new_tokens": args.label_tokens,
            "use_vllm": gpu,
            "show_progress": False,
        },
        out,
    )
    run = run_stage("label", "label", cfg, plain, env, out, args, gpu)
    meta_path = labels / "metadata.json"
    _require(meta_path.is_file(), "label", f"no {meta_path}")
    meta = json.loads(meta_path.read_text())
    _require(meta.get("num_traces", 0) > 0 and meta.get("rollouts", 0) > 0, "label", f"no traces or rollouts: {meta}")
    _require(meta.get("num_labels", 0) > 0, "label", "no step labels")
    inner = _num(meta.get("wall_seconds"))
    stages["label"] = {
        "seconds": round(run["seconds"], 2),
        "labeling_seconds": inner,
        "problems": args.problems,
        "traces": meta["num_traces"],
        "labels": meta["num_labels"],
        "rollouts": meta["rollouts"],
        "generated_tokens": meta.get("generated_tokens"),
        "problems_per_s": _rate(args.problems, run["seconds"]),
        "rollouts_per_s": _rate(meta["rollouts"], inner),
        "tokens_per_s": _rate(meta.get("generated_tokens"), inner),
        "peak_gpu_memory_gib": run["peak_gib"],
    }
    log(f"label: {meta['num_traces']} traces, {meta['rollouts']} rollouts, {run['seconds']:.1f} s")

    # 2. A LoRA PAV.
    pav = out / "pav"
    cfg = derived_config(
        "train_pav.yaml",
        {
            "model_name_or_path": model,
            **device,
            **trainer_device,
            "dataset_name": str(labels),
            "output_dir": str(pav),
            "eval_fraction": 0.25,
            "eval_strategy": "no",
            "eval_steps": None,
            "max_steps": args.pav_steps,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-4,
            "warmup_steps": 0,
            "save_strategy": "no",
            "save_steps": None,
            "logging_steps": 1,
            "use_peft": True,
            "lora_r": 16,
            "lora_alpha": 32,
        },
        out,
    )
    run = run_stage("train_pav", "train_pav", cfg, plain, env, out, args, gpu)
    summary = run["summary"]
    _require(summary.get("global_step") == args.pav_steps, "train_pav", f"ran {summary.get('global_step')} steps")
    _require(_num(summary.get("train_loss")) is not None, "train_pav", f"loss {summary.get('train_loss')}")
    _require((pav / "adapter_config.json").is_file(), "train_pav", f"no LoRA adapter in {pav}")
    final = next((x for x in reversed(run["logs"]) if "train_runtime" in x), {})
    stages["train_pav"] = {
        "seconds": round(run["seconds"], 2),
        "train_seconds": _num(final.get("train_runtime")),
        "steps": summary["global_step"],
        "train_loss": round(summary["train_loss"], 4),
        "samples_per_s": _num(final.get("train_samples_per_second")),
        "steps_per_s": _num(final.get("train_steps_per_second")),
        "peak_gpu_memory_gib": run["peak_gib"],
    }
    log(f"train_pav: {summary['global_step']} steps, loss {summary['train_loss']:.4f}, {run['seconds']:.1f} s")

    # 3. PAV-GRPO under ZeRO-3 (vLLM colocated on the GPU).
    rl = out / "rl"
    processes = n_gpus if gpu else 1
    cfg = derived_config(
        "rl_pav.yaml",
        {
            "model_name_or_path": model,
            **device,
            **trainer_device,
            "verifier_model_name_or_path": str(pav),
            **problems,
            "num_problems": args.problems,
            "output_dir": str(rl),
            "max_steps": args.rl_steps,
            "num_train_epochs": None,
            "per_device_train_batch_size": args.rl_batch,
            "gradient_accumulation_steps": 1,
            "num_generations": args.num_generations,
            "max_completion_length": args.rl_tokens,
            "use_vllm": gpu,
            "vllm_mode": "colocate" if gpu else None,
            "vllm_gpu_memory_utilization": 0.3 if gpu else None,
            "save_strategy": "no",
            "save_steps": None,
            "logging_steps": 1,
        },
        out,
    )
    run = run_stage("rl", "rl_pav", cfg, zero3, env, out, args, gpu)
    summary = run["summary"]
    _require(summary.get("global_step") == args.rl_steps, "rl", f"ran {summary.get('global_step')} steps")
    _require(not summary.get("outcome_only"), "rl", "ran outcome-only (no verifier)")
    weights = list(rl.glob("*.safetensors")) + list(rl.glob("*.bin"))
    _require(bool(weights), "rl", f"no saved policy weights in {rl}")
    steps = [x for x in run["logs"] if "loss" in x and "train_runtime" not in x]
    _require(bool(steps), "rl", "no training step logged")
    pav_keys = sorted({k for x in steps for k in x if k.startswith("pav/")})
    _require(bool(pav_keys), "rl", "no pav/* metric logged (verifier not used)")
    for x in steps:
        for k in pav_keys:
            _require(k not in x or _num(x[k]) is not None, "rl", f"non-finite {k}: {x.get(k)}")
    final = next((x for x in reversed(run["logs"]) if "train_runtime" in x), {})
    train_s = _num(final.get("train_runtime"))
    rollouts = summary["global_step"] * args.rl_batch * processes
    completion_tokens = sum((_num(x.get("completions/mean_length")) or 0.0) * args.rl_batch * processes for x in steps)
    stages["rl"] = {
        "seconds": round(run["seconds"], 2),
        "train_seconds": train_s,
        "zero3": use_ds,
        "steps": summary["global_step"],
        "rollouts": rollouts,
        "completion_tokens": round(completion_tokens),
        "rollouts_per_s": _rate(rollouts, train_s),
        "completion_tokens_per_s": _rate(completion_tokens, train_s),
        "reward": _num(steps[-1].get("reward")),
        "pav_metrics": pav_keys,
        "peak_gpu_memory_gib": run["peak_gib"],
    }
    log(f"rl: {summary['global_step']} steps, {rollouts} rollouts, {run['seconds']:.1f} s")

    # 4. Beam search with the PAV (and best-of-N baselines on the same verifier).
    search = out / "search"
    cfg = derived_config(
        "search_eval.yaml",
        {
            "model_name_or_path": model,
            **device,
            **problems,
            "num_problems": args.search_problems,
            "pav_model_name_or_path": str(pav),
            "orm_model_name_or_path": None,
            "output_dir": str(search),
            "methods": ["pav_beam", "pav_bon", "majority", "random_pick"],
            "budgets": args.search_budgets,
            "max_depth": args.search_depth,
            "max_new_tokens": args.search_tokens,
            "use_vllm": gpu,
            "vllm_gpu_memory_utilization": 0.6 if gpu else None,
        },
        out,
    )
    run = run_stage("search", "search_eval", cfg, plain, env, out, args, gpu)
    results_path = search / "results.json"
    _require(results_path.is_file(), "search", f"no {results_path}")
    results = json.loads(results_path.read_text())
    _require(results.get("num_problems") == args.search_problems, "search", f"{results.get('num_problems')} problems")
    records = [(m, r) for m, recs in results["methods"].items() for r in recs]
    for m, r in records:
        _require(0.0 <= r["accuracy"] <= 1.0, "search", f"{m} accuracy {r['accuracy']}")
        _require(r["generated_tokens"] > 0, "search", f"{m} at N={r['n']} generated no token")
    _require((search / "search.png").is_file(), "search", "no search.png")
    # Search must not do worse than sampling the base policy once (random_pick: the mean accuracy of the N samples).
    versus_base = compare_to_base_sampling(results, ("pav_beam", "pav_bon"), args.noise_z)
    below = [f"{m} at N={n}: {v['accuracy']:.3f} vs {v['base']:.3f}" for m, by_n in versus_base.items()
             for n, v in by_n.items() if v["below"]]  # fmt: skip
    _require(not below, "search", f"below base-policy sampling beyond {args.noise_z} paired SEs: {'; '.join(below)}")
    gen = sum(r["generated_tokens"] for _, r in records)
    ver = sum(r.get("verifier_tokens", 0) for _, r in records)
    secs = sum(r.get("seconds", 0.0) for _, r in records)
    beam = [r for m, r in records if m == "pav_beam"]
    beam_secs = sum(r.get("seconds", 0.0) for r in beam)
    stages["search"] = {
        "seconds": round(run["seconds"], 2),
        "search_seconds": round(secs, 2),
        "problems": args.search_problems,
        "budgets": args.search_budgets,
        "methods": sorted(results["methods"]),
        "generated_tokens": gen,
        "verifier_tokens": ver,
        "problem_searches_per_s": _rate(len(records) * args.search_problems, secs),
        "tokens_per_s": _rate(gen, secs),
        "verifier_tokens_per_s": _rate(ver, secs),
        "beam_problems_per_s": _rate(len(beam) * args.search_problems, beam_secs),
        "beam_tokens_per_s": _rate(sum(r["generated_tokens"] for r in beam), beam_secs),
        "beam_accuracy": {str(r["n"]): r["accuracy"] for r in beam},
        "base_sampling_accuracy": {str(r["n"]): r["accuracy"] for m, r in records if m == "random_pick"},
        "versus_base_sampling": versus_base,
        "peak_gpu_memory_gib": run["peak_gib"],
    }
    log(f"search: {len(records)} (method, N) points on {args.search_problems} problems, {run['seconds']:.1f} s")

    result = {
        "benchmark": "gpu_math_tiny",
        "mode": "cpu-dry-run" if args.cpu_dry_run else "gpu",
        "device": facts["device"],
        "gpu_count": facts.get("gpu_count"),
        "processes": processes,
        "gpu_memory_gib": facts.get("gpu_memory_gib"),
        "model": model if not args.cpu_dry_run else "tiny random Llama (trl_pav.testing), char tokenizer",
        "backend": "vllm" if gpu else "hf",
        "zero3": use_ds,
        "versions": {k: facts.get(k) for k in ("torch", "cuda", "trl", "transformers", "vllm", "deepspeed", "peft")},
        "stages": stages,
        **{f"{name}_s": s["seconds"] for name, s in stages.items()},
        "total_s": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    try:
        main()
    except RunbookError as e:
        print(f"run_math_tiny: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("run_math_tiny: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
