"""Stage 5: accuracy against compute of verifier-guided search and its baselines (`recipes/search_eval.py`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .common import GenerationArguments, ProblemArguments, StepArguments, TrackingArguments

__all__ = ["SearchScriptArguments", "main", "make_parser", "search_tracker_logs"]


@dataclass
class SearchScriptArguments(ProblemArguments, GenerationArguments, StepArguments, TrackingArguments):
    """Arguments of the search recipe, besides `SearchEvalConfig` and the policy's `ModelConfig`; the step format
    and step token limit (`separator`, `max_step_tokens`) are `StepArguments`', the trackers each method's accuracy
    and compute are logged to (`report_to`, `run_name`: one log per budget, the budget as the step)
    `TrackingArguments`'.

    Args:
        output_dir (`str`, defaults to `"outputs/search"`): `results.json` and `search.png` go here.
        pav_model_name_or_path (`str` or `None`, defaults to `None`): the PAV (beam search, `pav_bon`, weighted vote).
        orm_model_name_or_path (`str` or `None`, defaults to `None`): the ORM (`orm_bon`).
        prm (`str` or `None`, defaults to `None`): folder or Hub id of a public PRM (`trl_pav.prm_adapters`) to use
            as the PAV, and as the ORM unless `orm_model_name_or_path` is set; its step probabilities are read as
            `Q` estimates. Excludes `pav_model_name_or_path`.
        prm_type (`str` or `None`, defaults to `None`): the PRM's convention, `"qwen-prm"`, `"math-shepherd"` or
            `"rlhflow"`. `None`: read from the id (`Qwen/Qwen2.5-Math-PRM-7B`, `peiyi9979/math-shepherd-...`,
            `RLHFlow/...`); other names need it.
        prm_trust_remote_code (`bool`, defaults to `False`): allow the PRM's own modeling code (Qwen2.5-Math-PRM).
        verifier_batch_size (`int`, defaults to `32`): traces per verifier forward pass.
        verifier_lockstep (`bool` or `None`, defaults to `None`): equal verifier forward passes on every process (a
            verifier sharded by ZeRO-3 needs it). `None`: on exactly when accelerate runs DeepSpeed ZeRO-3.
    """

    dataset_train_split: str = field(default="test", metadata={"help": "Split of the problems to evaluate on."})
    output_dir: str = field(default="outputs/search", metadata={"help": "Output folder."})
    pav_model_name_or_path: str | None = field(default=None, metadata={"help": "Folder or Hub id of the PAV."})
    orm_model_name_or_path: str | None = field(default=None, metadata={"help": "Folder or Hub id of the ORM."})
    prm: str | None = field(
        default=None, metadata={"help": "Folder or Hub id of a public PRM: the PAV (and the ORM unless one is set)."}
    )
    prm_type: str | None = field(
        default=None, metadata={"help": "PRM convention: qwen-prm, math-shepherd or rlhflow (None: from the id)."}
    )
    prm_trust_remote_code: bool = field(default=False, metadata={"help": "Allow the PRM's own modeling code."})
    verifier_batch_size: int = field(default=32, metadata={"help": "Traces per verifier forward pass."})
    verifier_lockstep: bool | None = field(default=None, metadata={"help": "Equal verifier passes per process."})

    def __post_init__(self) -> None:
        super().__post_init__()
        TrackingArguments.__post_init__(self)  # StepArguments' does not chain on
        from ..prm_adapters import PRM_ADAPTERS

        if self.prm is not None and self.pav_model_name_or_path is not None:
            raise ValueError(
                f"search: prm ({self.prm!r}) and pav_model_name_or_path ({self.pav_model_name_or_path!r}) are both "
                "set: the PRM takes the PAV's place, give one of them"
            )
        if self.prm_type is not None and self.prm_type not in PRM_ADAPTERS:
            raise ValueError(f"search: prm_type must be one of {sorted(PRM_ADAPTERS)}, got {self.prm_type!r}")


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` of this stage (`argv` is unused: one set of dataclasses whatever the arguments)."""
    from trl import ModelConfig, TrlParser

    from ..search import SearchEvalConfig

    return TrlParser((SearchScriptArguments, SearchEvalConfig, ModelConfig))


