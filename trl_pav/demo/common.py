"""Pieces every demo experiment shares: cached stages, RL arguments, accuracy curves and their spread over seeds."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._compat import activation_checkpointing_off

__all__ = [
    "BuildLedger",
    "Progress",
    "cached",
    "cached_json",
    "fingerprint",
    "new_ledger",
    "quiet_libraries",
    "rl_args",
    "seed_summary",
    "t_interval",
]


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class BuildLedger:
    """What each cached build costs, so a re-run that reads caches still reports what a fresh run takes.

    A build's cost is its wall seconds plus what cache hits inside it saved; a hit counts the cost stored with the
    cache, so a run's wall time plus `saved_seconds()` is what a run from scratch takes on the machines that built
    the caches (caches written before costs were recorded count 0). One ledger per demo run (`new_ledger`).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.builds: list[dict] = []
        self._saved = [0.0]  # seconds that cache hits saved, one entry per enclosing build (the first: the run)

    def saved_seconds(self) -> float:
        """Seconds that cache hits have saved so far in this run."""
        return self._saved[0]

    def hit(self, name: str, seconds: float) -> None:
        """Record a cache hit that saved `seconds` of building."""
        self._saved[-1] += seconds
        self.builds.append({"name": name, "seconds": round(seconds, 1), "cached": True})

    def resumed(self, name: str, total_seconds: float, wall_seconds: float) -> None:
        """Record work that keeps its own account of seconds across runs (labeling shards): `total_seconds` over all
        runs, of which this run spent `wall_seconds` (the rest was read back)."""
        saved = max(0.0, total_seconds - wall_seconds)
        self._saved[-1] += saved
        self.builds.append({"name": name, "seconds": round(max(total_seconds, wall_seconds), 1), "cached": saved > 0})

    def build(self, name: str, fn: Callable[[], Any]) -> tuple[Any, float]:
        """Run `fn()`; returns its value and its fresh cost in seconds (recorded under `name`)."""
        self._saved.append(0.0)
        t0 = time.perf_counter()
        try:
            value = fn()
        finally:
            inner = self._saved.pop()
            self._saved[-1] += inner  # the enclosing builds' fresh cost includes it too
        seconds = time.perf_counter() - t0 + inner
        self.builds.append({"name": name, "seconds": round(seconds, 1), "cached": False})
        return value, seconds


LEDGER = BuildLedger()


def new_ledger(root: Path | None = None) -> BuildLedger:
    """Start a fresh ledger for one run of the demo under `root` (the cache helpers record into it)."""
    global LEDGER
    LEDGER = BuildLedger(root)
    return LEDGER


def _name(path: Path) -> str:
    root = LEDGER.root
    return path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else path.as_posix()


def cached(folder: Path, key: Any, build: Callable[[Path], Any]) -> Path:
    """Run `build(folder)` unless `folder` already holds a finished build for the same key."""
    marker, cost = folder / ".done", folder / ".seconds"
    stamp = fingerprint(key)
    if marker.exists() and marker.read_text() == stamp:
        LEDGER.hit(_name(folder), float(cost.read_text()) if cost.exists() else 0.0)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _, seconds = LEDGER.build(_name(folder), lambda: build(folder))
    cost.write_text(f"{seconds:.1f}")
    marker.write_text(stamp)
    return folder


def cached_json(path: Path, key: Any, build: Callable[[], Any]) -> Any:
    """`build()`'s JSON-able result, stored at `path` with its key so a re-run with the same key reads it back."""
    stamp = fingerprint(key)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == stamp:
            LEDGER.hit(_name(path), float(saved.get("seconds", 0.0)))
            return saved["value"]
    value, seconds = LEDGER.build(_name(path), build)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": stamp, "seconds": round(seconds, 1), "value": value}, default=str))
    tmp.replace(path)
    return value


def rl_args(cls, output_dir: Path, steps: int, seed: int, **kw):
    """TRL GRPO-style arguments of the demo's RL runs (CPU, fp32, no checkpoints, quiet)."""
    return cls(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=32,
        num_generations=8,
        learning_rate=kw.pop("learning_rate", 1e-4),
        beta=kw.pop("beta", 0.001),
        max_completion_length=kw.pop("max_completion_length", 48),
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        seed=seed,
        disable_tqdm=True,
        **activation_checkpointing_off(cls),
        **kw,
    )


# Two-sided 95% Student-t quantiles by degrees of freedom (no scipy dependency for one table); beyond the table the
# Cornish-Fisher expansion in 1/df, within 1e-3 of the exact quantile from 31 degrees of freedom on.
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
}  # fmt: skip


def t_quantile_95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom.

    Example:
        >>> t_quantile_95(2), t_quantile_95(12), round(t_quantile_95(60), 3)
        (4.303, 2.179, 2.0)
    """
    if df < 1:
        raise ValueError(f"t_quantile_95: degrees of freedom must be >= 1, got {df}")
    if df in _T95:
        return _T95[df]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def t_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95% Student-t interval of a few seeds' values. One value has no interval: its bounds are
    None, so a verdict read from them is "not resolved" rather than one run's sign.

    Example:
        >>> [round(x, 3) for x in t_interval([1.0, 2.0, 3.0])]
        [2.0, -0.484, 4.484]
        >>> t_interval([0.02])
        (0.02, None, None)
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("t_interval: no values")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    half = t_quantile_95(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def seed_summary(runs: Sequence[Sequence[tuple[int, float]]]) -> list[dict]:
    """Per evaluated step: mean accuracy over seeds, its min and max, and the seeds' standard deviation."""
    steps = [s for s, _ in runs[0]]
    values = np.array([[a for _, a in run] for run in runs])
    return [
        {
            "step": s,
            "accuracy": float(values[:, i].mean()),
            "min": float(values[:, i].min()),
            "max": float(values[:, i].max()),
            "std": float(values[:, i].std()),
        }
        for i, s in enumerate(steps)
    ]


class Progress:
    """Stage lines with the seconds since the demo started."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.start = log, time.time()

    def __call__(self, msg: str) -> None:
        self.log(f"[{time.time() - self.start:6.0f}s] {msg}")


def quiet_libraries() -> None:
    """Keep the demo's own stage lines readable: no per-map progress bars or load reports from the libraries."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
