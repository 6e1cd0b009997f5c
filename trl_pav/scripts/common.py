"""What the stage scripts share: problem and generation arguments, model loading under accelerate, output helpers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ScriptArguments

from ..distributed import process_state

__all__ = [
    "GenerationArguments",
    "ProblemArguments",
    "StepArguments",
    "TrackingArguments",
    "chat_prompts",
    "check_model_source",
    "check_process_count",
    "close_trackers",
    "end_processes",
    "launched_with_deepspeed",
    "load_causal_lm",
    "load_stage_policy",
    "load_stage_problems",
    "log_to_trackers",
    "model_init_kwargs",
    "on_cpu",
    "open_trackers",
    "run_recipe",
    "tracker_names",
    "write_json",
]


@dataclass
class ProblemArguments(ScriptArguments):
    """TRL's `ScriptArguments` plus where problems come from.

    Args:
        dataset_name (`str` or `None`, defaults to `None`):
            Problems from a Hub id or a local `.json`/`.jsonl`/`.parquet`/`.csv` file in the MATH / MATH-500
            (`problem`, `answer`/`solution`), GSM8K (`question`, `answer` with `#### n`) or `prompt`/`gold` layout.
        task (`str` or `None`, defaults to `None`):
            Or problems from a synthetic task: `"arithmetic"`, `"rewrite"` or `"planted"` (graded exactly, not by
            math-verify).
        task_options (`str` or `None`, defaults to `None`):
            The task's settings as a JSON object (`trl_pav.tasks.get_task`), e.g. another planted string.
        num_problems (`int` or `None`, defaults to `None`):
            Use the first `num_problems` problems of the dataset (required for a task, which is unbounded).
        problems_seed (`int`, defaults to `0`):
            Seed of the task's problem generator (use different seeds for training and evaluation problems).
        use_chat_template (`bool`, defaults to `False`):
            Send each prompt as a user message through the model's chat template (instruct models: without it they
            continue the problem text instead of answering it). Labeling and search render the template; RL gives
            TRL conversational prompts, which it renders itself; SFT trains on conversational prompt/completion
            rows. Required for conversational datasets (prompts that are lists of messages).
        dataset_prompt_column (`str` or `None`, defaults to `None`):
            Column of the dataset holding the problem (a string, put into the instruction template unless the
            column is `prompt`) or a conversation (TRL's list of `{"role", "content"}` messages); `None`: the first
            of `prompt`, `problem`, `question`.
        dataset_answer_column (`str` or `None`, defaults to `None`):
            Column holding the reference answer (its last `\\boxed{}` or `#### n`, else its text; `gold` is used as
            it is); `None`: the first of `gold`, `answer`, `solution`.
    """

    task: str | None = field(default=None, metadata={"help": "Synthetic task: arithmetic, rewrite or planted."})
    task_options: str | None = field(
        default=None,
        metadata={"help": 'The task\'s settings as a JSON object, e.g. \'{"planted": [0, 0, 1], "length": 6}\'.'},
    )
    num_problems: int | None = field(default=None, metadata={"help": "Number of problems (first N of the dataset)."})
    problems_seed: int = field(default=0, metadata={"help": "Seed of the task's problem generator."})
    use_chat_template: bool = field(
        default=False, metadata={"help": "Prompts as user messages through the model's chat template."}
    )
    dataset_prompt_column: str | None = field(
        default=None, metadata={"help": "Column of the problem or conversation (None: prompt/problem/question)."}
    )
    dataset_answer_column: str | None = field(
        default=None, metadata={"help": "Dataset column of the reference answer (None: gold/answer/solution)."}
    )


@dataclass
class GenerationArguments:
    """How the stage samples from a policy.

    Args:
        temperature (`float`, defaults to `1.0`): sampling temperature.
        max_new_tokens (`int`, defaults to `256`): token limit per trace (per rollout when labeling).
        generation_batch_size (`int`, defaults to `64`): sequences per `generate` call (HF backend).
        use_vllm (`bool`, defaults to `False`): generate with vLLM (GPU only; `pip install "trl-pav[vllm]"`).
        vllm_mode (`str`, defaults to `"colocate"`): as TRL's GRPO: `"colocate"` starts an engine in each process;
            `"server"` sends the requests to a running `trl vllm-serve --model PATH` (serving this stage's policy)
            through TRL's `VLLMClient` (`trl_pav.generation.vllm_server.VLLMServerPolicy`).
        vllm_server_base_url (`str` or `None`, defaults to `None`): the server's URL (`http://host:8000`); `None`:
            `vllm_server_host` and `vllm_server_port`.
        vllm_server_host (`str`, defaults to `"0.0.0.0"`): the server's host, when no base URL is given.
        vllm_server_port (`int`, defaults to `8000`): the server's port, when no base URL is given.
        vllm_server_timeout (`float`, defaults to `240.0`): seconds to wait for the server to answer.
        vllm_gpu_memory_utilization (`float`, defaults to `0.5`): vLLM's share of GPU memory in colocate mode (the
            verifier and, in RL, the trainer need the rest).
    """

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token limit per trace."})
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generate call (HF backend)."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU only)."})
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "'colocate' (an engine per process) or 'server' (trl vllm-serve).",
            "choices": ["colocate", "server"],
        },
    )
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "URL of the vLLM server (server mode)."})
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Host of the vLLM server (no base URL)."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Port of the vLLM server (no base URL)."})
    vllm_server_timeout: float = field(default=240.0, metadata={"help": "Seconds to wait for the vLLM server."})
    vllm_gpu_memory_utilization: float = field(default=0.5, metadata={"help": "vLLM's share of GPU memory."})


@dataclass
class StepArguments:
    """How the stage cuts text into steps.

    Args:
        separator (`str` or `None`, defaults to `None`):
            Text between steps; escapes are read, so `--separator '\\n\\n'` is a blank line (MATH solutions are
            paragraphs: use it). `None`: a newline for datasets, the task's own format for a task (which cannot be
            changed). Search with a trl_pav verifier takes the verifier's separator; a different one here raises.
        max_step_tokens (`int`, defaults to `64`):
            Token limit of one step where a stage samples one step at a time (search's beam search); a step that
            reaches it is cut (see `truncated_step` of the search config). MATH paragraphs run 60-150 tokens: use
            256. Labeling and best-of-N sample whole traces (`max_new_tokens`), so only the policy's fingerprint
            records it there.
    """

    separator: str | None = field(
        default=None,
        metadata={"help": "Step separator, escapes read ('\\n\\n': blank line). None: newline, or the task's."},
    )
    max_step_tokens: int = field(default=64, metadata={"help": "Token limit of one step (beam search)."})

    def __post_init__(self) -> None:
        if self.separator is not None:
            from ..steps import parse_separator

            self.separator = parse_separator(self.separator)
        if isinstance(self.max_step_tokens, bool) or not isinstance(self.max_step_tokens, int):
            raise ValueError(f"max_step_tokens must be an integer >= 1, got {self.max_step_tokens!r}")
        if self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {self.max_step_tokens}")


def check_model_source(name: str | None, what: str) -> None:
    """Raise `FileNotFoundError` when `name` is neither an existing local folder nor a well-formed Hub id.

    Without it a missing local folder reaches the Hub client, whose error ("Repo id must be in the form ...") does
    not say that the folder is missing.
    """
    if not name or os.path.isdir(name):
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    looks_local = name.startswith(("/", "./", "../", "~")) or os.path.exists(name)
    try:
        validate_repo_id(name)
    except HFValidationError:
        looks_local = True
    if looks_local:
        raise FileNotFoundError(f"{what}: no such model folder {name!r} (and it is not a Hub id)")


def on_cpu() -> bool:
    """True when no CUDA device is visible (TRL configs then need `use_cpu=True, bf16=False`)."""
    import torch

    return not torch.cuda.is_available()


def launched_with_deepspeed() -> bool:
    """True under accelerate's DeepSpeed launcher (an accelerate config with `distributed_type: DEEPSPEED`).

    On a machine without a GPU the process group is then formed first on the CPU (gloo, every process counted, as
    `TrainingArguments(use_cpu=True)` does), so that an `Accelerator()` built afterwards without `cpu=True` selects
    DeepSpeed: with `cpu=True` accelerate silently leaves DeepSpeed out (`AcceleratorState`), and without a process
    group formed on the CPU it counts one process while DeepSpeed counts all of them.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return False
    process_state()
    return True


def load_stage_problems(args: ProblemArguments, split: str, separator: str | None = None):
    """Problems (`prompt`, `gold`) with the grader and step format that go with them.

    `separator` (already unescaped, `StepArguments`) sets a dataset's step format (default: a newline); a task keeps
    its own format.

    Raises:
        ValueError: when neither or both of `dataset_name` and `task` are set, a task has no `num_problems`, or
            `separator` differs from a task's own.
    """
    from ..grading import MathVerifyGrader
    from ..steps import StepFormat
    from ..tasks import PlantedTask, get_task

    if (args.task is None) == (args.dataset_name is None):
        raise ValueError(
            "give exactly one of dataset_name (a file or Hub id) and task (arithmetic, rewrite or planted)"
        )
    if args.task is not None:
        if args.num_problems is None:
            raise ValueError(f"task {args.task!r} needs num_problems")
        task = get_task(args.task, getattr(args, "task_options", None))
        if separator is not None and separator != task.step_format.separator:
            raise ValueError(
                f"task {args.task!r} writes steps separated by {task.step_format.separator!r}, not separator "
                f"{separator!r}: drop the separator (it is for datasets)"
            )
        if isinstance(task, PlantedTask):  # one start state: no problems to draw
            problems = task.problems_dataset(args.num_problems)
        else:
            problems = task.problems_dataset(args.num_problems, seed=args.problems_seed)
        return problems, task.grader, task.step_format
    from ..datasets_io import is_conversational, load_problems

    problems = load_problems(
        args.dataset_name,
        split=split,
        limit=args.num_problems,
        config=args.dataset_config,
        prompt_column=args.dataset_prompt_column,
        answer_column=args.dataset_answer_column,
    )
    if is_conversational(problems) and not args.use_chat_template:
        raise ValueError(
            f"{args.dataset_name}: the prompts are chat messages (row 0: {problems[0]['prompt']!r:.80}); set "
            "use_chat_template to render them through the model's chat template"
        )
    return problems, MathVerifyGrader(), StepFormat() if separator is None else StepFormat(separator)


def chat_prompts(problems, tokenizer=None, prompt_column: str = "prompt"):
    """Problems whose prompts are user messages: rendered through `tokenizer`'s chat template when one is given
    (labeling, search: the policy continues text), else left as `[{"role": "user", "content": prompt}]` for TRL's
    trainers, which apply the template themselves (and the verifier applies its own to score them). Conversational
    prompts (already messages) are kept as they are.

    Raises:
        ValueError: if `tokenizer` has no chat template.

    Example:
        >>> from datasets import Dataset
        >>> chat_prompts(Dataset.from_list([{"prompt": "1+1?", "gold": "2"}]))[0]["prompt"]
        [{'role': 'user', 'content': '1+1?'}]
    """
    if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "use_chat_template: the model's tokenizer has no chat template (a base model): drop use_chat_template"
        )

    def convert(row):
        prompt = row[prompt_column]  # a conversational dataset's prompt is already messages
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if tokenizer is None:
            return {prompt_column: messages}
        return {prompt_column: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)}

    return problems.map(convert)