def fill_auto_batch_sizes(config: dict, num_processes: int) -> dict:
    """Replace `"auto"` batch sizes of a DeepSpeed config in place (1 per process, no accumulation) and return it.

    A Trainer fills them from its arguments; evaluation without a Trainer must, or DeepSpeed rejects the config
    (`'>' not supported between instances of 'str' and 'int'`). DeepSpeed needs them even when nothing trains.

    Example:
        >>> fill_auto_batch_sizes({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}, 2)
        {'train_batch_size': 2, 'train_micro_batch_size_per_gpu': 1, 'gradient_accumulation_steps': 1}
    """
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = 1
    if config.get("gradient_accumulation_steps", "auto") == "auto":
        config["gradient_accumulation_steps"] = 1
    if config.get("train_batch_size", "auto") == "auto":
        config["train_batch_size"] = (
            config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * num_processes
        )
    return config


def _load_verifier(path: str, args: SearchScriptArguments, accelerator, lockstep: bool):
    """A verifier on this process's device; under ZeRO-3 sharded by DeepSpeed (then run it in lockstep)."""
    from ..distributed import Lockstep, is_zero3
    from ..modeling import PAVVerifier

    verifier = PAVVerifier.from_pretrained(path)
    verifier.batch_size = args.verifier_batch_size
    verifier.model.requires_grad_(False)
    if is_zero3(accelerator):
        from trl.models.utils import prepare_deepspeed

        fill_auto_batch_sizes(accelerator.state.deepspeed_plugin.deepspeed_config, accelerator.num_processes)
        verifier.model = prepare_deepspeed(verifier.model, accelerator)
    else:
        verifier.model = verifier.model.to(accelerator.device)
    if lockstep:
        verifier.lockstep = Lockstep(accelerator.device)
    return verifier


def _load_prm(args: SearchScriptArguments, model_args, step_format, device):
    """The public PRM `args.prm` on `device` (a whole copy per process: nothing here shards it)."""
    from ..prm_adapters import convention_of, load_public_prm

    convention = args.prm_type or convention_of(args.prm)
    if convention is None:
        raise ValueError(
            f"search: cannot tell the convention of prm {args.prm!r} from its name: set prm_type "
            "(qwen-prm, math-shepherd or rlhflow)"
        )
    kwargs = {"step_format": step_format, "batch_size": args.verifier_batch_size}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = model_args.dtype
    if args.prm_trust_remote_code:
        kwargs["trust_remote_code"] = True
    prm = load_public_prm(convention, args.prm, **kwargs)
    prm.model.requires_grad_(False)
    prm.model = prm.model.to(device)
    return prm


class _RawPrompts:
    """A scorer that reads each problem's own text in place of the policy's chat-rendered prompt (a public PRM
    applies its own template around the problem)."""

    def __init__(self, scorer, raw: dict[str, str]):
        self.scorer, self.raw = scorer, raw

    def __getattr__(self, name):
        return getattr(self.scorer, name)  # step_format, verifier_tokens, batch_size, ...

    def score(self, prompts, steps):
        return self.scorer.score([self.raw.get(p, p) for p in prompts], steps)


def search_tracker_logs(results: dict) -> list[tuple[int, dict[str, float]]]:
    """What search logs to trackers: per budget N (ascending, the step), each method's accuracy and compute
    (`search/<method>/<field>`, numeric per-budget fields only; per-problem lists are left out).

    Example:
        >>> results = {"methods": {"majority": [{"n": 4, "accuracy": 0.5, "generated_tokens": 80,
        ...            "per_problem_correct": [1.0, 0.0]}, {"n": 1, "accuracy": 0.25, "generated_tokens": 20}]}}
        >>> logs = search_tracker_logs(results)
        >>> [n for n, _ in logs], logs[1][1]
        ([1, 4], {'search/majority/accuracy': 0.5, 'search/majority/generated_tokens': 80})
    """
    by_n: dict[int, dict[str, float]] = {}
    for method, records in results["methods"].items():
        for rec in records:
            row = by_n.setdefault(int(rec["n"]), {})
            for k, v in rec.items():
                if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    row[f"search/{method}/{k}"] = v
    return sorted(by_n.items())


