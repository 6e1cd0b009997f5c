"""Stage 1: the base policy by SFT, or rejection fine-tuning on its own correct traces (`recipes/sft.py`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .common import GenerationArguments, ProblemArguments, StepArguments

__all__ = [
    "SFTScriptArguments",
    "conversational_row",
    "main",
    "make_parser",
    "rejection_sample",
    "solution_completion",
]

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


@dataclass
class SFTScriptArguments(ProblemArguments, GenerationArguments, StepArguments):
    """Arguments of the SFT recipe, besides TRL's `SFTConfig` and `ModelConfig`; `separator` (`StepArguments`) is
    the step format of the reference solutions and of rejection samples.

    With `use_chat_template`, rows are TRL conversational prompt/completion pairs (the prompt a user turn, the
    completion the assistant's), so the prompt is tokenized as every other stage renders it.

    Args:
        from_scratch (`bool`, defaults to `False`):
            Train a freshly initialised tiny Llama with the task's character tokenizer (synthetic tasks only; its
            size is the task's default in `trl_pav.tasks.DEFAULT_POLICY`) instead of `model_name_or_path`.
        rejection_sampling (`bool`, defaults to `False`):
            Rejection fine-tuning, as the paper does before RL: sample `samples_per_problem` traces per problem from
            `model_name_or_path`, keep the distinct correct ones, and fine-tune on them. Otherwise train on the
            reference solutions (the task's traces; MATH `solution`; GSM8K `answer`).
        samples_per_problem (`int`, defaults to `4`): samples per problem for rejection sampling.
        sampling_seed (`int`, defaults to `0`): seed of those samples.
    """

    from_scratch: bool = field(default=False, metadata={"help": "Fresh tiny Llama (synthetic tasks only)."})
    rejection_sampling: bool = field(default=False, metadata={"help": "Fine-tune on the model's correct samples."})
    samples_per_problem: int = field(default=4, metadata={"help": "Samples per problem for rejection sampling."})
    sampling_seed: int = field(default=0, metadata={"help": "Seed of the rejection samples."})


def make_parser(argv: list[str] | None = None):
    """The `TrlParser` of this stage (`argv` is unused: one set of dataclasses whatever the arguments)."""
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


def solution_completion(row: dict, index: int, separator: str = "\n") -> str:
    """The reference solution of a MATH (`solution`) or GSM8K (`answer` with `#### n`) row as a completion whose
    steps are its non-empty lines (a MATH solution's pieces between separators when the separator is not a newline:
    `"\\n\\n"` keeps its paragraphs, display math inside them), ending in a `\\boxed{}` answer.

    Raises:
        ValueError: naming the row, when it has no reference solution or a step would not join back.

    Example:
        >>> solution_completion({"answer": "2*3=6\\n6+1=7\\n#### 7"}, 0)
        '2*3=6\\n6+1=7\\nThe answer is \\\\boxed{7}.'
        >>> solution_completion({"solution": "So\\n\\\\[x=1.\\\\]\\n\\nThus $\\\\boxed{1}$."}, 0, "\\n\\n")
        'So\\n\\\\[x=1.\\\\]\\n\\nThus $\\\\boxed{1}$.'
    """
    from ..steps import StepFormat

    fmt = StepFormat(separator)
    if isinstance(row.get("solution"), str) and row["solution"].strip():
        text = row["solution"]
        lines = text.splitlines() if separator == "\n" else fmt.split(text)
    elif isinstance(row.get("answer"), str) and _GSM8K_ANSWER.search(row["answer"]):
        match = _GSM8K_ANSWER.search(row["answer"])
        lines = [*row["answer"][: match.start()].splitlines(), f"The answer is \\boxed{{{match.group(1)}}}."]
    else:
        raise ValueError(
            f"row {index}: no reference solution (a MATH 'solution' or a GSM8K 'answer' with '####'); "
            "use rejection_sampling to train on the model's own correct traces"
        )
    try:
        return fmt.join([line.strip() for line in lines if line.strip()])
    except ValueError as err:
        raise ValueError(f"row {index}: {err}") from err


def conversational_row(row: dict) -> dict:
    """A prompt/completion row in TRL's conversational form: the prompt as user message(s) (kept if it already is a
    list of messages), the completion as the assistant's turn. `SFTTrainer` then tokenizes the prompt exactly as
    labeling, search and RL render it (the chat template with a generation prompt, no special tokens added).

    Example:
        >>> conversational_row({"prompt": "1+1?", "completion": "1+1=2"})
        {'prompt': [{'role': 'user', 'content': '1+1?'}], 'completion': [{'role': 'assistant', 'content': '1+1=2'}]}
    """
    prompt = row["prompt"]
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return {"prompt": messages, "completion": [{"role": "assistant", "content": row["completion"]}]}


def rejection_sample(policy, problems, grader, samples_per_problem: int, seed: int) -> list[dict]:
    """This process's share of distinct correct `(prompt, completion)` rows; processes split the problems."""
    from accelerate.utils import gather_object

    from ..distributed import process_shard, process_state
    from ..evaluation import sample_traces

    state = process_state()
    _, rows = process_shard(problems.to_list(), state.process_index, state.num_processes)
    join = policy.step_format.join
    traces = sample_traces(policy, [r["prompt"] for r in rows], samples_per_problem, seed=seed) if rows else []
    keep, seen = [], set()
    for row, samples in zip(rows, traces):
        for steps in samples:
            text = join(steps)
            if steps and (row["prompt"], text) not in seen and grader.grade(text, row["gold"]):
                seen.add((row["prompt"], text))
                keep.append({"prompt": row["prompt"], "completion": text})
    return gather_object(keep) if state.num_processes > 1 else keep


def main(script_args: SFTScriptArguments, training_args, model_args) -> dict:
    """Build the SFT data, train with TRL's `SFTTrainer`, save model and tokenizer to `output_dir`."""
    from datasets import Dataset
    from trl import SFTTrainer, get_peft_config

    from ..tasks import PlantedTask, default_policy_config, get_task, tiny_policy_model
    from ..tokenization import load_tokenizer
    from .common import (
        chat_prompts,
        check_model_source,
        end_trackers,
        load_stage_policy,
        load_stage_problems,
        model_init_kwargs,
    )

    if script_args.from_scratch == bool(model_args.model_name_or_path):
        raise ValueError("sft: give exactly one of model_name_or_path and from_scratch")
    check_model_source(model_args.model_name_or_path, "sft: model_name_or_path")
    if script_args.from_scratch and script_args.task is None:
        raise ValueError("sft: from_scratch needs a synthetic task (its character tokenizer)")
    task = get_task(script_args.task, script_args.task_options) if script_args.task else None
    tokenizer = task.tokenizer() if script_args.from_scratch else load_tokenizer(model_args.model_name_or_path)
    chat = script_args.use_chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "sft: use_chat_template, but the model's tokenizer has no chat template: drop use_chat_template"
        )
    if script_args.rejection_sampling:
        if script_args.from_scratch:
            raise ValueError("sft: rejection_sampling samples from model_name_or_path; it cannot start from scratch")
        problems, grader, step_format = load_stage_problems(
            script_args, script_args.dataset_train_split, script_args.separator
        )
        policy = load_stage_policy(
            model_args.model_name_or_path, model_args, script_args, step_format, script_args.max_step_tokens
        )
        messages = {}
        if chat:  # the policy samples from the rendered prompts, as labeling and search will
            rendered = chat_prompts(problems, tokenizer)
            messages = dict(zip(rendered["prompt"], chat_prompts(problems)["prompt"]))
            problems = rendered
        rows = rejection_sample(policy, problems, grader, script_args.samples_per_problem, script_args.sampling_seed)
        if chat:
            rows = [{**row, "prompt": messages[row["prompt"]]} for row in rows]
        if callable(getattr(policy, "sleep", None)):
            # A vLLM engine holds its GPU memory until collected, which `del` does not force; training needs it now.
            policy.sleep(level=2)
        del policy
        if not rows:
            raise ValueError(
                f"sft: rejection sampling found no correct trace in {len(problems)} problems x "
                f"{script_args.samples_per_problem} samples; sample more or start from a stronger model"
            )
        train = Dataset.from_list(rows)
    elif task is not None:
        if script_args.separator not in (None, task.step_format.separator):
            raise ValueError(
                f"sft: task {task.name!r} writes steps separated by {task.step_format.separator!r}, not separator "
                f"{script_args.separator!r}: drop the separator (it is for datasets)"
            )
        if script_args.num_problems is None:
            raise ValueError(f"sft: task {task.name!r} needs num_problems (SFT rows to draw)")
        if isinstance(task, PlantedTask):  # the paper's initialisation: samples of the γ = 5 procedural prover
            train = task.sft_dataset(gamma=5.0, n=script_args.num_problems, seed=script_args.problems_seed)
        else:
            train = task.sft_dataset(script_args.num_problems, seed=script_args.problems_seed)
    else:
        problems, _, step_format = load_stage_problems(
            script_args, script_args.dataset_train_split, script_args.separator
        )
        sep = step_format.separator
        train = Dataset.from_dict(
            {
                "prompt": problems["prompt"],
                "completion": [solution_completion(r, i, sep) for i, r in enumerate(problems.to_list())],
            }
        )
    if chat:
        train = train.map(conversational_row, remove_columns=["prompt", "completion"])
    if script_args.from_scratch:
        model = tiny_policy_model(tokenizer, default_policy_config(task))
    else:
        model = model_args.model_name_or_path
        training_args.model_init_kwargs = {**model_init_kwargs(model_args), **(training_args.model_init_kwargs or {})}
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    end_trackers(trainer)
    return {
        "output_dir": training_args.output_dir,
        "train_rows": len(train),
        "train_loss": result.training_loss,
        "global_step": result.global_step,
    }