def model_init_kwargs(model_args, keep_full_precision: tuple[str, ...] = ()) -> dict[str, Any]:
    """`from_pretrained` keyword arguments from TRL's `ModelConfig` (revision, dtype, attention, 4/8-bit).

    `keep_full_precision` names modules that 4/8-bit loading must leave unquantized (a verifier's scalar head).
    Quantized models are placed on this process's device (the CPU when there is no GPU).
    """
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
    }
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = model_args.dtype
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        if keep_full_precision:
            quantization.llm_int8_skip_modules = list(keep_full_precision)
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": "cpu" if on_cpu() else process_state().local_process_index}
    return {k: v for k, v in kwargs.items() if v is not None}


def load_causal_lm(path: str, model_args):
    """A causal LM on this process's device (quantized models are placed by their device map)."""
    from transformers import AutoModelForCausalLM

    kwargs = model_init_kwargs(model_args)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "quantization_config" not in kwargs:
        model = model.to(process_state().device)
    return model.eval()


def load_stage_policy(path: str, model_args, gen: GenerationArguments, step_format, max_step_tokens: int = 64):
    """An `HFPolicy` (or a `VLLMPolicy` with `use_vllm`, a `VLLMServerPolicy` with `vllm_mode="server"`) for `path`
    with the stage's sampling settings and step token limit (`StepArguments.max_step_tokens`).

    Raises:
        ValueError: in server mode, when the server serves another model than `path`.
    """
    check_model_source(path, "policy")
    mode = getattr(gen, "vllm_mode", "colocate")
    if gen.use_vllm and mode not in ("colocate", "server"):
        raise ValueError(f"vllm_mode must be 'colocate' or 'server', got {mode!r}")
    if gen.use_vllm and mode == "server":
        from ..generation.vllm_server import VLLMServerPolicy, check_served_model, make_vllm_client
        from ..tokenization import load_tokenizer

        client = make_vllm_client(
            gen.vllm_server_base_url, gen.vllm_server_host, gen.vllm_server_port, gen.vllm_server_timeout
        )
        check_served_model(client, path)
        return VLLMServerPolicy(
            client,
            load_tokenizer(path),
            step_format,
            name=path,
            temperature=gen.temperature,
            max_new_tokens=gen.max_new_tokens,
            max_step_tokens=max_step_tokens,
            rendered_prompts=True if getattr(gen, "use_chat_template", False) else None,
        )
    if gen.use_vllm:
        from ..generation.vllm import VLLMPolicy

        llm_kwargs: dict[str, Any] = {"gpu_memory_utilization": gen.vllm_gpu_memory_utilization}
        if model_args.dtype not in (None, "auto"):
            llm_kwargs["dtype"] = model_args.dtype
        if process_state().num_processes > 1:
            # One engine per process on its own GPU, inside the accelerate process group (as TRL's colocate mode).
            llm_kwargs["distributed_executor_backend"] = "external_launcher"
        return VLLMPolicy(
            path,
            step_format,
            name=path,
            temperature=gen.temperature,
            max_new_tokens=gen.max_new_tokens,
            max_step_tokens=max_step_tokens,
            **llm_kwargs,
        )
    from ..generation import HFPolicy
    from ..tokenization import load_tokenizer

    return HFPolicy(
        load_causal_lm(path, model_args),
        load_tokenizer(path),
        step_format,
        name=path,
        temperature=gen.temperature,
        max_new_tokens=gen.max_new_tokens,
        max_step_tokens=max_step_tokens,
        batch_size=gen.generation_batch_size,
        # Chat-rendered prompts carry their special tokens (as TRL tokenizes them); else a second BOS is kept out.
        rendered_prompts=True if getattr(gen, "use_chat_template", False) else None,
    )


