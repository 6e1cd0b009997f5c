"""`PAVRewardTrainer`: trains a process advantage verifier (or an ORM) on a stepwise dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    EvalPrediction,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.utils import logging

from ..data import TARGETS, StepwiseDataError, validate_stepwise
from ..metrics import verifier_metrics
from ..modeling import (
    LIKELIHOOD_READ_RULE,
    PAV_CONFIG_NAME,
    READ_POSITION_RULE,
    PAVMetadata,
    PAVVerifier,
    check_finite_weights,
    check_verifier_head,
    checkpoint_read_rule,
    disable_dropout,
    likelihood_head_model,
    render_prompt,
    value_logits,
)
from ..steps import StepFormat, tokenize_trace
from ..tokenization import load_tokenizer
from ..values import bce_classes, class_balanced_bce, class_weights, grouped_pairwise_loss
from .pav_reward_config import PAVRewardConfig

__all__ = [
    "GroupedRowSampler",
    "NonFiniteGradientCheck",
    "PAVRewardTrainer",
    "StepwiseCollator",
    "tokenize_stepwise_row",
]

logger = logging.get_logger(__name__)
IGNORE = -100.0


def tokenize_stepwise_row(
    row: dict[str, Any],
    tokenizer,
    step_format: StepFormat,
    kind: str = "pav",
    max_length: int = 1024,
    train_root: bool = True,
    label_threshold: float = 0.5,
) -> dict[str, Any]:
    """Token ids, read positions and targets of one stepwise row.

    PAV: the root (if `root_value` is present and `train_root`) and every step. ORM: the final step only, with the
    binary outcome. Traces longer than `max_length` keep only the whole steps that fit, and their labels.

    Returns:
        `{"input_ids", "read_positions", "read_labels", "completion_start", "dropped_steps"}` (`completion_start`:
        the index of the first completion token); empty `input_ids` if nothing fits.
    """
    prompt = render_prompt(tokenizer, row["prompt"])
    steps = list(row["completions"])
    labels = [None if x is None else float(x) for x in row["labels"]]  # None: a step never measured, masked
    enc = tokenize_trace(tokenizer, prompt, steps, step_format)
    ids, positions = enc.input_ids, enc.positions
    kept = len(steps)
    if len(ids) > max_length:
        kept = max((h for h in range(len(steps) + 1) if positions[h] < max_length), default=-1)
        if kept <= 0:
            return _nothing(len(steps))
        ids = ids[: positions[kept] + 1]
    if kind == "orm":
        if kept < len(steps):  # the outcome sits at the final step, which no longer fits
            return _nothing(len(steps))
        outcome = row.get("seed_outcome")
        if outcome is None and labels[-1] is None:  # no outcome known: nothing to train on
            return _nothing(len(steps))
        outcome = float(outcome) if outcome is not None else float(labels[-1] >= label_threshold)
        return {
            "input_ids": ids,
            "read_positions": [positions[-1]],
            "read_labels": [outcome],
            "completion_start": positions[0] + 1,
            "dropped_steps": 0,
        }
    # Masked steps (never measured) are not read at all.
    measured = [h for h in range(kept) if labels[h] is not None]
    read_positions = [positions[h + 1] for h in measured]
    read_labels = [labels[h] for h in measured]
    root = row.get("root_value")
    if train_root and root is not None:
        read_positions = [positions[0], *read_positions]
        read_labels = [float(root), *read_labels]
    return {
        "input_ids": ids,
        "read_positions": read_positions,
        "read_labels": read_labels,
        "completion_start": positions[0] + 1,
        "dropped_steps": len(steps) - kept,
    }


def _nothing(dropped: int) -> dict[str, Any]:
    return {"input_ids": [], "read_positions": [], "read_labels": [], "completion_start": 0, "dropped_steps": dropped}


class StepwiseCollator:
    """Right-pads token ids and read positions/labels of tokenized stepwise rows into tensors.

    Padding read positions point at token 0 with label -100 (ignored by the loss and the metrics). Rows with a
    `group` (the trainer's prompt index) also give `groups`, for the same-prompt ranking term.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        reads = max(len(f["read_positions"]) for f in features)
        ids = [f["input_ids"] + [self.pad_token_id] * (width - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        pos = [f["read_positions"] + [0] * (reads - len(f["read_positions"])) for f in features]
        lab = [f["read_labels"] + [IGNORE] * (reads - len(f["read_labels"])) for f in features]
        batch = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "read_positions": torch.tensor(pos, dtype=torch.long),
            "read_labels": torch.tensor(lab, dtype=torch.float32),
        }
        if all("completion_start" in f for f in features):
            batch["completion_start"] = torch.tensor([f["completion_start"] for f in features], dtype=torch.long)
        if all("group" in f for f in features):
            batch["groups"] = torch.tensor([f["group"] for f in features], dtype=torch.long)
        return batch


class GroupedRowSampler(torch.utils.data.Sampler[int]):
    """Rows of one group one after another, the groups in a fresh random order every epoch (`shuffle=False`: in
    order of first appearance), so a batch holds whole problems for the same-prompt ranking term.

    Example:
        >>> list(GroupedRowSampler([0, 1, 0, 2, 1], shuffle=False))
        [0, 2, 1, 4, 3]
    """

    def __init__(self, groups: list[int], seed: int = 0, shuffle: bool = True):
        members: dict[int, list[int]] = {}
        for row, group in enumerate(groups):
            members.setdefault(int(group), []).append(row)
        self.members, self.seed, self.shuffle, self.epoch = list(members.values()), seed, shuffle, 0
        self.num_rows = len(groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self):
        order = range(len(self.members))
        if self.shuffle:
            order = torch.randperm(len(self.members), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self.epoch += 1
        for k in order:
            yield from self.members[int(k)]


class NonFiniteGradientCheck(TrainerCallback):
    """Stops training with an error naming the step and a parameter when a gradient is NaN or infinite.

    Runs after clipping and before the optimizer step, so no weight is ever updated with a non-finite gradient.
    Gradients held by DeepSpeed (not in `.grad`) are left to DeepSpeed's own overflow handling.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
        if not named:
            return
        finite = torch.stack([torch.isfinite(g).all() for _, g in named])
        if not bool(finite.all()):
            bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
            raise FloatingPointError(
                f"PAVRewardTrainer: non-finite gradient at training step {state.global_step + 1} in {len(bad)} "
                f"parameter(s), first {bad[0]!r}; the weights were not updated"
            )


class PAVRewardTrainer(Trainer):
    """Trains a verifier by class-balanced binary cross-entropy against soft Monte-Carlo labels at step ends.

    One forward pass per trace scores every step. The model is an `AutoModelForTokenClassification(num_labels=1)`
    (with `likelihood_head`, `V + 1` labels: the LM head kept, see `trl_pav.modeling.value_logits`), built from any
    causal-LM checkpoint when `model` is a string; the step format, prover K, target and read rule travel in its
    config, so the saved checkpoint loads with `PAVVerifier.from_pretrained`.

    Args:
        model: a path/Hub id of a causal LM (or of a verifier to keep training), or a token-classification model.
        args: a `PAVRewardConfig`.
        train_dataset: a stepwise dataset (`prompt`, `completions`, `labels`; optional `root_value`,
            `seed_outcome`, `target`), as a `Dataset` or a list of rows.
        eval_dataset: the same, for evaluation (Brier score, AUC, calibration error).
        processing_class: the tokenizer (default: loaded from `model`'s path).
        peft_config: a PEFT config; use `task_type="TOKEN_CLS"` so the head is trained and saved.

    Example:
        >>> import tempfile
        >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
        >>> tok = char_tokenizer()
        >>> rows = [{"prompt": "Q:1+1?\\n", "completions": ["1+1=2", "#### 2"], "labels": [0.9, 1.0]}] * 4
        >>> args = PAVRewardConfig(output_dir=tempfile.mkdtemp(), max_steps=2, report_to="none", use_cpu=True,
        ...                        save_strategy="no", disable_tqdm=True)
        >>> trainer = PAVRewardTrainer(tiny_token_classifier(tok), args, Dataset.from_list(rows), processing_class=tok)
        >>> trainer.train().global_step  # doctest: +ELLIPSIS
        {...}
        2
    """

    _tag_names: ClassVar[list[str]] = ["trl", "trl-pav", "pav", "process-reward-model"]

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: PAVRewardConfig | None = None,
        train_dataset: Dataset | list[dict] | None = None,
        eval_dataset: Dataset | list[dict] | dict[str, Dataset] | None = None,
        processing_class=None,
        data_collator=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
    ):
        args = args or PAVRewardConfig(output_dir="pav-verifier")
        # Rows as a list (what `validate_stepwise` and the labeler's JSONL give) become a Dataset here.
        if train_dataset is not None and not isinstance(train_dataset, Dataset):
            train_dataset = validate_stepwise(train_dataset)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: v if isinstance(v, Dataset) else validate_stepwise(v) for k, v in eval_dataset.items()}
        elif eval_dataset is not None and not isinstance(eval_dataset, Dataset):
            eval_dataset = validate_stepwise(eval_dataset)
        model_id = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "")
        if isinstance(model, str):
            # The scalar head is freshly initialised: seed it, so the same seed gives the same verifier.
            set_seed(args.seed)
            init_kwargs = args.model_init_kwargs or {}
            hub_keys = ("revision", "token", "cache_dir", "local_files_only")
            hub = {k: init_kwargs[k] for k in hub_keys if k in init_kwargs}
            saved_rule = checkpoint_read_rule(model, **hub)
            if (saved_rule == LIKELIHOOD_READ_RULE) != args.likelihood_head and saved_rule is not None:
                raise ValueError(
                    f"{model} is a verifier with read rule {saved_rule!r}; PAVRewardConfig.likelihood_head="
                    f"{args.likelihood_head} does not match it"
                )
            if saved_rule == LIKELIHOOD_READ_RULE:  # keep training a likelihood-head verifier
                model = AutoModelForTokenClassification.from_pretrained(model, **init_kwargs)
            elif args.likelihood_head:
                model = likelihood_head_model(model, **init_kwargs)
            else:
                model = AutoModelForTokenClassification.from_pretrained(model, num_labels=1, **init_kwargs)
        read_rule = LIKELIHOOD_READ_RULE if args.likelihood_head else READ_POSITION_RULE
        check_verifier_head(model, read_rule, "PAVRewardTrainer")
        disable_dropout(model)
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and args.max_length > limit:
            # Positions past the backbone's table crash (absolute embeddings) or silently extrapolate (RoPE).
            logger.warning(
                f"PAVRewardConfig.max_length={args.max_length} exceeds the model's max_position_embeddings={limit}; "
                f"using max_length={limit}"
            )
            args.max_length = limit
        if processing_class is None:
            if not model_id:
                raise ValueError("pass processing_class: the model has no path to load a tokenizer from")
            processing_class = load_tokenizer(model_id)
        if processing_class.pad_token_id is None:
            processing_class.pad_token = processing_class.eos_token

        old = getattr(model.config, "pav", None)
        base_meta = PAVMetadata.from_dict(old) if isinstance(old, dict) else PAVMetadata(base_model=model_id)
        step_format = (
            StepFormat(args.step_separator)
            if args.step_separator is not None
            else StepFormat.from_dict(base_meta.step_format)
        )
        target = args.target or _dataset_target(train_dataset) or "q_pi"
        self.pav_metadata = PAVMetadata(
            step_format=step_format.to_dict(),
            prover_k=args.prover_k,
            target=target,  # type: ignore[arg-type]
            kind=args.kind,  # type: ignore[arg-type]
            base_model=base_meta.base_model or model_id,
            max_length=args.max_length,
            read_position=read_rule,
        )
        model.config.pav = asdict(self.pav_metadata)
        self.step_format = step_format

        if peft_config is not None:
            from peft import get_peft_model, prepare_model_for_kbit_training

            if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
            model = get_peft_model(model, peft_config)

        self.class_weights: torch.Tensor | None = None
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
            if args.class_balanced and args.class_weighting == "dataset":
                flat = torch.tensor([x for row in train_dataset["read_labels"] for x in row], dtype=torch.float64)
                low, high = bce_classes(flat, torch.ones_like(flat, dtype=torch.bool), args.label_threshold)
                self.class_weights = class_weights(torch.stack([low.sum(), high.sum()]))
        if eval_dataset is not None:
            if isinstance(eval_dataset, dict):
                eval_dataset = {k: self._prepare_dataset(v, processing_class, args, k) for k, v in eval_dataset.items()}
            else:
                eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        callbacks = [*(callbacks or []), NonFiniteGradientCheck()]
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or StepwiseCollator(processing_class.pad_token_id),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or self._default_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # The loss is a mean over the batch's labeled reads and ignores `num_items_in_batch`: the Trainer must divide
        # it by the gradient-accumulation steps (said explicitly rather than inferred from the model's signature).
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False

    def _prepare_dataset(self, dataset: Dataset, tokenizer, args: PAVRewardConfig, name: str) -> Dataset:
        dataset = validate_stepwise(dataset, step_format=self.step_format)
        fn_kwargs = {
            "tokenizer": tokenizer,
            "step_format": self.step_format,
            "kind": args.kind,
            "max_length": args.max_length,
            "train_root": args.train_root,
            "label_threshold": args.label_threshold,
        }
        tokenized = dataset.map(
            tokenize_stepwise_row,
            fn_kwargs=fn_kwargs,
            remove_columns=dataset.column_names,
            num_proc=args.dataset_num_proc,
            desc=f"Tokenizing {name} dataset",
        )
        dropped_steps = sum(tokenized["dropped_steps"])
        empty = [i for i, ids in enumerate(tokenized["input_ids"]) if not ids]
        if dropped_steps:
            logger.warning(
                f"{name} dataset: {dropped_steps} trailing step(s) did not fit in max_length={args.max_length} and "
                f"were dropped with their labels; {len(empty)} row(s) had nothing left and were removed"
            )
        prompt_index: dict[str, int] = {}
        keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in dataset["prompt"]]
        tokenized = tokenized.add_column("group", [prompt_index.setdefault(k, len(prompt_index)) for k in keys])
        if empty:
            tokenized = tokenized.select([i for i in range(len(tokenized)) if tokenized[i]["input_ids"]])
        if len(tokenized) == 0:
            raise ValueError(f"{name} dataset: no row fits in max_length={args.max_length}")
        return tokenized.remove_columns("dropped_steps")

    # ---- sampling ------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.contrast_weight > 0 and dataset is not None and "group" in dataset.column_names:
            return GroupedRowSampler(dataset["group"], seed=self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        grouped = eval_dataset is not None and "group" in eval_dataset.column_names
        if self.args.contrast_weight > 0 and grouped and self.accelerator.num_processes == 1:
            return GroupedRowSampler(eval_dataset["group"], shuffle=False)
        return super()._get_eval_sampler(eval_dataset)

    # ---- loss ----------------------------------------------------------------------------------------------------
    def _reads(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        read = value_logits(
            outputs,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["read_positions"],
            inputs.get("completion_start"),
            self.pav_metadata.read_position,
        )
        labels = inputs["read_labels"]
        return read, labels, labels >= 0

    def _loss(
        self,
        read: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor,
        split: bool = False,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The batch's loss; `split`: the batch is one process's share of a data-parallel batch, so normalise by
        the whole batch's counts and scale by the process count (DDP averages the gradients), which makes N
        processes train exactly like one process with an N times larger batch. The same-prompt ranking term
        (`contrast_weight`) is each process's own batch mean: pairs never span processes."""
        labels = labels.clamp(min=0)
        threshold = self.args.label_threshold
        counts = None
        if split:
            local = torch.stack([m.sum() for m in bce_classes(labels, mask, threshold)]).float()
            counts = self.accelerator.reduce(local, reduction="sum")
        if self.args.class_balanced:
            loss = class_balanced_bce(read, labels, mask, threshold, class_counts=counts, weights=self.class_weights)
        else:
            losses = torch.nn.functional.binary_cross_entropy_with_logits(read.float(), labels, reduction="none")
            total = mask.sum() if counts is None else counts.sum()
            loss = (losses * mask).sum() / total.clamp(min=1)
        loss = loss * self.accelerator.num_processes if split else loss
        if self.args.contrast_weight > 0 and groups is not None:
            loss = loss + self.args.contrast_weight * grouped_pairwise_loss(read, labels, mask, groups)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        read, labels, mask = self._reads(model, inputs)
        split = model.training and self.accelerator.num_processes > 1
        loss = self._loss(read, labels, mask, split=split, groups=inputs.get("groups"))
        if model.training and not torch.isfinite(loss):
            # Trainer's log would hide it (`logging_nan_inf_filter`) while the weights turn NaN.
            raise FloatingPointError(
                f"PAVRewardTrainer: the loss is {loss.item()} at training step {self.state.global_step + 1} "
                f"(non-finite verifier outputs: {int((~torch.isfinite(read)).sum())}); check the learning rate and "
                "the model's weights"
            )
        return (loss, {"logits": read}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            read, labels, mask = self._reads(model, inputs)
            loss = self._loss(read, labels, mask, groups=inputs.get("groups")).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, read.detach(), labels.masked_fill(~mask, IGNORE)

    def _default_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        logits, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        mask = labels >= 0
        probs = 1.0 / (1.0 + np.exp(-logits[mask]))
        return verifier_metrics(probs, labels[mask], self.args.label_threshold)

    # ---- saving --------------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save weights (or the adapter), tokenizer, `pav_config.json` and a model card.

        Raises:
            FloatingPointError: if a weight is NaN or infinite (nothing is written).
        """
        check_finite_weights(self.accelerator.unwrap_model(self.model), "PAVRewardTrainer.save_model")
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if not self.is_world_process_zero():
            return
        evals = [e for e in self.state.log_history if any(k.startswith("eval_") for k in e)]
        if evals:
            self.pav_metadata.metrics = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / PAV_CONFIG_NAME).write_text(json.dumps(asdict(self.pav_metadata), indent=2))
        self._write_model_card(output_dir)

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs
    ) -> None:
        """Write the PAV model card (`trl_pav.hub.pav_model_card`) to `output_dir`. `push_to_hub` calls this after
        `save_model`, so the pushed card is the PAV card, with the Hub repository in its usage code."""
        if not self.is_world_process_zero():
            return
        extra = [tags] if isinstance(tags, str) else list(tags or [])
        self._write_model_card(self.args.output_dir, dataset_name=dataset_name, tags=extra)

    def _write_model_card(self, output_dir: str, dataset_name: str | None = None, tags: list[str] | None = None):
        from ..hub import pav_model_card

        card = pav_model_card(
            self.pav_metadata,
            repo_id=self.hub_model_id,
            dataset=dataset_name,
            extra_tags=[*self._tag_names, *(tags or [])],
        )
        card.save(str(Path(output_dir) / "README.md"))

    def verifier(self) -> PAVVerifier:
        """The model being trained, as a scorer."""
        model = self.accelerator.unwrap_model(self.model)
        return PAVVerifier(model, self.processing_class, self.pav_metadata, max_length=self.args.max_length)


def _dataset_target(dataset: Dataset | None) -> str | None:
    """The label target the rows declare (`None` where none does: as in `validate_stepwise`, `None` is absent)."""
    if dataset is None or "target" not in dataset.column_names:
        return None
    targets = dataset["target"]
    unknown = [(i, t) for i, t in enumerate(targets) if t is not None and t not in TARGETS]
    if unknown:
        raise StepwiseDataError(
            [(i, f"target = {t!r:.40} is not one of {list(TARGETS)}") for i, t in unknown], len(targets)
        )
    values = {t for t in targets if t is not None}
    if not values:
        return None
    if None in targets and values != {"q_pi"}:  # an undeclared row trains as the default, q_pi
        values.add("q_pi")
    if len(values) != 1:
        raise ValueError(f"the dataset mixes label targets {sorted(values)}; train one verifier per target")
    return values.pop()
