"""Scale-out on one machine: the labeling recipe on two processes (one thread each) vs one process (two threads).

Baseline: one process with every core. Both label the same problems with the same seeds; the benchmark also checks
that the two label sets are identical. Final line: {"benchmark": "processes", "speedup": ..., ...}.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

from _common import ROOT, arithmetic_policy_dir, emit

from trl_pav import load_labels


def run(processes: int, policy: str, out: str, problems: int) -> float:
    args = [str(ROOT / "recipes" / "label.py"), "--config", str(ROOT / "recipes/configs/arithmetic/label.yaml")]
    args += ["--model_name_or_path", policy, "--output_dir", out, "--num_problems", str(problems)]
    args += ["--show_progress", "false", "--overwrite", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // processes), "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = str(ROOT / "recipes/accelerate_configs/cpu_2proc.yaml")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config]
        cmd += ["--main_process_port", str(port), *args]
    start = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=64)
    args = parser.parse_args()
    policy = str(arithmetic_policy_dir())
    base = ROOT / "outputs" / "bench" / "processes"
    one = run(1, policy, str(base / "one"), args.problems)
    two = run(2, policy, str(base / "two"), args.problems)
    labels_one, meta = load_labels(base / "one")
    labels_two, _ = load_labels(base / "two")
    emit(
        {
            "benchmark": "processes",
            "baseline": "one process, 2 threads",
            "problems": args.problems,
            "traces": meta["num_traces"],
            "rollouts": meta["rollouts"],
            "one_process_s": round(one, 1),
            "two_processes_s": round(two, 1),
            "speedup": round(one / two, 2),
            "identical_labels": labels_one.to_list() == labels_two.to_list(),
        }
    )


if __name__ == "__main__":
    main()