def end_processes() -> None:
    """Tear the process group down together at the end of a recipe: a process that exits while another is still
    in a collective makes that one abort."""
    import gc

    # Free trainers (and the DDP reducers holding the process group) now, in order, not during interpreter exit.
    gc.collect()
    state = process_state()
    state.wait_for_everyone()
    state.destroy_process_group()


def check_process_count(training_args) -> None:
    """Raise `ValueError` when the launcher started several processes but a `TrainingArguments` counts fewer.

    It happens under DeepSpeed on a machine without a GPU when `use_cpu` is off: accelerate initialises DeepSpeed's
    process group (every process) but finds no device backend, so its state, and `TrainingArguments.world_size` with
    it, says one process; DeepSpeed later rejects its batch size (`train_batch_size ... 2 != 2 * 1 * 2`).
    Other arguments (not `TrainingArguments`) are ignored.
    """
    from transformers import TrainingArguments

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if not isinstance(training_args, TrainingArguments) or launched <= 1:
        return
    if training_args.world_size != launched:
        hint = " set use_cpu: true (no GPU is visible)" if on_cpu() and not training_args.use_cpu else ""
        raise ValueError(
            f"the launcher started {launched} processes but the training arguments count "
            f"{training_args.world_size}:{hint or ' check the accelerate config'} (docs/scaling.md, DeepSpeed on CPU)"
        )


