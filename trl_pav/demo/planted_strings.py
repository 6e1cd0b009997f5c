"""The planted RL claim on planted strings drawn at random: the demo's planted stage, its basic arms only (PAV-GRPO
with the γ prover's exact values against outcome-only GRPO, the demo's seeds and budget), once per drawn string.

Every planted setting (budget, learning rate, α, seeds) was chosen on the default string `dgadf`; a drawn string
was used to choose nothing, so this is the claim out of sample.

    python -m trl_pav.demo.planted_strings --draws 20261204 20261205 20261206 --out outputs/planted_strings
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .common import t_interval

__all__ = ["drawn_string", "pooled_string_summary", "run"]


def drawn_string(draw: int, vocab_size: int = 15, symbols: int = 5) -> str:
    """The planted string of one draw: `symbols` letters of the first `vocab_size`, uniform and independent.

    Example:
        >>> drawn_string(20261204)
        'efgmm'
    """
    from ..tasks import PlantedTask

    letters = PlantedTask(vocab_size=vocab_size, length=symbols, planted=(0,)).symbols
    return "".join(letters[i] for i in np.random.default_rng(draw).integers(0, vocab_size, symbols))


def pooled_string_summary(rows: list[dict]) -> dict:
    """Per string, and pooled over every (string, seed) run: final success and success averaged over training of
    PAV-RL minus outcome-only RL (same seed), mean and 95% t-interval, and how many runs reach 90%. The pooled
    interval treats runs as independent: each string has its own base policy, each seed its own RL run.

    Example:
        >>> row = {"final": {"pav": [0.9, 0.5], "outcome": [0.0, 0.1]}, "mean_success": {"pav": [0.3, 0.2],
        ...        "outcome": [0.0, 0.0]}, "to_90": {"pav": [150, None], "outcome": [None, None]}}
        >>> out = pooled_string_summary([row, row])
        >>> round(out["final_gain"][0], 2), out["reached_90"]
        (0.65, {'pav': 2, 'outcome': 0, 'runs': 4})
    """

    def gains(key: str, rs: list[dict]) -> list[float]:
        return [a - b for r in rs for a, b in zip(r[key]["pav"], r[key]["outcome"])]

    return {
        "strings": len(rows),
        "final_gain": list(t_interval(gains("final", rows))),
        "mean_success_gain": list(t_interval(gains("mean_success", rows))),
        "reached_90": {
            "pav": sum(v is not None for r in rows for v in r["to_90"]["pav"]),
            "outcome": sum(v is not None for r in rows for v in r["to_90"]["outcome"]),
            "runs": sum(len(r["to_90"]["pav"]) for r in rows),
        },
        "per_string": [
            {
                "planted": r.get("planted"),
                "final_gain": list(t_interval(gains("final", [r]))),
                "mean_success_gain": list(t_interval(gains("mean_success", [r]))),
            }
            for r in rows
        ],
    }


def run(draws: list[int], out: str | Path, cfg=None, log=None) -> dict:
    """The planted stage's basic arms for each drawn string (cached under `out/<draw>/`), and their pooled summary.

    Args:
        draws: seeds of the drawn strings (`drawn_string`).
        out: working folder.
        cfg: the `DemoConfig` whose planted settings are used (default: `DemoConfig()`); its planted string is
            replaced by each draw's, and the PPO, learned-PAV, Monte-Carlo and refresh arms are off.
        log: where stage lines go (default: nowhere).
    """
    from ..evaluation import mean_success_over_training
    from . import DemoConfig, planted
    from .common import Progress, quiet_libraries

    quiet_libraries()
    base = cfg or DemoConfig()
    rows = []
    for draw in draws:
        letters = drawn_string(draw, base.planted_vocab_size, len(base.planted_string))
        run_cfg = replace(
            base,
            planted_string=letters,
            planted_ppo_steps=0,
            planted_pav_traces=0,
            gamma_sweep=[base.planted_gamma],  # shares the main arm's runs
            gamma_sweep_seeds=base.planted_seeds[:1],
            planted_mc_rollouts=[],
            planted_prover_refresh=[],
        )
        folder = Path(out) / str(draw)
        res = planted.run(run_cfg, folder, Progress(log or (lambda m: None)))
        rows.append(
            {
                "draw": draw,
                "planted": letters,
                "base_success": res["base_policy_success"],
                "to_90": {arm: res["iterations_to_90"][arm] for arm in ("pav", "outcome")},
                "final": {arm: res["final_accuracy_per_seed"][arm] for arm in ("pav", "outcome")},
                "mean_success": {
                    arm: [mean_success_over_training(c) for c in res["curves_per_seed"][arm]]
                    for arm in ("pav", "outcome")
                },
            }
        )
    return {"rows": rows, "summary": pooled_string_summary(rows), "steps": base.planted_rl_steps}


def main(argv: list[str] | None = None) -> dict:
    """Command line: run the draws and print one JSON line (the rows and their pooled summary)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, nargs="+", default=[20261204, 20261205, 20261206])
    parser.add_argument("--out", default="outputs/planted_strings")
    ns = parser.parse_args(argv)
    result = run(ns.draws, ns.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
