"""Configuration of `PAVRewardTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["PAVRewardConfig"]


@dataclass
class PAVRewardConfig(TrainingArguments):
    r"""Configuration of [`PAVRewardTrainer`], which trains a process advantage verifier (or an ORM).

    Only the parameters specific to verifier training are listed here; see `transformers.TrainingArguments` for the
    rest. Defaults that differ from `TrainingArguments`: `learning_rate=1e-4`, `logging_steps=10`,
    `remove_unused_columns=False` (the trainer pre-tokenizes rows itself).

    Parameters:
        > Verifier

        kind (`str`, *optional*, defaults to `"pav"`):
            `"pav"`: regress every step's soft label (and the root value when the dataset has `root_value`).
            `"orm"`: the outcome reward model baseline, trained only at the final position on the binary outcome
            (`seed_outcome` when the dataset has it, else the last label rounded at `label_threshold`).
        prover_k (`int`, *optional*, defaults to `4`):
            K of the Best-of-K prover whose advantages the verifier will serve (stored in the checkpoint).
        target (`str` or `None`, *optional*, defaults to `None`):
            What the labels estimate: `"q_pi"` or `"q_mu"`. `None` reads the dataset's `target` column, else `"q_pi"`.
        step_separator (`str` or `None`, *optional*, defaults to `None`):
            Step separator of the verifier's inputs (escapes read: `'\n\n'` is a blank line). `None` keeps the
            model's stored format, else a newline.

        likelihood_head (`bool`, *optional*, defaults to `False`):
            Keep the backbone's LM head as extra outputs and read each value as the value output plus the lowest
            log-probability the LM head gives any completion token up to the read (`trl_pav.modeling.value_logits`,
            read rule `LIKELIHOOD_READ_RULE`, stored in the checkpoint). A wrong step is usually a low-probability
            token where it is written, which a head at one position does not learn to see from a few thousand
            labels; this head sees it from the start. Not in the paper (see `docs/verifier_training.md`).

        > Loss

        class_balanced (`bool`, *optional*, defaults to `True`):
            Weight labels `< label_threshold` and `>= label_threshold` equally in the binary cross-entropy (the
            paper's balancing); `False` averages over all labeled positions.
        class_weighting (`str`, *optional*, defaults to `"dataset"`):
            How `class_balanced` weighs the classes. `"dataset"`: fixed weights from the class counts of the whole
            training set (each class half of the total weight, the same weights in every batch). `"batch"`: each
            class's mean within the (data-parallel) batch weighted equally; the weights then vary with the batch's
            composition, which shifts the calibration of `Q̂`.
        label_threshold (`float`, *optional*, defaults to `0.5`):
            Class boundary for balancing, AUC and the ORM's outcome.
        train_root (`bool`, *optional*, defaults to `True`):
            Also regress the root value (read at the prompt's last token) when the dataset has `root_value`; the
            first step's advantage needs it.

        contrast_weight (`float`, *optional*, defaults to `0.0`):
            Weight of a same-problem ranking term added to the loss: `grouped_pairwise_loss` over the labeled
            positions of rows that share a prompt (pairs weighted by their label gap). `0` is the paper's pointwise
            objective. A positive weight also batches the rows of one prompt together. The pointwise loss alone can
            be lowered by learning which problems are easy; this term only by ranking one problem's steps and
            answers, which is what search selects by (a deviation from the paper, see `docs/deviations.md`).

        > Data

        max_length (`int`, *optional*, defaults to `1024`):
            Longest tokenized trace. Longer traces lose whole trailing steps (with their labels) and a warning
            counts them; a row whose prompt and first step do not fit is dropped with a warning. Labels are never
            misaligned. Capped, with a warning, at the backbone's `max_position_embeddings`.
        dataset_num_proc (`int` or `None`, *optional*, defaults to `None`):
            Processes for tokenizing the dataset.
        model_init_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Keyword arguments for `AutoModelForTokenClassification.from_pretrained` when `model` is a string.
    """

    kind: str = field(default="pav", metadata={"help": "'pav' (every step) or 'orm' (final outcome only)."})
    prover_k: int = field(default=4, metadata={"help": "K of the Best-of-K prover stored with the verifier."})
    target: str | None = field(default=None, metadata={"help": "'q_pi' or 'q_mu'; None reads the dataset."})
    step_separator: str | None = field(default=None, metadata={"help": "Step separator (None: model's or newline)."})
    likelihood_head: bool = field(
        default=False, metadata={"help": "Keep the LM head; values add the least token log-probability."}
    )
    class_balanced: bool = field(default=True, metadata={"help": "Balance labels below/above label_threshold."})
    class_weighting: str = field(
        default="dataset", metadata={"help": "'dataset' (fixed weights from the training set) or 'batch'."}
    )
    label_threshold: float = field(default=0.5, metadata={"help": "Class boundary for balancing and metrics."})
    train_root: bool = field(default=True, metadata={"help": "Also regress the root value when available."})
    contrast_weight: float = field(
        default=0.0, metadata={"help": "Weight of the same-prompt pairwise ranking term (0: the paper's loss)."}
    )
    max_length: int = field(default=1024, metadata={"help": "Longest tokenized trace."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    model_init_kwargs: dict | None = field(default=None, metadata={"help": "Kwargs for from_pretrained."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial AdamW learning rate."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X updates steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep pre-tokenized columns."})

    def __post_init__(self):
        if self.kind not in ("pav", "orm"):
            raise ValueError(f"PAVRewardConfig.kind must be 'pav' or 'orm', got {self.kind!r}")
        if self.target not in (None, "q_pi", "q_mu"):
            raise ValueError(f"PAVRewardConfig.target must be 'q_pi', 'q_mu' or None, got {self.target!r}")
        if self.class_weighting not in ("dataset", "batch"):
            raise ValueError(
                f"PAVRewardConfig.class_weighting must be 'dataset' or 'batch', got {self.class_weighting!r}"
            )
        if self.prover_k < 1:
            raise ValueError(f"PAVRewardConfig.prover_k must be >= 1, got {self.prover_k}")
        if not 0.0 < self.label_threshold < 1.0:
            raise ValueError(f"PAVRewardConfig.label_threshold must be in (0, 1), got {self.label_threshold}")
        if self.step_separator is not None and (not isinstance(self.step_separator, str) or not self.step_separator):
            raise ValueError(
                f"PAVRewardConfig.step_separator must be a non-empty string or None (keep the model's), got "
                f"{self.step_separator!r}"
            )
        if self.step_separator is not None:
            from ..steps import parse_separator

            # '\n\n' from a command line arrives as four characters.
            self.step_separator = parse_separator(self.step_separator)
        if not 0.0 <= self.contrast_weight < float("inf"):  # also refuses NaN
            raise ValueError(
                f"PAVRewardConfig.contrast_weight must be a finite number >= 0, got {self.contrast_weight}"
            )
        if self.max_length < 2:
            raise ValueError(f"PAVRewardConfig.max_length must be >= 2, got {self.max_length}")
        super().__post_init__()