def run_recipe(script, argv: list[str] | None = None, **main_kwargs) -> dict | None:
    """Run a stage script module: parse `argv` (default: the command line; `--config` YAML included) with its
    `make_parser`, call its `main`, then tear the processes down together.

    Returns `main`'s summary on the main process and `None` on the others (so a caller prints it once).
    """
    parser = script.make_parser(argv)
    parsed = parser.parse_args_and_config(args=argv)
    for args in parsed:
        check_process_count(args)
    result = script.main(*parsed, **main_kwargs)
    is_main = process_state().is_main_process
    end_processes()
    return result if is_main else None


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write `obj` as indented JSON atomically (write then rename), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return str(path)


def end_trackers(trainer) -> None:
    """Close a stage's experiment trackers once it is done (after the last evaluate, save and push), on every process:
    `finish()` of accelerate's trackers, and of a wandb or trackio run left open by the Trainer's reporting callbacks
    (they keep it open so that a later evaluate can still log). Not `accelerator.end_training()`: it also destroys the
    process group, which `end_processes` tears down once every process is done."""
    import sys

    for tracker in trainer.accelerator.trackers:
        tracker.finish()
    for name in ("wandb", "trackio"):
        module = sys.modules.get(name)
        if (
            module is not None
            and getattr(module, "run", None) is not None
            and callable(getattr(module, "finish", None))
        ):
            module.finish()


