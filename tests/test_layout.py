"""Project layout rules: `trl_pav.experiments` never imports `trl_pav.demo` (the demo may import experiments)."""

import ast
import dataclasses
from pathlib import Path

import pytest

import trl_pav

EXPERIMENTS = Path(trl_pav.__file__).parent / "experiments"


def demo_imports(source: str, module: str) -> list[str]:
    """The imports of `trl_pav.demo` in `source`, the code of `module` (dotted, e.g. `trl_pav.experiments.x`)."""
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.level and len(base) < 1:
                continue  # beyond the top package
            target = ".".join([*base, node.module] if node.module else base)
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        found += [f"line {node.lineno}: {t}" for t in targets if t == "trl_pav.demo" or t.startswith("trl_pav.demo.")]
    return found


@pytest.mark.parametrize(
    "code, bad",
    [
        ("from ..demo import DemoConfig", True),
        ("from ..demo.arithmetic import saved_pools", True),
        ("from .. import demo", True),
        ("import trl_pav.demo.arithmetic", True),
        ("from trl_pav.demo import run_demo", True),
        ("def f():\n    from ..demo import x", True),
        ("from ..evaluation import ProblemPools", False),
        ("from .arithmetic_verifiers import train_verifier", False),
        ("from ..demos import x", False),
        ("from . import demo", False),  # trl_pav.experiments.demo, not the demo package
    ],
)
def test_demo_imports_are_found(code, bad):
    assert bool(demo_imports(code, "trl_pav.experiments.x")) is bad


def test_experiments_do_not_import_the_demo():
    files = sorted(EXPERIMENTS.glob("*.py"))
    assert files
    found = {f.name: hits for f in files if (hits := demo_imports(f.read_text(), f"trl_pav.experiments.{f.stem}"))}
    assert not found, f"trl_pav/experiments must not import trl_pav.demo: {found}"


def test_verifier_recipe_defaults_are_the_demos():
    from trl_pav.demo import DemoConfig
    from trl_pav.experiments.arithmetic_verifiers import VerifierRecipe

    demo = DemoConfig()
    for f in dataclasses.fields(VerifierRecipe):
        assert getattr(VerifierRecipe(), f.name) == getattr(demo, f.name), f.name


def test_shared_saved_pools_rebuild_the_demo_pools(tmp_path):
    """The experiments' copy of the demo's pools loader re-deals what the demo saved."""
    import json

    from trl_pav.demo import DemoConfig
    from trl_pav.demo.arithmetic import demo_pools, demo_task, task_kwargs
    from trl_pav.experiments.arithmetic_verifiers import saved_pools

    pools = demo_pools(DemoConfig.quick())
    task = demo_task(DemoConfig.quick())
    spec = {**pools.spec(), "task": task.name, "task_kwargs": task_kwargs(task)}
    (tmp_path / "pools.json").write_text(json.dumps(spec))
    again = saved_pools(tmp_path)
    assert all(again[n] == pools[n] for n in pools)
    assert again.keys_of("sft") == pools.keys_of("sft")


def test_pick_accuracy_counts_a_problem_without_candidates_wrong():
    import numpy as np

    from trl_pav.experiments.arithmetic_verifiers import pick_accuracy

    scores, correct, pid = np.array([0.2, 0.9, 0.5]), np.array([1.0, 0.0, 1.0]), np.array([0, 0, 1])
    assert pick_accuracy(scores, correct, pid, num_problems=3) == 1 / 3  # problem 0 picks the wrong one; 2 has none


@pytest.mark.parametrize(
    "code",
    [
        "import trl_pav",
        "import trl_pav.trainers, trl_pav.demo",  # the trainers pull in transformers' Trainer, peft, bitsandbytes
        "import sys; from trl_pav.cli import main; sys.argv = ['trl-pav', '--help']; main()",
    ],
)
def test_import_and_help_print_nothing_on_stderr(code):
    """`import trl_pav` and `trl-pav --help` write nothing to stderr (no dependency notices), and the import
    nothing to stdout either."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    if "--help" not in code:
        assert proc.stdout == "", proc.stdout