def main(script_args: SearchScriptArguments, search_config, model_args) -> dict:
    """Evaluate every method at every budget; processes split the problems and the main one writes the results."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from ..distributed import is_zero3, outside_zero3_init, process_shard
    from ..labeling import validate_problems
    from ..search import evaluate_search, merge_search_results, plot_search_results
    from .common import (
        chat_prompts,
        check_model_source,
        close_trackers,
        launched_with_deepspeed,
        load_stage_policy,
        load_stage_problems,
        log_to_trackers,
        on_cpu,
        open_trackers,
        write_json,
    )

    if not model_args.model_name_or_path:
        raise ValueError("search_eval: set model_name_or_path (the policy)")
    check_model_source(model_args.model_name_or_path, "search: model_name_or_path")
    check_model_source(script_args.pav_model_name_or_path, "search: pav_model_name_or_path")
    check_model_source(script_args.orm_model_name_or_path, "search: orm_model_name_or_path")
    check_model_source(script_args.prm, "search: prm")
    accelerator = Accelerator(cpu=on_cpu() and not launched_with_deepspeed())
    state = accelerator.state
    problems, grader, step_format = load_stage_problems(
        script_args, script_args.dataset_train_split, script_args.separator
    )
    # Bad problems fail now, not after loading the models.
    rendered = problems  # a conversational prompt is checked as the text its chat template renders
    if script_args.use_chat_template:
        from ..tokenization import load_tokenizer

        rendered = chat_prompts(problems, load_tokenizer(model_args.model_name_or_path))
    validate_problems(rendered, needs_gold=getattr(grader, "needs_gold", True))
    if len(problems) < state.num_processes:
        raise ValueError(f"search_eval: {len(problems)} problems for {state.num_processes} processes")
    lockstep = is_zero3(accelerator) if script_args.verifier_lockstep is None else script_args.verifier_lockstep
    pav = orm = None
    if script_args.pav_model_name_or_path:
        pav = _load_verifier(script_args.pav_model_name_or_path, script_args, accelerator, lockstep)
        separator = script_args.separator
        if separator is not None and separator != pav.step_format.separator:
            raise ValueError(
                f"search: separator {separator!r} differs from the PAV's {pav.step_format.separator!r} "
                f"({script_args.pav_model_name_or_path}): a verifier reads steps as it was trained; drop separator"
            )
        step_format = pav.step_format
    if script_args.orm_model_name_or_path:
        orm = _load_verifier(script_args.orm_model_name_or_path, script_args, accelerator, lockstep)
    # The policy is not sharded (generation would need every process in step): a full copy per process, loaded
    # outside `deepspeed.zero.Init`, in which `from_pretrained` would otherwise partition it under ZeRO-3.
    with outside_zero3_init():
        policy = load_stage_policy(
            model_args.model_name_or_path, model_args, script_args, step_format, script_args.max_step_tokens
        )
        if script_args.prm:
            pav = _load_prm(script_args, model_args, step_format, accelerator.device)
            orm = orm or pav
    if script_args.use_chat_template:
        raw = problems["prompt"]
        problems = rendered
        if script_args.prm:
            read_raw = _RawPrompts(pav, dict(zip(problems["prompt"], raw)))
            pav, orm = read_raw, read_raw if orm is pav else orm
    ids, rows = process_shard(problems.to_list(), state.process_index, state.num_processes)
    part = evaluate_search(
        policy,
        [r["prompt"] for r in rows],
        [r["gold"] for r in rows],
        grader,
        search_config,
        pav=pav,
        orm=orm,
        show_progress=state.is_main_process,
        prompt_ids=ids,
    )
    parts = gather_object([part]) if state.num_processes > 1 else [part]
    results = merge_search_results(parts)
    results["config"] = search_config.__dict__
    results["step_settings"] = {"separator": step_format.separator, "max_step_tokens": script_args.max_step_tokens}
    best = {m: max(r["accuracy"] for r in recs) for m, recs in results["methods"].items()}
    if state.is_main_process:
        write_json(f"{script_args.output_dir}/results.json", results)
        plot_search_results(results, f"{script_args.output_dir}/search.png")
    config = {**asdict(script_args), **search_config.__dict__, "model_name_or_path": model_args.model_name_or_path}
    trackers = open_trackers(script_args, "search", script_args.output_dir, config)
    for n, values in search_tracker_logs(results):
        log_to_trackers(trackers, values, step=n)
    close_trackers(trackers)
    state.wait_for_everyone()
    return {
        "output_dir": script_args.output_dir,
        "num_problems": results["num_problems"],
        "best_accuracy": best,
        "verifiers_sharded": is_zero3(accelerator),
    }