@dataclass
class TrackingArguments:
    """Where a stage without a Trainer (labeling, search) logs its metrics: the experiment trackers TRL's trainers
    report to, through `accelerate`'s trackers.

    Args:
        report_to (`str` or `list[str]`, defaults to `"none"`):
            As `TrainingArguments.report_to`: `"none"` (nothing), `"all"` (every installed tracker), or tracker
            names `accelerate` knows (`"tensorboard"`, `"wandb"`, `"trackio"`, `"mlflow"`, `"comet_ml"`, `"aim"`,
            `"clearml"`, `"dvclive"`, `"swanlab"`, or one registered with `accelerate.tracking.register_tracker_class`),
            one name or a comma-separated list. Local trackers write under `<output_dir>/runs`.
        run_name (`str` or `None`, defaults to `None`):
            The run's name (accelerate's project name: wandb's project, tensorboard's sub-folder). `None`:
            `trl-pav-<stage>`.
    """

    # None first, as in `TrainingArguments`: HfArgumentParser then reads the flag as one string.
    report_to: None | str | list[str] = field(  # noqa: RUF036
        default="none", metadata={"help": "Trackers for the stage's metrics: none, all, or names (tensorboard, ...)."}
    )
    run_name: str | None = field(default=None, metadata={"help": "Run name (default: trl-pav-<stage>)."})

    def __post_init__(self) -> None:
        tracker_names(self.report_to)  # an unknown or missing tracker fails at parse time, not after the work


def tracker_names(report_to: str | list[str] | None) -> list[str]:
    """The accelerate tracker names that `report_to` asks for (`"none"`: none; `"all"`: the installed ones).

    Raises:
        ValueError: for a name accelerate does not know, or a known tracker whose package is not installed.

    Example:
        >>> tracker_names("none"), tracker_names(None), tracker_names(["none"])
        ([], [], [])
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    if report_to is None:
        return []
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [str(n).strip() for n in names if str(n).strip() and str(n).strip() != "none"]
    available = [str(t) for t in get_available_trackers()]
    if "all" in names:
        return available
    built_in = set(LoggerType.list())
    out = []
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ValueError(
                f"report_to: unknown tracker {name!r}; choose 'none', 'all' or one of {sorted(LOGGER_TYPE_TO_CLASS)}"
            )
        if name in built_in and name not in available:
            raise ValueError(f"report_to: tracker {name!r} is not installed (pip install {name})")
        if name not in out:
            out.append(name)
    return out


def _config_values(config: dict[str, Any]) -> dict[str, Any]:
    """A run configuration trackers accept (bool, int, float, str or None; anything else as its text)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}


def open_trackers(args: TrackingArguments, stage: str, output_dir: str, config: dict[str, Any]) -> list:
    """Start the trackers `args.report_to` names on the main process (none elsewhere, none for `"none"`), with the
    stage's configuration stored as the run's hyperparameters.

    Example:
        >>> open_trackers(TrackingArguments(), "label", "outputs/labels", {"n_mc": 20})
        []
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    names = tracker_names(args.report_to)
    if not names or not process_state().is_main_process:
        return []
    project = args.run_name or f"trl-pav-{stage}"
    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        tracker = cls(project, str(Path(output_dir) / "runs")) if cls.requires_logging_directory else cls(project)
        tracker.start()
        tracker.store_init_configuration(_config_values(config))
        trackers.append(tracker)
    return trackers


def log_to_trackers(trackers: list, values: dict[str, Any], step: int | None = None) -> None:
    """Log the numeric entries of `values` (bools and other types left out) to every tracker."""
    numeric = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for tracker in trackers:
        tracker.log(numeric, step=step)


def close_trackers(trackers: list) -> None:
    """Finish every tracker (flushes local logs, closes remote runs)."""
    for tracker in trackers:
        tracker.finish()
