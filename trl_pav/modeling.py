"""The verifier: a causal-LM backbone with a scalar head read at the prompt's and every step's last token.

`sigmoid(head)` estimates `Q^π` (or `Q^μ` for verifiers trained on another prover's rollouts). The model is an
ordinary `AutoModelForTokenClassification(num_labels=1)`; the step format, prover K and target type live in its
config (`config.pav`), so `PAVVerifier.from_pretrained` of a folder or Hub id restores a ready scorer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from transformers import AutoModelForTokenClassification, PreTrainedModel

from .distributed import Lockstep
from .grading import as_real
from .steps import StepFormat, tokenize_trace
from .tokenization import without_added_bos
from .values import effective_reward, prover_advantages

__all__ = [
    "LIKELIHOOD_READ_RULE",
    "PAV_CONFIG_NAME",
    "PAVMetadata",
    "PAVVerifier",
    "StepScorer",
    "check_finite_weights",
    "check_verifier_head",
    "checked_step_values",
    "checkpoint_read_rule",
    "likelihood_head_model",
    "load_adapter_verifier",
    "render_prompt",
    "value_logits",
    "verifier_advantages",
]

Prompt = str | list[dict[str, str]]
PAV_CONFIG_NAME = "pav_config.json"  # the metadata file beside a PEFT adapter
FORMAT_VERSION = 2
# The prompt (with special tokens) and each step segment (separator + step) are tokenized separately; a value is read
# at the token holding each segment's last character (`steps.tokenize_trace`).
READ_POSITION_RULE = "segment_last_token"
# The same positions; the model keeps its LM head as extra outputs, and the value logit there is the last output plus
# the lowest log-probability that LM head gives any completion token up to the read (`value_logits`).
LIKELIHOOD_READ_RULE = "segment_last_token+least_token_logprob"
READ_RULES = (READ_POSITION_RULE, LIKELIHOOD_READ_RULE)


@runtime_checkable
class StepScorer(Protocol):
    """Anything that scores traces step by step: `score(prompts, steps) -> [[Q root, Q after step 1, ...], ...]`.

    The verifier implements it; so do exact oracles of the synthetic tasks, which can stand in for a verifier in
    search and RL.
    """

    def score(self, prompts: Sequence[Prompt], steps: Sequence[Sequence[str]]) -> list[list[float]]: ...


def checked_step_values(
    values: Sequence[Sequence[float]], steps: Sequence[Sequence[str]], scorer: object = None
) -> list[list[float]]:
    """A `StepScorer`'s output checked against its contract before search or RL acts on it: one list per trace,
    each `[root, after step 1, ...]` (one more value than steps), every value a finite number in [0, 1]. A NaN would
    otherwise win a beam's `max` or flow into the advantages.

    Raises:
        ValueError: naming the scorer, the trace, the position and the value.

    Example:
        >>> checked_step_values([[0.5, 1.0]], [["1+1=2"]])
        [[0.5, 1.0]]
        >>> checked_step_values([[0.5, float("nan")]], [["1+1=2"]])
        Traceback (most recent call last):
        ...
        ValueError: scorer: trace 0, value 1 (after step 1) is nan (float); step values must be finite numbers in [0, 1]
    """
    who = "scorer" if scorer is None else f"{type(scorer).__name__}.score"
    if len(values) != len(steps):
        raise ValueError(f"{who}: returned {len(values)} value lists for {len(steps)} traces")
    out = []
    for i, (row, trace) in enumerate(zip(values, steps)):
        if len(row) != len(trace) + 1:
            raise ValueError(
                f"{who}: trace {i} has {len(trace)} steps but {len(row)} values (expected the root value and one per "
                "step)"
            )
        checked = []
        for h, v in enumerate(row):
            value = as_real(v)
            if value is None or not 0.0 <= value <= 1.0:  # NaN fails both comparisons
                where = "the root" if h == 0 else f"after step {h}"
                raise ValueError(
                    f"{who}: trace {i}, value {h} ({where}) is {v!r:.40} ({type(v).__name__}); step values must be "
                    "finite numbers in [0, 1]"
                )
            checked.append(value)
        out.append(checked)
    return out


@dataclass
class PAVMetadata:
    """What a verifier checkpoint must carry besides its weights (stored as `config.pav`).

    Args:
        step_format (`dict`): `StepFormat.to_dict()` of the steps it was trained on.
        prover_k (`int`, defaults to `4`): K of the Best-of-K prover whose advantages it serves.
        target (`str`, defaults to `"q_pi"`): what sigmoid(head) estimates: `"q_pi"` (base-policy values; prover
            values via the BoK transform) or `"q_mu"` (values of a separate prover policy; no transform).
        kind (`str`, defaults to `"pav"`): `"pav"` (trained at every step) or `"orm"` (final position, outcome only).
        base_model (`str`, defaults to `""`): the backbone it was built from.
        metrics (`dict`, defaults to `{}`): evaluation metrics recorded at save time (for the model card).
        format_version (`int`, defaults to `FORMAT_VERSION`): version of this metadata's layout; a checkpoint written
            by a newer layout than this trl_pav reads raises on load. Checkpoints without it are version 1.
        read_position (`str`): how values are read from the model's outputs: `READ_POSITION_RULE` (a one-label head
            at each segment's last token) or `LIKELIHOOD_READ_RULE` (a likelihood head: see `value_logits`).
        max_length (`int` or `None`, defaults to `None`): the longest tokenized trace seen in training.
        trl_pav_version (`str`, defaults to `""`): the trl_pav version that wrote the checkpoint.
    """

    step_format: dict[str, Any] = field(default_factory=lambda: StepFormat().to_dict())
    prover_k: int = 4
    target: Literal["q_pi", "q_mu"] = "q_pi"
    kind: Literal["pav", "orm"] = "pav"
    base_model: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    read_position: str = READ_POSITION_RULE
    max_length: int | None = None
    trl_pav_version: str = ""

    @property
    def likelihood_head(self) -> bool:
        """Whether the model keeps its LM head and values add the least token log-probability (`value_logits`)."""
        return self.read_position == LIKELIHOOD_READ_RULE

    def __post_init__(self) -> None:
        if self.read_position not in READ_RULES:
            raise ValueError(f"PAVMetadata.read_position must be one of {list(READ_RULES)}, got {self.read_position!r}")
        if self.target not in ("q_pi", "q_mu"):
            raise ValueError(f"PAVMetadata.target must be 'q_pi' or 'q_mu', got {self.target!r}")
        if self.kind not in ("pav", "orm"):
            raise ValueError(f"PAVMetadata.kind must be 'pav' or 'orm', got {self.kind!r}")
        if not self.trl_pav_version:
            from . import __version__

            self.trl_pav_version = __version__

    @classmethod
    def from_config(cls, config) -> PAVMetadata:
        data = getattr(config, "pav", None)
        if not isinstance(data, dict):
            raise ValueError(
                "this checkpoint has no trl_pav step metadata (config.pav): it was not saved by trl_pav. Build a "
                "verifier from it with PAVVerifier.from_causal_lm(...) and train it, or pass step_format= to "
                "PAVVerifier.from_pretrained to use it as is."
            )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PAVMetadata:
        """Metadata from its stored dict: older layouts load (missing fields take version-1 meanings), newer raise."""
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"this checkpoint's trl_pav metadata has format_version {version!r}, newer than this trl_pav reads "
                f"({FORMAT_VERSION}; written by trl_pav {data.get('trl_pav_version', '?')}): upgrade trl_pav"
            )
        rule = data.get("read_position", READ_POSITION_RULE)
        if rule not in READ_RULES:
            raise ValueError(f"this checkpoint reads values by rule {rule!r}; this trl_pav knows {list(READ_RULES)}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("format_version", 1)
        known.setdefault("trl_pav_version", "unknown")
        return cls(**known)


def value_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    read_positions: torch.Tensor,
    completion_start: torch.Tensor | None,
    read_rule: str = READ_POSITION_RULE,
) -> torch.Tensor:
    """Value logits (`sigmoid` of them estimates Q) at the read positions, by the checkpoint's read rule.

    `READ_POSITION_RULE`: the one output at each read position. `LIKELIHOOD_READ_RULE`: the outputs are
    `V` LM-head logits and one value logit, and the value at read position `r` is
    `value_r + min_{completion tokens t <= r} log p(x_t | x_<t)`: a prefix is worth at most about as much as its
    least likely token is likely to be right. A wrong digit is a low-probability token where it is written, which a
    head reading one position cannot see at this scale (`docs/verifier_training.md`).

    Args:
        logits: `(B, T, 1)` or, for the likelihood rule, `(B, T, V + 1)` model outputs.
        input_ids: `(B, T)` token ids. attention_mask: `(B, T)` 1 on real tokens.
        read_positions: `(B, R)` token index of each read.
        completion_start: `(B,)` index of each row's first completion token (after the prompt); only the likelihood
            rule needs it.
        read_rule: one of `READ_RULES`.

    Returns:
        `(B, R)` float32 value logits.

    Example (V = 2; a completion token of probability 1/2 lowers the later value logit by log 2):
        >>> logits = torch.zeros(1, 3, 3)
        >>> value_logits(logits, torch.tensor([[0, 1, 1]]), torch.ones(1, 3), torch.tensor([[0, 2]]),
        ...              torch.tensor([1]), LIKELIHOOD_READ_RULE)
        tensor([[ 0.0000, -0.6931]])
    """
    if read_rule == READ_POSITION_RULE:
        return logits[..., 0].float().gather(1, read_positions)
    if read_rule != LIKELIHOOD_READ_RULE:
        raise ValueError(f"unknown read rule {read_rule!r}; known: {list(READ_RULES)}")
    if completion_start is None:
        raise ValueError(
            f"value_logits: the read rule {read_rule!r} needs completion_start (where each completion begins); a "
            "custom data collator must pass it through (StepwiseCollator does)"
        )
    lm = logits[:, :-1, :-1]  # position t-1 predicts token t
    # One row at a time: a (T, V) float32 copy instead of (B, T, V), which for a 150k vocabulary is gigabytes.
    normaliser = torch.stack([torch.logsumexp(row.float(), dim=-1) for row in lm])
    token_logp = lm.gather(2, input_ids[:, 1:, None])[..., 0].float() - normaliser
    token_logp = torch.cat([torch.zeros_like(token_logp[:, :1]), token_logp], dim=1)
    position = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    counted = (position >= completion_start[:, None]) & attention_mask.bool()
    least = torch.cummin(torch.where(counted, token_logp, torch.zeros_like(token_logp)), dim=1).values
    return (logits[..., -1].float() + least).gather(1, read_positions)


def likelihood_head_model(model_name_or_path: str | os.PathLike, **model_kwargs) -> PreTrainedModel:
    """A token-classification model for `LIKELIHOOD_READ_RULE` built from a causal-LM checkpoint: `V + 1` outputs,
    the first `V` a copy of the LM head (so `value_logits` sees the backbone's own token probabilities from the start),
    the last a zero-initialised value output.

    Raises:
        ValueError: if the architecture's token-classification head does not reproduce its LM head's logits (a
            final logit scaling or soft-capping the classifier does not apply): the rule cannot be used with it.
    """
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(model_name_or_path), **model_kwargs).eval()
    lm_head = lm.get_output_embeddings()
    vocab = lm_head.weight.shape[0]
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_name_or_path), num_labels=vocab + 1, **model_kwargs
    ).eval()
    head = _classifier_head(model, vocab + 1)
    with torch.no_grad():
        head.weight[:vocab].copy_(lm_head.weight)
        head.weight[vocab:].zero_()
        if head.bias is not None:
            head.bias.zero_()
            if getattr(lm_head, "bias", None) is not None:
                head.bias[:vocab].copy_(lm_head.bias)
        ids = torch.arange(min(8, vocab), device=lm.device)[None]
        got, want = model(input_ids=ids).logits[..., :vocab].float(), lm(input_ids=ids).logits.float()
    if not torch.allclose(got, want, atol=1e-3, rtol=1e-3):
        raise ValueError(
            f"{model_name_or_path}: its token-classification head does not reproduce the LM head's logits (max "
            f"difference {float((got - want).abs().max()):.3g}); the likelihood read rule cannot be used with "
            f"{type(model).__name__}"
        )
    del lm
    return model


def check_verifier_head(model: PreTrainedModel, read_rule: str, where: str) -> None:
    """Raise `ValueError` unless `model`'s outputs fit `read_rule`: one label for `READ_POSITION_RULE`, the LM head
    kept (`V + 1` labels) for `LIKELIHOOD_READ_RULE`.

    Example:
        >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
        >>> check_verifier_head(tiny_token_classifier(char_tokenizer()), READ_POSITION_RULE, "demo")
    """
    outputs = getattr(model.config, "num_labels", 1)
    if read_rule == LIKELIHOOD_READ_RULE and outputs < 2:
        raise ValueError(
            f"{where}: the read rule {LIKELIHOOD_READ_RULE!r} needs a model with its LM head kept (V + 1 outputs; "
            f"build it with trl_pav.modeling.likelihood_head_model), got num_labels={outputs}"
        )
    if read_rule != LIKELIHOOD_READ_RULE and outputs != 1:
        raise ValueError(f"{where}: the verifier needs a one-label head, got num_labels={outputs}")


def _classifier_head(model: PreTrainedModel, num_labels: int) -> torch.nn.Linear:
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear) and head.out_features == num_labels:
            return head
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not heads:
        raise ValueError(f"{type(model).__name__}: no linear head with {num_labels} outputs found")
    return heads[-1]


def checkpoint_read_rule(model_name_or_path: str | os.PathLike, **hub) -> str | None:
    """The read rule in a checkpoint's `config.pav` (None when it has none, e.g. a plain causal LM).

    Example:
        >>> import tempfile
        >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
        >>> folder = tempfile.mkdtemp()
        >>> tiny_token_classifier(char_tokenizer()).save_pretrained(folder)
        >>> checkpoint_read_rule(folder) is None
        True
    """
    from transformers import AutoConfig

    pav = getattr(AutoConfig.from_pretrained(str(model_name_or_path), **hub), "pav", None)
    return pav.get("read_position", READ_POSITION_RULE) if isinstance(pav, dict) else None


def check_finite_weights(model: torch.nn.Module, where: str) -> None:
    """Raise `FloatingPointError` naming the first parameters holding a NaN or infinite value.

    Example:
        >>> check_finite_weights(torch.nn.Linear(2, 1), "demo")
    """
    bad = [name for name, p in model.named_parameters() if p.numel() and not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(
            f"{where}: {len(bad)} parameter(s) hold NaN or infinite values (first: {bad[:3]}); this verifier would "
            "score NaN. Retrain it (PAVRewardTrainer stops at the first non-finite loss or gradient)."
        )


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """Prompt text for `tokenize_trace` (which adds the tokenizer's special tokens): strings pass through, chat
    messages go through the tokenizer's chat template, and a leading BOS that the tokenizer would add again is left
    out (templates in the style of Llama, Gemma and Mistral write it; stages that rendered them already pass the
    rendered text), so the verifier reads one BOS, as the policy does.

    Example:
        >>> from trl_pav.testing import char_tokenizer
        >>> tok = char_tokenizer()
        >>> tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
        >>> render_prompt(tok, [{"role": "user", "content": "1+1?"}]), render_prompt(tok, "<s>1+1?")
        ('1+1?', '1+1?')
    """
    if isinstance(prompt, str):
        return without_added_bos(tokenizer, prompt)
    return without_added_bos(
        tokenizer, tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    )


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0 (regression on soft labels should not be noised)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("classifier_dropout", "attention_dropout", "hidden_dropout", "hidden_dropout_prob", "dropout"):
        if config is not None and hasattr(config, name) and isinstance(getattr(config, name), float):
            setattr(config, name, 0.0)


class PAVVerifier:
    """A trained process (or outcome) verifier with a batched scoring API.

    Args:
        model: an `AutoModelForTokenClassification` with one label (or a PEFT wrapper of one).
        tokenizer: its fast tokenizer.
        metadata: a `PAVMetadata` (defaults to the model config's `pav` entry).
        max_length: longest tokenized trace; longer traces raise instead of being silently truncated.
        batch_size: traces per forward pass.
        lockstep: a `Lockstep` when the model is sharded across processes (DeepSpeed ZeRO-3): every `score` call
            then runs the same number of forward passes on every process, and a process that is done calls `drain`.

    Example:
        >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
        >>> tok = char_tokenizer()
        >>> verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(prover_k=4))
        >>> q = verifier.score(["Q:2*3+1?\\n"], [["2*3=6", "6+1=7", "#### 7"]])
        >>> len(q[0])  # root, then one value per step
        4
        >>> len(verifier.advantages(["Q:2*3+1?\\n"], [["2*3=6", "6+1=7", "#### 7"]])[0])
        3
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        metadata: PAVMetadata | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        lockstep: Lockstep | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.lockstep = lockstep
        self.metadata = metadata or PAVMetadata.from_config(model.config)
        self.step_format = StepFormat.from_dict(self.metadata.step_format)
        check_verifier_head(model, self.metadata.read_position, "PAVVerifier")
        limit = getattr(model.config, "max_position_embeddings", None)
        if max_length is not None and isinstance(limit, int) and max_length > limit:
            # Positions past the backbone's table crash (absolute embeddings) or silently extrapolate (RoPE).
            warnings.warn(
                f"PAVVerifier: max_length={max_length} exceeds the model's max_position_embeddings={limit}; "
                f"using {limit}",
                stacklevel=2,
            )
            max_length = limit
        self.max_length = max_length or limit or 4096
        self.batch_size = batch_size
        self.verifier_tokens = 0  # running count of tokens scored (compute accounting)

    # ---- construction and persistence -------------------------------------------------------------------------------
    @classmethod
    def from_causal_lm(
        cls, model_name_or_path: str | os.PathLike, tokenizer=None, metadata: PAVMetadata | None = None, **model_kwargs
    ) -> PAVVerifier:
        """A fresh verifier (untrained head) on the backbone of a causal-LM checkpoint, dropout off. With a
        `metadata` whose `read_position` is `LIKELIHOOD_READ_RULE`, the LM head is kept (`likelihood_head_model`)."""
        from .tokenization import load_tokenizer

        metadata = metadata or PAVMetadata()
        if metadata.likelihood_head:
            model = likelihood_head_model(model_name_or_path, **model_kwargs)
        else:
            model = AutoModelForTokenClassification.from_pretrained(
                str(model_name_or_path), num_labels=1, **model_kwargs
            )
        disable_dropout(model)
        metadata.base_model = metadata.base_model or str(model_name_or_path)
        model.config.pav = asdict(metadata)
        tokenizer = tokenizer or load_tokenizer(model_name_or_path)
        return cls(model, tokenizer, metadata)

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str | os.PathLike, step_format: StepFormat | None = None, **kwargs
    ) -> PAVVerifier:
        """Load a verifier saved by trl_pav from a folder or the Hub (PEFT adapter folders are merged into their base).

        Hub keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`) apply to model and tokenizer;
        other keyword arguments go to `AutoModelForTokenClassification.from_pretrained`.

        Raises:
            ValueError: if the checkpoint carries no trl_pav metadata and no `step_format` is given.
        """
        from transformers.utils import cached_file

        from .tokenization import load_tokenizer

        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
        adapter = cached_file(
            str(model_name_or_path),
            "adapter_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub,
        )
        if adapter is not None:  # a PEFT adapter, in a folder or on the Hub
            verifier = load_adapter_verifier(model_name_or_path, **hub, **kwargs)
        else:
            labels = (
                {} if checkpoint_read_rule(model_name_or_path, **hub) == LIKELIHOOD_READ_RULE else {"num_labels": 1}
            )
            model = AutoModelForTokenClassification.from_pretrained(str(model_name_or_path), **labels, **hub, **kwargs)
            model.eval()
            check_finite_weights(model, f"PAVVerifier.from_pretrained({str(model_name_or_path)!r})")
            if getattr(model.config, "pav", None) is None and step_format is not None:
                model.config.pav = asdict(
                    PAVMetadata(step_format=step_format.to_dict(), base_model=str(model_name_or_path))
                )
            verifier = cls(model, load_tokenizer(model_name_or_path, **hub))
        if step_format is not None and step_format != verifier.step_format:
            raise ValueError(
                f"{model_name_or_path}: step_format={step_format} differs from the checkpoint's "
                f"{verifier.step_format}; a verifier reads steps as it was trained (drop step_format=, or retrain "
                "with the new separator)"
            )
        return verifier

    def save_pretrained(self, save_directory: str | os.PathLike, repo_id: str | None = None) -> None:
        """Write model, tokenizer and the model card (README.md) to `save_directory`.

        Raises:
            FloatingPointError: if a weight is NaN or infinite (nothing is written).
        """
        check_finite_weights(self.model, "PAVVerifier.save_pretrained")
        self.model.config.pav = asdict(self.metadata)
        self.model.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
        (Path(save_directory) / "README.md").write_text(self.model_card(repo_id))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
        """Save to a temporary folder and upload it (weights, tokenizer, model card) to `repo_id`."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id)
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message="Upload PAV verifier")
        return repo_id

    def model_card(self, repo_id: str | None = None) -> str:
        """The model card (`trl_pav.hub.pav_model_card`): metadata, metrics, and how to score with trl_pav and with
        plain transformers."""
        from .hub import pav_model_card

        return str(pav_model_card(self.metadata, repo_id=repo_id))

    # ---- scoring -----------------------------------------------------------------------------------------------------
    def encode(self, prompt: Prompt, steps: Sequence[str], where: str = "trace"):
        """Token ids and read positions (root, then each step) of one trace; raises if it exceeds `max_length`."""
        if isinstance(steps, str) or not isinstance(steps, Sequence):
            raise TypeError(
                f"{where}: steps must be a list of step strings, got {type(steps).__name__} {steps!r:.40} (for one "
                'trace pass [["step 1", "step 2"]], not ["step 1", "step 2"])'
            )
        try:
            enc = tokenize_trace(self.tokenizer, render_prompt(self.tokenizer, prompt), list(steps), self.step_format)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from err
        if len(enc.input_ids) > self.max_length:
            raise ValueError(
                f"{where}: {len(enc.input_ids)} tokens exceed the verifier's max_length {self.max_length}; "
                "shorten the trace or raise max_length (traces are never truncated silently)"
            )
        return enc

    def steps_that_fit(self, prompt: Prompt, steps: Sequence[str]) -> int:
        """How many leading steps of a trace fit in `max_length` (all of them unless it is too long; 0 when not
        even the first does). RL scores only those: a sampled completion may be longer than the verifier reads.

        Example:
            >>> from trl_pav import PAVMetadata
            >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
            >>> tok = char_tokenizer()
            >>> v = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), max_length=14)
            >>> v.steps_that_fit("Q:", ["1+1=2", "2+2=4", "4+4=8"])
            2
        """
        text = render_prompt(self.tokenizer, prompt)

        def fits(h: int) -> bool:
            return self._fits(text, steps[:h])

        if fits(len(steps)):  # the usual case: one tokenization
            return len(steps)
        low, high = 0, len(steps) - 1  # a longer prefix never fits when a shorter one does not: bisect
        if not fits(0):
            return 0
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    def root_fits(self, prompt: Prompt) -> bool:
        """Whether the prompt alone fits in `max_length` (its root value can be read); `steps_that_fit` is 0 both
        when it does and when it does not.

        Example:
            >>> from trl_pav import PAVMetadata
            >>> from trl_pav.testing import char_tokenizer, tiny_token_classifier
            >>> tok = char_tokenizer()
            >>> v = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), max_length=14)
            >>> v.root_fits("Q:"), v.root_fits("Q:" + "1" * 20)
            (True, False)
        """
        return self._fits(render_prompt(self.tokenizer, prompt), [])

    def _fits(self, text: str, steps: Sequence[str]) -> bool:
        """Whether a rendered prompt and these steps, tokenized as scoring tokenizes them, fit in `max_length`."""
        return len(tokenize_trace(self.tokenizer, text, list(steps), self.step_format).input_ids) <= self.max_length

    def trace_tokens(self, prompt: Prompt, steps: Sequence[str]) -> int:
        """Tokens that scoring this trace reads (what `verifier_tokens` counts for it, whatever the batch)."""
        return len(self.encode(prompt, steps).input_ids)

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """`Q̂` of the root and after every step, one list per trace (one forward pass per trace, batched)."""
        if isinstance(prompts, str) or isinstance(steps, str):
            raise TypeError("score: prompts and steps must be lists (one entry per trace), got a string")
        if len(prompts) != len(steps):
            raise ValueError(f"score: {len(prompts)} prompts but {len(steps)} step lists")
        encoded = [self.encode(p, s, where=f"trace {i}") for i, (p, s) in enumerate(zip(prompts, steps))]
        out: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        starts = range(0, len(order), self.batch_size)
        passes = self.lockstep.agree(len(starts)) if self.lockstep is not None else len(starts)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in starts:
                chunk = order[start : start + self.batch_size]
                probs = self._forward([encoded[i] for i in chunk])
                for i, p in zip(chunk, probs):
                    out[i] = p
            for _ in range(passes - len(starts)):
                self._dummy_forward()
        finally:
            self.model.train(was_training)
        return out

    @torch.inference_mode()
    def drain(self) -> int:
        """Under `lockstep`, run dummy passes until every process has finished scoring; returns how many ran."""
        if self.lockstep is None:
            return 0
        was_training = self.model.training
        self.model.eval()
        try:
            return self.lockstep.drain(self._dummy_forward)
        finally:
            self.model.train(was_training)

    def _dummy_forward(self) -> None:
        ids = torch.zeros(1, 1, dtype=torch.long, device=self.model.device)
        self.model(input_ids=ids, attention_mask=torch.ones_like(ids))

    def _forward(self, encoded) -> list[list[float]]:
        device = self.model.device
        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded], device=device)
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded], device=device)
        self.verifier_tokens += int(mask.sum())
        reads = max(len(e.positions) for e in encoded)
        positions = torch.tensor([e.positions + [0] * (reads - len(e.positions)) for e in encoded], device=device)
        starts = torch.tensor([e.positions[0] + 1 for e in encoded], device=device)
        outputs = self.model(input_ids=ids, attention_mask=mask).logits
        logits = value_logits(outputs, ids, mask, positions, starts, self.metadata.read_position)
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                "PAVVerifier.score: the model produced NaN or infinite outputs; its weights or inputs are broken "
                "(no score is returned rather than NaN)"
            )
        return [torch.sigmoid(logits[b, : len(e.positions)]).tolist() for b, e in enumerate(encoded)]

    def advantages(
        self, prompts: Sequence[Prompt], steps: Sequence[Sequence[str]], k: float | None = None
    ) -> list[list[float]]:
        """Prover advantages `A^μ_h` of every step (BoK transform with `k`, default the checkpoint's prover K); `[]`
        for a trace with no steps."""
        return verifier_advantages(self.score(prompts, steps), self._prover_k(k))

    def effective_rewards(
        self, prompts: Sequence[Prompt], steps: Sequence[Sequence[str]], alpha: float, k: float | None = None
    ) -> list[list[float]]:
        """`Q̂^π + α·Â^μ` of every step (`[]` for a trace with no steps)."""
        k = self._prover_k(k)
        out = []
        for q in self.score(prompts, steps):
            t = torch.tensor(q, dtype=torch.float64)
            out.append(effective_reward(t[1:], prover_advantages(t, k), alpha).tolist() if len(q) > 1 else [])
        return out

    def as_reward_func(self, mode: str = "final", alpha: float = 0.5, k: float | None = None):
        """This verifier as a TRL `reward_funcs` entry, usable by any TRL trainer (GRPO, RLOO, ...).

        `mode="final"`: `Q̂` after a completion's last step; `"effective"`: the mean effective reward of its steps.
        Completions are split with the verifier's step format. See `trl_pav.reward_funcs.scorer_reward_func`.
        """
        from .reward_funcs import scorer_reward_func

        return scorer_reward_func(
            self, mode=mode, alpha=alpha, prover_k=self._prover_k(k), step_format=self.step_format
        )

    def _prover_k(self, k: float | None) -> float:
        if self.metadata.target == "q_mu":
            if k not in (None, 1):
                raise ValueError("this verifier predicts a separate prover's values (target q_mu): K must be 1")
            return 1
        return self.metadata.prover_k if k is None else k


def verifier_advantages(values: Sequence[Sequence[float]], k: float) -> list[list[float]]:
    """Prover advantages from per-trace value lists `[root, step 1, ...]` (as `StepScorer.score` returns them); a
    trace with no steps (its root value alone) has none.

    Example:
        >>> verifier_advantages([[0.5, 0.5], [0.5]], k=1)
        [[0.0], []]
    """
    return [prover_advantages(torch.tensor(q, dtype=torch.float64), k).tolist() if len(q) > 1 else [] for q in values]


def load_adapter_verifier(
    path: str | os.PathLike, base_model_name_or_path: str | None = None, **kwargs: Any
) -> PAVVerifier:
    """Load a PEFT adapter checkpoint written by `PAVRewardTrainer` (a folder or a Hub id), merged into its base model.

    The base is the adapter's `base_model_name_or_path` (a Hub id, or a folder on this machine) unless
    `base_model_name_or_path` is given. Hub keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`)
    apply to the adapter, its `pav_config.json` and the tokenizer; the rest go to the base model's `from_pretrained`.

    Raises:
        ValueError: if the adapter has no `pav_config.json` or its base model cannot be found.
    """
    import json

    from peft import PeftConfig, PeftModel
    from transformers.utils import cached_file

    from .tokenization import load_tokenizer

    hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    peft_config = PeftConfig.from_pretrained(str(path), **hub)
    base_id = base_model_name_or_path or peft_config.base_model_name_or_path
    from .distributed import outside_zero3_init

    meta_file = cached_file(
        str(path),
        PAV_CONFIG_NAME,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub,
    )
    if meta_file is None:
        raise ValueError(f"{path}: a PEFT adapter without {PAV_CONFIG_NAME}: it was not saved by PAVRewardTrainer")
    metadata = PAVMetadata.from_dict(json.loads(Path(meta_file).read_text()))
    with outside_zero3_init():  # PEFT cannot merge into weights that ZeRO-3 partitioned at load time
        try:
            if metadata.likelihood_head:  # the adapter carries the trained head; the base gives its shape
                base = likelihood_head_model(base_id, **kwargs)
            else:
                base = AutoModelForTokenClassification.from_pretrained(base_id, num_labels=1, **kwargs)
        except OSError as err:
            raise ValueError(
                f"{path}: the adapter's base model {base_id!r} cannot be loaded ({err}); pass "
                "base_model_name_or_path= (a Hub id or folder holding it)"
            ) from err
        merged = PeftModel.from_pretrained(base, str(path), **hub).merge_and_unload()
    merged.config.pav = asdict(metadata)
    merged.eval()
    check_finite_weights(merged, f"PAVVerifier.from_pretrained({str(path)!r})")
    return PAVVerifier(merged, load_tokenizer(path, **hub), metadata)
