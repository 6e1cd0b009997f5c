"""`trl-pav` command line: one subcommand per pipeline stage, each parsed TRL-style (dataclasses, `--config x.yaml`)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

__all__ = ["DemoArguments", "LabelArguments", "SearchArguments", "TrainPolicyArguments", "load_hf_policy", "main"]


@dataclass
class TrainPolicyArguments:
    """Arguments of `trl-pav train-policy`.

    Args:
        task (`str`, defaults to `"arithmetic"`): `"arithmetic"` or `"planted"`.
        output_dir (`str`, defaults to `"outputs/policy"`): where the checkpoint (model + tokenizer) is written.
        max_steps (`int` or `None`, defaults to `None`): optimizer steps (None: the task's default budget).
        seed (`int`, defaults to `0`): training seed.
        eval_problems (`int`, defaults to `200`): held-out problems for the sampled-accuracy report (0 to skip).
    """

    task: str = field(default="arithmetic", metadata={"help": "Task: arithmetic or planted."})
    output_dir: str = field(default="outputs/policy", metadata={"help": "Where the checkpoint is written."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps (default: the task's budget)."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems for the accuracy report."})


def _train_policy(argv: list[str]) -> dict:
    import time
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from .evaluation import sampled_accuracy
    from .generation import HFPolicy
    from .tasks import DEFAULT_POLICY, ArithmeticTask, get_task, train_base_policy
    from .tokenization import load_tokenizer

    (args,) = _parse(TrainPolicyArguments, argv)
    task = get_task(args.task)
    config = replace(DEFAULT_POLICY[task.name], seed=args.seed)
    if args.max_steps is not None:
        config = replace(config, max_steps=args.max_steps)
    start = time.time()
    path = train_base_policy(task, args.output_dir, config)
    result = {"task": task.name, "output_dir": path, "train_seconds": round(time.time() - start, 1)}
    if args.eval_problems > 0:
        policy = HFPolicy(AutoModelForCausalLM.from_pretrained(path), load_tokenizer(path), task.step_format)
        if isinstance(task, ArithmeticTask):
            probs = task.sample_problems(args.eval_problems, seed=10_000 + args.seed)
            prompts, golds = [p.prompt for p in probs], [p.gold for p in probs]
        else:
            prompts, golds = [task.prompt] * args.eval_problems, [""] * args.eval_problems
        result["sampled_accuracy"] = sampled_accuracy(policy, prompts, golds, task.grader, seed=args.seed)
    return result


@dataclass
class LabelArguments:
    """Arguments of `trl-pav label` (with `MCLabelConfig`'s fields alongside).

    Args:
        policy (`str`): path or Hub id of the base policy (a causal LM checkpoint with its tokenizer).
        output_dir (`str`, defaults to `"outputs/labels"`): where shards, the dataset and `metadata.json` go.
        task (`str` or `None`, defaults to `None`): draw problems from a synthetic task (`arithmetic`, `planted`).
        dataset (`str` or `None`, defaults to `None`): or read problems from a JSON/JSONL/Parquet file or a Hub id.
        dataset_split (`str`, defaults to `"train"`): split of `dataset`.
        num_problems (`int`, defaults to `64`): problems to label (the first ones of `dataset`).
        problems_seed (`int`, defaults to `0`): seed of the task's problem generator.
        prover_policy (`str` or `None`, defaults to `None`): a separate rollout policy (with `prover=policy`).
        temperature (`float`, defaults to `1.0`): sampling temperature of seed traces and rollouts.
        max_new_tokens (`int`, defaults to `256`): token limit per rollout.
        batch_size (`int`, defaults to `256`): generation batch size.
        push_to_hub (`str` or `None`, defaults to `None`): a Hub dataset id to push the result to.
        use_vllm (`bool`, defaults to `False`): generate with vLLM (GPU; `pip install "trl-pav[vllm]"`).
    """

    policy: str = field(default="", metadata={"help": "Path or Hub id of the base policy."})
    output_dir: str = field(default="outputs/labels", metadata={"help": "Output folder."})
    task: str | None = field(default=None, metadata={"help": "Synthetic task to draw problems from."})
    dataset: str | None = field(default=None, metadata={"help": "JSON/JSONL/Parquet file or Hub id of problems."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the dataset."})
    num_problems: int = field(default=64, metadata={"help": "Number of problems."})
    problems_seed: int = field(default=0, metadata={"help": "Seed of the task's problem generator."})
    prover_policy: str | None = field(default=None, metadata={"help": "Separate rollout (prover) policy."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token limit per rollout."})
    batch_size: int = field(default=256, metadata={"help": "Generation batch size."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset id to push to."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU only)."})


def load_hf_policy(path: str, step_format, use_vllm: bool = False, **kwargs):
    """An `HFPolicy` (or a `VLLMPolicy`) from a checkpoint folder or Hub id (character tokenizers reload safely)."""
    from transformers import AutoModelForCausalLM

    if use_vllm:
        from .generation.vllm import VLLMPolicy

        kwargs.pop("batch_size", None)
        return VLLMPolicy(path, step_format, name=path, **kwargs)
    from .generation import HFPolicy
    from .tokenization import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    return HFPolicy(model, load_tokenizer(path), step_format, name=path, **kwargs)


def _problems(args):
    """Problems (prompt, gold) and the grader and step format that go with them."""
    from .grading import MathVerifyGrader
    from .steps import StepFormat
    from .tasks import ArithmeticTask, get_task

    if (args.task is None) == (args.dataset is None):
        raise SystemExit("trl-pav label: give exactly one of --task or --dataset")
    if args.task is not None:
        task = get_task(args.task)
        if isinstance(task, ArithmeticTask):
            problems = task.problems_dataset(args.num_problems, seed=args.problems_seed)
        else:
            problems = task.problems_dataset(args.num_problems)
        return problems, task.grader, task.step_format
    from .datasets_io import load_problems

    problems = load_problems(args.dataset, split=args.dataset_split, limit=args.num_problems)
    return problems, MathVerifyGrader(), StepFormat()


def _label(argv: list[str]) -> dict:
    from .labeling import MCLabelConfig, MCLabeler, load_labels

    args, config = _parse((LabelArguments, MCLabelConfig), argv)
    if not args.policy:
        raise SystemExit("trl-pav label: --policy is required (a checkpoint folder or Hub id)")
    problems, grader, step_format = _problems(args)
    gen = {
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "use_vllm": args.use_vllm,
    }
    policy = load_hf_policy(args.policy, step_format, **gen)
    prover = load_hf_policy(args.prover_policy, step_format, **gen) if args.prover_policy else None
    MCLabeler(policy, grader, config, prover_policy=prover).label(problems, args.output_dir)
    dataset, metadata = load_labels(args.output_dir)
    if args.push_to_hub:
        dataset.push_to_hub(args.push_to_hub)
    return {"output_dir": args.output_dir, **{k: metadata[k] for k in ("num_traces", "num_labels", "rollouts")}}


@dataclass
class SearchArguments:
    """Arguments of `trl-pav search` (evaluate search methods x budgets; writes results.json and a PNG).

    Args:
        policy (`str`): path or Hub id of the base policy.
        pav (`str` or `None`, defaults to `None`): path or Hub id of the PAV (needed by the beam and PAV methods).
        orm (`str` or `None`, defaults to `None`): path or Hub id of the ORM (needed by `orm_bon`).
        output_dir (`str`, defaults to `"outputs/search"`): where `results.json` and `search.png` go.
        task (`str` or `None`): problems from a synthetic task; or `dataset` (a JSON/JSONL/Parquet file or Hub id).
        dataset (`str` or `None`): see `task`.
        dataset_split (`str`, defaults to `"test"`): split of `dataset`.
        num_problems (`int`, defaults to `64`): problems to evaluate.
        problems_seed (`int`, defaults to `1`): seed of the task's problem generator.
        methods (`list[str]`): methods to run (see `trl_pav.search.METHODS`).
        budgets (`list[int]`, defaults to `[4, 8, 16]`): N per prompt.
        expansions (`int`, defaults to `3`): C of beam search.
        alpha (`float`, defaults to `0.5`): α of PAV beam search.
        prover_k (`float`, defaults to `4`): prover K.
        max_depth (`int`, defaults to `16`): step limit of beam search.
        temperature (`float`, defaults to `1.0`): sampling temperature.
        max_new_tokens (`int`, defaults to `256`): token limit per trace.
        seed (`int`, defaults to `0`): sampling seed.
        use_vllm (`bool`, defaults to `False`): generate with vLLM (GPU; `pip install "trl-pav[vllm]"`).
    """

    policy: str = field(default="", metadata={"help": "Path or Hub id of the base policy."})
    pav: str | None = field(default=None, metadata={"help": "Path or Hub id of the PAV."})
    orm: str | None = field(default=None, metadata={"help": "Path or Hub id of the ORM."})
    output_dir: str = field(default="outputs/search", metadata={"help": "Output folder."})
    task: str | None = field(default=None, metadata={"help": "Synthetic task to draw problems from."})
    dataset: str | None = field(default=None, metadata={"help": "JSON/JSONL/Parquet file or Hub id of problems."})
    dataset_split: str = field(default="test", metadata={"help": "Split of the dataset."})
    num_problems: int = field(default=64, metadata={"help": "Number of problems."})
    problems_seed: int = field(default=1, metadata={"help": "Seed of the task's problem generator."})
    methods: list[str] = field(default_factory=lambda: ["pav_beam", "q_beam", "orm_bon", "majority", "pass_at_n"])
    budgets: list[int] = field(default_factory=lambda: [4, 8, 16])
    expansions: int = field(default=3, metadata={"help": "C of beam search."})
    alpha: float = field(default=0.5, metadata={"help": "Alpha of PAV beam search."})
    prover_k: float = field(default=4, metadata={"help": "Prover K."})
    max_depth: int = field(default=16, metadata={"help": "Step limit of beam search."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token limit per trace."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU only)."})


def _search(argv: list[str]) -> dict:
    import json as _json
    from pathlib import Path

    from .modeling import PAVVerifier
    from .search import SearchEvalConfig, evaluate_search, plot_search_results

    (args,) = _parse(SearchArguments, argv)
    if not args.policy:
        raise SystemExit("trl-pav search: --policy is required (a checkpoint folder or Hub id)")
    problems, grader, step_format = _problems(args)
    pav = PAVVerifier.from_pretrained(args.pav) if args.pav else None
    orm = PAVVerifier.from_pretrained(args.orm) if args.orm else None
    if pav is not None:
        step_format = pav.step_format
    policy = load_hf_policy(
        args.policy, step_format, args.use_vllm, temperature=args.temperature, max_new_tokens=args.max_new_tokens
    )
    config = SearchEvalConfig(
        methods=args.methods,
        budgets=args.budgets,
        expansions=args.expansions,
        alpha=args.alpha,
        prover_k=args.prover_k,
        max_depth=args.max_depth,
        seed=args.seed,
    )
    results = evaluate_search(policy, problems["prompt"], problems["gold"], grader, config, pav=pav, orm=orm)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(_json.dumps(results, indent=2))
    plot_search_results(results, str(out / "search.png"))
    best = {m: max(r["accuracy"] for r in recs) for m, recs in results["methods"].items()}
    return {"output_dir": str(out), "best_accuracy": best}


@dataclass
class DemoArguments:
    """Arguments of `trl-pav demo`.

    Args:
        output_dir (`str`, defaults to `"outputs/demo"`): working folder (cached stages) and `report/` inside it.
        quick (`bool`, defaults to `False`): the same pipeline on a tiny budget (about 3 minutes).
    """

    output_dir: str = field(default="outputs/demo", metadata={"help": "Working folder; the report goes to report/."})
    quick: bool = field(default=False, metadata={"help": "Tiny budget (about 3 minutes)."})


def _demo(argv: list[str]) -> dict:
    from .demo import DemoConfig, run_demo

    (args,) = _parse(DemoArguments, argv)
    config = DemoConfig.quick() if args.quick else DemoConfig()
    results = run_demo(args.output_dir, config, log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"report": f"{args.output_dir}/report/report.md", "runtime_seconds": results["runtime_seconds"]}


COMMANDS = {"train-policy": _train_policy, "label": _label, "search": _search, "demo": _demo}


def _parse(dataclass_types, argv: list[str]):
    from trl import TrlParser

    types = dataclass_types if isinstance(dataclass_types, tuple) else (dataclass_types,)
    return TrlParser(types).parse_args_and_config(args=argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `trl-pav` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        msg = f"usage: trl-pav {{{known}}} [--config file.yaml] [--option value ...]"
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"trl-pav: unknown command {argv[0]!r}\n{msg}")
        print(msg)
        return
    result = COMMANDS[argv[0]](argv[1:])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
