"""`trl-pav` command line: one subcommand per pipeline stage, each parsed TRL-style (dataclasses, `--config x.yaml`).

The stage commands run the same code as `recipes/*.py` (`trl_pav.scripts`), with the same arguments, from the
installed package: `accelerate launch --config_file $(trl-pav configs zero3) -m trl_pav.cli rl --config ...` is the
RL recipe on ZeRO-3 (`trl-pav configs` lists the accelerate and stage configs that ship with the package).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

__all__ = [
    "DemoArguments",
    "TrainPolicyArguments",
    "given_fields",
    "main",
    "one_line",
    "shipped_configs",
    "train_policy_pools",
]


@dataclass
class TrainPolicyArguments:
    """Arguments of `trl-pav train-policy`.

    Args:
        task (`str`, defaults to `"arithmetic"`): `"arithmetic"`, `"rewrite"` or `"planted"`.
        task_options (`str` or `None`, defaults to `None`): the task's settings as a JSON object (`get_task`), e.g.
            `'{"planted": [1, 2, 1], "vocab_size": 6, "length": 14}'`.
        output_dir (`str`, defaults to `"outputs/policy"`): where the checkpoint (model + tokenizer) is written.
        max_steps (`int` or `None`, defaults to `None`): optimizer steps (None: the task's default budget).
        seed (`int`, defaults to `0`): training seed.
        eval_problems (`int`, defaults to `200`): held-out problems for the sampled-accuracy report (0 to skip); on
            arithmetic they are disjoint from the SFT problems (`train_policy_pools`).
    """

    task: str = field(default="arithmetic", metadata={"help": "Task: arithmetic, rewrite or planted."})
    task_options: str | None = field(
        default=None, metadata={"help": "The task's settings as a JSON object (see `trl_pav.tasks.get_task`)."}
    )
    output_dir: str = field(default="outputs/policy", metadata={"help": "Where the checkpoint is written."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps (default: the task's budget)."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems for the accuracy report."})


def train_policy_pools(task, config, eval_problems: int):
    """`train-policy`'s problems (arithmetic or rewrite) as disjoint pools (`trl_pav.evaluation.ProblemPools`, by
    expression): `"eval"` (`eval_problems` distinct problems, dealt first) and `"sft"` (one problem per SFT sequence
    of `config`, with repetitions), from one stream seeded by `config.seed`.

    Example:
        >>> from trl_pav.tasks import ArithmeticTask, TinyPolicyConfig
        >>> pools = train_policy_pools(ArithmeticTask(), TinyPolicyConfig(max_steps=2, batch_size=8), 5)
        >>> len(pools["eval"]), len(pools["sft"]), pools.keys_of("eval").isdisjoint(pools.keys_of("sft"))
        (5, 16, True)
    """
    from .evaluation import ProblemPools, expression_key

    sizes = {"eval": eval_problems, "sft": config.batch_size * config.max_steps}
    return ProblemPools(task, sizes, seed=config.seed, key=expression_key, repeats={"sft"})


def _train_policy(argv: list[str]) -> dict:
    import time
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from .evaluation import sampled_accuracy
    from .generation import HFPolicy
    from .tasks import PlantedTask, default_policy_config, get_task, train_base_policy
    from .tokenization import load_tokenizer

    (args,) = _parse(TrainPolicyArguments, argv)
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"train-policy: max_steps must be >= 1 (or unset for the task's budget), got {args.max_steps}")
    if args.eval_problems < 0:
        raise ValueError(f"train-policy: eval_problems must be >= 0, got {args.eval_problems}")
    task = get_task(args.task, args.task_options)
    config = replace(default_policy_config(task), seed=args.seed)
    if args.max_steps is not None:
        config = replace(config, max_steps=args.max_steps)
    # Tasks with problems: evaluation problems the policy was not trained on (planted has one start state).
    pools = None if isinstance(task, PlantedTask) else train_policy_pools(task, config, args.eval_problems)
    start = time.time()
    path = train_base_policy(task, args.output_dir, config, problems=pools["sft"] if pools is not None else None)
    result = {"task": task.name, "output_dir": path, "train_seconds": round(time.time() - start, 1)}
    if args.eval_problems > 0:
        policy = HFPolicy(AutoModelForCausalLM.from_pretrained(path), load_tokenizer(path), task.step_format)
        if pools is not None:
            probs = pools["eval"]
            prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
        else:
            prompts, golds = [task.prompt] * args.eval_problems, [""] * args.eval_problems
        result["sampled_accuracy"] = sampled_accuracy(policy, prompts, golds, task.grader, seed=args.seed)
    return result


@dataclass
class DemoArguments:
    """Arguments of `trl-pav demo`.

    Args:
        output_dir (`str`, defaults to `"outputs/demo"`): working folder (cached stages) and `report/` inside it.
        quick (`bool`, defaults to `False`): the same pipeline on a tiny budget (about 3 minutes).
        full (`bool`, defaults to `False`): `DemoConfig.full()`: three pipeline seeds, the seeded sweeps and the
            Monte-Carlo-advantage arms (`make reproduce`).

    Every `DemoConfig` field can be given too (`--planted_string bcb --planted_seeds 20 21 22`, or in a `--config`
    YAML file); it replaces that field of the chosen budget (default, `quick` or `full`).
    """

    output_dir: str = field(default="outputs/demo", metadata={"help": "Working folder; the report goes to report/."})
    quick: bool = field(default=False, metadata={"help": "Tiny budget (about 3 minutes)."})
    full: bool = field(
        default=False, metadata={"help": "Three pipeline seeds, seeded sweeps, Monte-Carlo arms (make reproduce)."}
    )


def given_fields(argv: list[str], names: set[str]) -> set[str]:
    """Which of `names` a command line sets: as `--name` or `--name=value`, or as keys of its `--config` YAML file.

    Example:
        >>> sorted(given_fields(["--quick", "--seed=3", "--planted_seeds", "1", "2"], {"seed", "planted_seeds", "n"}))
        ['planted_seeds', 'seed']
    """
    from pathlib import Path

    import yaml

    given = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        given |= set(yaml.safe_load(Path(path).read_text()) or {})
    return given & names


def _demo(argv: list[str]) -> dict:
    import dataclasses

    from .demo import DemoConfig, run_demo

    args, parsed = _parse((DemoArguments, DemoConfig), argv)
    if args.quick and args.full:
        raise ValueError("trl-pav demo: --quick and --full exclude each other; pick one budget")
    config = DemoConfig.quick() if args.quick else DemoConfig.full() if args.full else DemoConfig()
    given = given_fields(argv, {f.name for f in dataclasses.fields(DemoConfig)})
    config = dataclasses.replace(config, **{k: getattr(parsed, k) for k in given})
    results = run_demo(args.output_dir, config, log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"report": f"{args.output_dir}/report/report.md", "runtime_seconds": results["runtime_seconds"]}


def _stage(module: str, **main_kwargs):
    """A command running one stage script (`trl_pav.scripts.<module>`) exactly as its recipe does."""

    def run(argv: list[str]) -> dict | None:
        import importlib

        from .scripts.common import run_recipe

        return run_recipe(importlib.import_module(f"trl_pav.scripts.{module}"), argv, **main_kwargs)

    return run


def _eval_steps(argv: list[str]) -> dict:
    from .step_eval import StepEvalArguments, run_eval_steps

    try:
        (args,) = _parse(StepEvalArguments, argv)
        return run_eval_steps(args)
    except ValueError as err:
        raise SystemExit(f"trl-pav eval-steps: {err}") from err


def shipped_configs() -> dict[str, str]:
    """The config files that ship with trl_pav (the recipes' own, package data), name to path: accelerate configs by
    name (`"zero3"`, `"cpu_2proc"`, ...) and stage configs as `"<set>/<stage>"` (`"math_1.5b/label"`, ...).

    Example:
        >>> configs = shipped_configs()
        >>> "zero3" in configs and "math_1.5b/train_pav" in configs and configs["zero3"].endswith("zero3.yaml")
        True
    """
    from importlib.resources import files

    root = files("trl_pav") / "recipes"
    found = {p.name[: -len(".yaml")]: p for p in (root / "accelerate_configs").iterdir()}
    for folder in (root / "configs").iterdir():
        found.update({f"{folder.name}/{p.name[: -len('.yaml')]}": p for p in folder.iterdir()})
    return {name: str(path) for name, path in sorted(found.items()) if path.name.endswith(".yaml")}


def _configs(argv: list[str]) -> dict | None:
    """`trl-pav configs`: every shipped config and its path (JSON); `trl-pav configs NAME`: that path alone, for
    `accelerate launch --config_file $(trl-pav configs zero3) -m trl_pav.cli rl --config ...`."""
    configs = shipped_configs()
    if not argv:
        return configs
    if len(argv) > 1 or argv[0] not in configs:
        raise ValueError(f"configs: unknown config {' '.join(argv)!r}; shipped: {', '.join(configs)}")
    print(configs[argv[0]])
    return None


def _select_prover(argv: list[str]) -> dict:
    from .prover_selection import ProverSelectionConfig, SelectProverArguments, run_select_prover

    return run_select_prover(*_parse((SelectProverArguments, ProverSelectionConfig), argv))


COMMANDS = {
    "train-policy": _train_policy,
    "sft": _stage("sft"),
    "label": _stage("label"),
    "train-pav": _stage("train_verifier"),
    "train-orm": _stage("train_verifier", kind="orm"),
    "rl": _stage("rl"),
    "search": _stage("search_eval"),
    "demo": _demo,
    "eval-steps": _eval_steps,
    "configs": _configs,
    "select-prover": _select_prover,
}


def _parse(dataclass_types, argv: list[str]):
    from trl import TrlParser

    types = dataclass_types if isinstance(dataclass_types, tuple) else (dataclass_types,)
    return TrlParser(types).parse_args_and_config(args=argv)


def one_line(err: BaseException, limit: int = 600) -> str:
    """An exception as one line: its type and message, lines joined by " | ", cut at `limit` characters.

    Example:
        >>> one_line(ValueError("2 problems:\\n  - row 0: bad\\n  - row 3: bad"))
        'ValueError: 2 problems: | - row 0: bad | - row 3: bad'
    """
    text = " | ".join(line.strip() for line in str(err).splitlines() if line.strip()) or "(no message)"
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `trl-pav` console script.

    An error prints one line naming the problem and exits with status 1; `--debug` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        msg = f"usage: trl-pav {{{known}}} [--config file.yaml] [--option value ...] [--debug]"
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"trl-pav: unknown command {argv[0]!r}\n{msg}")
        print(msg)
        return
    try:
        result = COMMANDS[argv[0]](argv[1:])
    except Exception as err:  # expected failures (bad data, flags, folders) and bugs alike: one line, unless --debug
        if debug:
            raise
        raise SystemExit(f"trl-pav {argv[0]}: {one_line(err)}\n(run again with --debug for the traceback)") from err
    if result is not None:  # None: not the main process
        print(json.dumps(result))


if __name__ == "__main__":
    main()
