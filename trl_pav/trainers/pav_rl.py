"""What the PAV RL trainers share: config fields, locating steps in policy tokens, and the dense advantages."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from ..distributed import Lockstep, is_zero3
from ..grading import Grader, grade_batch
from ..modeling import PAVVerifier, StepScorer, checked_step_values
from ..steps import StepFormat, parse_separator, token_positions
from ..values import best_of_k, dense_advantages, prover_advantages, rewards_to_go

__all__ = [
    "PAVRLFields",
    "PAVRLMixin",
    "ProcessTerms",
    "RewardFunctionsGrader",
    "detached_copy",
    "grader_reward",
    "locate_steps",
]

SEQUENCE_LEVEL_LOSSES = ("vespo", "luspo")
PROCESS_REWARDS = ("advantage", "q_value", "q_value_to_go")
PROCESS_NORMALIZE_MIN_STD = 1e-3  # below it, `process_normalize` leaves the terms as they are
logger = logging.get_logger(__name__)


@dataclass
class PAVRLFields:
    """Config fields shared by `PAVGRPOConfig` and `PAVRLOOConfig`.

    Parameters:
        verifier_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Folder or Hub id of a trl_pav verifier. Alternatively pass any `StepScorer` as the trainer's `verifier`.
        pav_alpha (`float`, *optional*, defaults to `3.0`):
            α, the weight of the process advantage added to the outcome advantage (the paper uses 3-5 in RL).
            0 reproduces the parent trainer exactly.
        prover_k (`float` or `None`, *optional*, defaults to `None`):
            K of the Best-of-K prover. `None` takes the verifier's stored K (1 for scorers without one).
        process_reward (`str`, *optional*, defaults to `"advantage"`):
            `"advantage"`: each step's one-step prover advantage `A^μ_h` (the paper's method). Two **ablations**:
            `"q_value"`, the prover value `Q^μ_h` itself (one-step: it differs from `A^μ_h` by the value of the
            state before the step, a baseline: in expectation it changes the gradient's variance only, up to the
            loss's length normalization and for tokens of located steps: a truncated tail gets no term in either
            form); `"q_value_to_go"`, the prover values summed from the step to the end as
            ordinary dense rewards, under which padding a trace with no-progress steps adds reward (the failure
            the paper reports for `Q^μ` rewards).
        process_clip (`float` or `None`, *optional*, defaults to `None`):
            Clip each step's process term to `[-process_clip, process_clip]`.
        process_normalize (`bool`, *optional*, defaults to `False`):
            Divide the batch's process terms by their standard deviation (over scored steps). Skipped when that
            standard deviation is below `PROCESS_NORMALIZE_MIN_STD` (1e-3): near-equal terms have no scale to
            normalize by, and dividing would multiply them by up to 10^6.
        step_separator (`str` or `None`, *optional*, defaults to `None`):
            Step separator used to find steps in completions (escapes read: `'\\n\\n'` is a blank line). `None`
            takes the verifier's, else a newline.
        verifier_batch_size (`int`, *optional*, defaults to `32`):
            Traces per verifier forward pass.
        terminal_value (`str`, *optional*, defaults to `"outcome"`):
            Value after the last step of a completion that ended (EOS). `"outcome"`: its outcome reward (weighted
            sum of the reward functions, clipped to [0, 1]): the success of a complete trace is known, and a value
            that assumes the trace goes on would reward stopping early. `"verifier"`: the verifier's estimate.
        truncated_terminal (`bool`, *optional*, defaults to `False`):
            With `terminal_value="outcome"`, a completion cut at `max_completion_length` (no EOS) ends at its outcome
            reward as well: the tokens after its last whole step carry the drop (a cut that leaves none charges
            nothing). Off, a cut completion's last value is the verifier's, which never charges a
            policy that stalls to the limit with valid no-progress steps (docs/tasks.md).
        verifier_lockstep (`bool` or `None`, *optional*, defaults to `None`):
            Run the same number of verifier forward passes on every process (dummy passes pad the short ones), as a
            verifier sharded by DeepSpeed ZeRO-3 requires. `None`: on exactly when ZeRO-3 is enabled.
        verifier_type (`str`, *optional*, defaults to `"pav"`):
            What `verifier_model_name_or_path` holds: `"pav"` (a trl_pav verifier) or a public PRM convention
            (`"qwen-prm"`, `"math-shepherd"`, `"rlhflow"`; `trl_pav.prm_adapters`), used as `Q` estimates. `"mc"`:
            no verifier model; prover values come from `mc_rollouts` rollouts per state, online, graded by the
            trainer's reward functions (`trl_pav.MCStepScorer`; docs/mc_advantages.md).
        mc_rollouts (`int`, *optional*, defaults to `4`):
            With `verifier_type="mc"`: rollouts per state.
        mc_prover_k (`int`, *optional*, defaults to `1`):
            With `verifier_type="mc"`: K of the Best-of-K prover over the rollout policy (at most `mc_rollouts`).
        mc_rollout_policy (`str`, *optional*, defaults to `"current"`):
            With `verifier_type="mc"`: `"current"` (the policy being trained) or `"frozen"` (its initial weights).
        mc_refresh_every (`int` or `None`, *optional*, defaults to `None`):
            With `mc_rollout_policy="frozen"`: copy the trained weights into the rollout prover every this many steps.
        verifier_model_init_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Keyword arguments for loading `verifier_model_name_or_path` (`dtype`, `quantization_config` for a 4/8-bit
            verifier, `revision`, ...), as `model_init_kwargs` is for the policy.
    """

    verifier_model_name_or_path: str | None = field(default=None, metadata={"help": "Verifier folder or Hub id."})
    pav_alpha: float = field(default=3.0, metadata={"help": "Weight of the process advantage."})
    prover_k: float | None = field(default=None, metadata={"help": "Prover K (None: the verifier's)."})
    process_reward: str = field(
        default="advantage", metadata={"help": "'advantage', or the ablations 'q_value' and 'q_value_to_go'."}
    )
    process_clip: float | None = field(default=None, metadata={"help": "Clip the process term to +-this."})
    process_normalize: bool = field(default=False, metadata={"help": "Divide process terms by their std."})
    step_separator: str | None = field(default=None, metadata={"help": "Step separator (None: the verifier's)."})
    verifier_batch_size: int = field(default=32, metadata={"help": "Traces per verifier forward pass."})
    terminal_value: str = field(default="outcome", metadata={"help": "'outcome' or 'verifier' for ended traces."})
    truncated_terminal: bool = field(
        default=False, metadata={"help": "With terminal_value='outcome': a cut completion ends at its outcome too."}
    )
    verifier_lockstep: bool | None = field(
        default=None, metadata={"help": "Equal verifier passes on every process (None: on under ZeRO-3)."}
    )
    verifier_type: str = field(
        default="pav",
        metadata={"help": "'pav', a public PRM ('qwen-prm', 'math-shepherd', 'rlhflow'), or 'mc' (online rollouts)."},
    )
    mc_rollouts: int = field(default=4, metadata={"help": "verifier_type='mc': rollouts per state."})
    mc_prover_k: int = field(default=1, metadata={"help": "verifier_type='mc': K of the Best-of-K prover."})
    mc_rollout_policy: str = field(
        default="current", metadata={"help": "verifier_type='mc': 'current' or 'frozen' rollout policy."}
    )
    mc_refresh_every: int | None = field(
        default=None, metadata={"help": "verifier_type='mc', frozen: refresh the prover every this many steps."}
    )
    verifier_model_init_kwargs: dict | None = field(
        default=None, metadata={"help": "Kwargs for loading the verifier (dtype, quantization_config, revision)."}
    )

    def _check_pav_fields(self) -> None:
        if self.verifier_type not in ("pav", "qwen-prm", "math-shepherd", "rlhflow", "mc"):
            raise ValueError(
                "verifier_type must be 'pav', 'qwen-prm', 'math-shepherd', 'rlhflow' or 'mc', got "
                f"{self.verifier_type!r}"
            )
        if self.mc_rollout_policy not in ("current", "frozen"):
            raise ValueError(f"mc_rollout_policy must be 'current' or 'frozen', got {self.mc_rollout_policy!r}")
        if self.verifier_type == "mc" and self.verifier_model_name_or_path is not None:
            raise ValueError(
                "verifier_type='mc' uses rollouts, not a verifier model: unset verifier_model_name_or_path"
            )
        if self.step_separator is not None:
            if not isinstance(self.step_separator, str) or not self.step_separator:
                raise ValueError(f"step_separator must be a non-empty string or None, got {self.step_separator!r}")
            # '\n\n' from a command line arrives as four characters.
            self.step_separator = parse_separator(self.step_separator)
        if self.terminal_value not in ("outcome", "verifier"):
            raise ValueError(f"terminal_value must be 'outcome' or 'verifier', got {self.terminal_value!r}")
        if self.process_reward not in PROCESS_REWARDS:
            raise ValueError(f"process_reward must be one of {PROCESS_REWARDS}, got {self.process_reward!r}")
        if self.prover_k is not None and self.prover_k < 1:
            raise ValueError(f"prover_k must be >= 1, got {self.prover_k}")
        if self.process_clip is not None and self.process_clip <= 0:
            raise ValueError(f"process_clip must be > 0, got {self.process_clip}")
        loss_type = getattr(self, "loss_type", None)
        if loss_type in SEQUENCE_LEVEL_LOSSES:
            raise ValueError(
                f"loss_type={loss_type!r} assumes one advantage per sequence; PAV advantages differ per step. "
                "Use a token-level loss such as 'dapo', 'grpo', 'bnpo' or 'dr_grpo'."
            )
        if getattr(self, "importance_sampling_level", "token") == "sequence":
            raise ValueError(
                "importance_sampling_level='sequence' assumes one advantage per sequence; PAV advantages differ per "
                "step. Use importance_sampling_level='token'."
            )


def grader_reward(grader: Grader, gold_column: str = "gold") -> Callable[..., list[float]]:
    """A TRL reward function grading each completion against the dataset's `gold_column`.

    Example:
        >>> from trl_pav import ExactMatchGrader
        >>> reward = grader_reward(ExactMatchGrader(), "gold")
        >>> reward(prompts=["p", "p"], completions=["A:3", "A:4"], gold=["3", "3"])
        [1.0, 0.0]
    """

    def outcome_reward(prompts, completions, **kwargs) -> list[float]:
        if gold_column not in kwargs:
            raise ValueError(f"outcome_reward: the dataset has no {gold_column!r} column with gold answers")
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return grade_batch(grader, texts, list(kwargs[gold_column]))  # one round trip for a bounded grader

    outcome_reward.__name__ = f"outcome_{type(grader).__name__}"
    return outcome_reward


def normalize_process_terms(process: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """`process_normalize`: the batch's process terms divided by their standard deviation over scored steps, or
    unchanged where fewer than two steps are scored or the deviation is below `PROCESS_NORMALIZE_MIN_STD` (near-equal
    terms have no scale to normalize by).

    Args:
        process: `(B, H)` process term per completion and step.
        step_mask: `(B, H)` bool, True where a step was scored.

    Example:
        >>> mask = torch.tensor([[True, True], [True, False]])
        >>> terms = lambda rows: torch.tensor(rows, dtype=torch.float64)
        >>> normalize_process_terms(terms([[0.1, 0.1], [0.1, 0.0]]), mask).tolist()  # equal terms: unchanged
        [[0.1, 0.1], [0.1, 0.0]]
        >>> normalize_process_terms(terms([[1.0, -1.0], [1.0, 0.0]]), mask).round(decimals=3).tolist()
        [[0.866, -0.866], [0.866, 0.0]]
    """
    if step_mask.sum() < 2:
        return process
    std = process[step_mask].std()
    return process / std if std >= PROCESS_NORMALIZE_MIN_STD else process


def token_char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """Character end of each token in `decode(ids, skip_special_tokens=True)`.

    Fast path, O(T): re-tokenize the decoded text with offsets; when that reproduces the same ids (the usual case),
    each token ends at its offset's end and special tokens end where the previous token did. Otherwise (a
    non-canonical tokenization the model sampled) detokenize incrementally, O(T) (`_windowed_char_ends`), and use it
    when its text equals the full decode; failing that, decode every prefix, which is exact but O(T^2).

    Example:
        >>> from trl_pav.testing import char_tokenizer
        >>> tok = char_tokenizer()
        >>> token_char_ends(tok, tok("ab;cd", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        [1, 2, 3, 4, 5, 5]
    """
    if not ids:
        return []
    special = set(tokenizer.all_special_ids)
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if enc["input_ids"] == [t for t in ids if t not in special]:
        ends, offsets, end = [], iter(enc["offset_mapping"]), 0
        for t in ids:
            if t not in special:
                end = max(end, next(offsets)[1])
            ends.append(end)
        return ends
    windowed = _windowed_char_ends(tokenizer, ids, special)
    if windowed is not None and windowed[1] == text:
        return windowed[0]
    texts = tokenizer.batch_decode([list(ids[: k + 1]) for k in range(len(ids))], skip_special_tokens=True)
    return [len(t) for t in texts]


def _windowed_char_ends(tokenizer, ids: Sequence[int], special: set[int]) -> tuple[list[int], str] | None:
    """Character ends by incremental detokenization, O(T): each token's new text is the decode of a short window
    (from the token before the last emitted one) minus the window's decode without it. Tokens that end inside a
    multi-byte character (their window decodes to a trailing U+FFFD) wait for the token that completes it; then the
    first waiting token takes the character and the others are zero-width continuations, as in the fast path.
    Returns the ends and the text they add up to (the caller checks it against the full decode), or None if a
    character never completes."""
    ends: list[int] = []
    pieces: list[str] = []
    length, prefix, read, waiting, before = 0, 0, 0, [], ""  # before: decode(ids[prefix:read])
    for t, token in enumerate(ids):
        if token in special:
            ends.append(length)
            continue
        after = tokenizer.decode(list(ids[prefix : t + 1]), skip_special_tokens=True)
        waiting.append(len(ends))
        ends.append(length)
        last = t == len(ids) - 1  # a completion cut inside a character ends on its replacement character
        if len(after) <= len(before) or (after.endswith("\ufffd") and not last) or not after.startswith(before):
            continue
        new = after[len(before) :]
        pieces.append(new)
        ends[waiting[0]] = length + (1 if len(waiting) > 1 else len(new))
        length += len(new)
        for k in waiting[1:]:
            ends[k] = length if k == waiting[-1] else ends[waiting[0]]
        prefix, read, waiting = read, t + 1, []
        before = tokenizer.decode(list(ids[prefix:read]), skip_special_tokens=True)
    if waiting:
        return None
    return ends, "".join(pieces)


def locate_steps(
    tokenizer, completion_ids: Sequence[int], step_format: StepFormat, finished: bool
) -> tuple[list[str], list[int]]:
    """The complete steps of a completion and the step index of each of its tokens (-1 outside scored steps).

    A step is complete when a separator follows it, or when the completion finished (end of sequence). The trailing
    piece of a truncated completion is not a step: its tokens, separators after the last step and the EOS token get
    -1 (outcome advantage only). Tokens from just after step h-1's last token through step h's last token belong to
    step h.

    Example:
        >>> from trl_pav.testing import char_tokenizer
        >>> tok = char_tokenizer()
        >>> ids = tok("1+1=2\\n2+2=4\\n#", add_special_tokens=False)["input_ids"]
        >>> steps, owner = locate_steps(tok, ids, StepFormat(), finished=False)
        >>> steps, owner
        (['1+1=2', '2+2=4'], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1, -1])
    """
    ends = token_char_ends(tokenizer, completion_ids)
    text = tokenizer.decode(list(completion_ids), skip_special_tokens=True)
    complete = step_format.complete_spans(text, finished)
    owner = [-1] * len(completion_ids)
    if not complete:
        return [], owner
    # Spans from consecutive ends. A zero-width token that is not special continues the previous token's character
    # (a byte-level BPE splits one multi-byte character over several tokens): it takes that token's span, so the
    # step whose last character it completes also owns it.
    special = set(tokenizer.all_special_ids)
    offsets, prev = [], 0
    for t, end in zip(completion_ids, ends):
        if end > prev:
            offsets.append((prev, end))
        elif t not in special and offsets and offsets[-1][1] > offsets[-1][0]:
            offsets.append(offsets[-1])
        else:
            offsets.append((end, end))
        prev = max(prev, end)
    last_tokens = token_positions(offsets, [e for _, e in complete])
    first = 0
    for h, last in enumerate(last_tokens):
        for t in range(first, last + 1):
            owner[t] = h
        first = last + 1
    return [text[s:e] for s, e in complete], owner


class RewardFunctionsGrader:
    """Grades rollouts with an online trainer's own reward functions (weighted sum, clipped to [0, 1]), so
    `verifier_type="mc"` needs no separate grader. The "gold" of a rollout is its dataset row, whose columns are
    passed to the reward functions as TRL does."""

    needs_gold = True

    def __init__(self, trainer):
        for i, func in enumerate(trainer.reward_funcs):
            if not callable(func) or isinstance(func, torch.nn.Module):
                raise ValueError(
                    f"verifier_type='mc' grades rollouts with the trainer's reward functions, but reward_funcs[{i}] "
                    f"is a {type(func).__name__}, not a plain function: pass an MCStepScorer with its own grader"
                )
        self.trainer = trainer

    def grade(self, completion: str, gold: dict) -> float:
        return self.grade_batch([completion], [gold])[0]

    def grade_batch(self, completions, rows) -> list[float]:
        rows = list(rows)
        if not rows:
            return []
        conversational = not isinstance(rows[0].get("prompt"), str)
        texts = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
        columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "completion")}
        weights = self.trainer.reward_weights.tolist()
        total = [0.0] * len(rows)
        for func, weight in zip(self.trainer.reward_funcs, weights):
            values = func(prompts=[r.get("prompt") for r in rows], completions=texts, **columns)
            # None and NaN both mean "no reward" to TRL (it sums rewards with nansum): 0 here as well.
            given = [0.0 if v is None or math.isnan(float(v)) else float(v) for v in values]
            total = [t + weight * v for t, v in zip(total, given)]
        return [min(max(t, 0.0), 1.0) for t in total]


@dataclass
class ProcessTerms:
    """The verifier's view of a batch of completions (`PAVRLMixin._pav_process_terms`).

    Attributes:
        process: `(B, H)` per-step process terms, already clipped/normalised per the config; 0 for padding steps.
        step_mask: `(B, H)` bool, which steps were scored (including a finished completion's terminal step).
        token_step: `(B, T)` long step index of each completion token, -1 outside scored steps.
        steps: each completion's complete steps (text).
        owners: `token_step` as lists.
    """

    process: torch.Tensor
    step_mask: torch.Tensor
    token_step: torch.Tensor
    steps: list[list[str]]
    owners: list[list[int]]


class _LockstepForward(torch.nn.Module):
    """A sharded model whose every forward pass is first agreed with the other processes (one pass per `Lockstep`
    round), for scorers whose `score` knows nothing of lockstep (public PRM adapters); `drain` then matches the other
    processes' remaining passes with dummy ones. The wrapped model's `forward` signature shows through (adapters read
    it to pass `logits_to_keep`)."""

    def __init__(self, model: torch.nn.Module, lockstep: Lockstep):
        import functools

        super().__init__()
        self.model, self.lockstep = model, lockstep
        inner = getattr(model, "module", model)  # a DeepSpeed engine wraps the model

        @functools.wraps(inner.forward)
        def forward(*args, **kwargs):
            self.lockstep.agree(1)
            return self.model(*args, **kwargs)

        self.forward = forward

    @torch.inference_mode()
    def drain(self) -> int:
        def dummy() -> None:
            ids = torch.zeros(1, 1, dtype=torch.long, device=self.lockstep.device)
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids))

        return self.lockstep.drain(dummy)


def _run_in_lockstep(scorer, lockstep: Lockstep) -> None:
    """Make `scorer` (with a sharded `.model`) run its forward passes in lockstep across processes: each pass agreed
    with the others, and after every `score` call dummy passes until every process is done. `scorer.lockstep` is set,
    so the trainer calls `score` on every process, even with nothing to score."""
    model = _LockstepForward(scorer.model, lockstep)
    inner_score = scorer.score

    def score(prompts, steps):
        try:
            return inner_score(prompts, steps)
        finally:
            model.drain()

    scorer.model, scorer.score, scorer.drain, scorer.lockstep = model, score, model.drain, lockstep


class PAVRLMixin:
    """Dense PAV advantages for TRL's online trainers. Subclasses call `_init_pav` and `_pav_advantages`."""

    def _init_pav(self, verifier: StepScorer | str | None) -> None:
        args = self.args
        verifier = verifier if verifier is not None else args.verifier_model_name_or_path
        if verifier is None and args.verifier_type == "mc":
            from ..mc_values import MCStepScorer

            verifier = MCStepScorer(
                "frozen" if args.mc_rollout_policy == "frozen" else None,
                RewardFunctionsGrader(self),
                n_rollouts=args.mc_rollouts,
                prover_k=args.mc_prover_k,
                seed=args.seed,
                refresh_every=args.mc_refresh_every,
                gold_column=None,  # the reward functions read the batch rows themselves
            )
        if verifier is None:
            raise ValueError("a PAV trainer needs a verifier: pass verifier= or set verifier_model_name_or_path")
        if isinstance(verifier, str):
            init_kwargs = dict(args.verifier_model_init_kwargs or {})
            quantization = init_kwargs.get("quantization_config")
            if isinstance(quantization, dict):  # from a YAML config or the command line
                from transformers import BitsAndBytesConfig

                init_kwargs["quantization_config"] = BitsAndBytesConfig(**quantization)
            from ..prm_adapters import load_step_scorer

            verifier = load_step_scorer(verifier, self.args.verifier_type, **init_kwargs)
        if not isinstance(verifier, StepScorer):
            raise TypeError(f"verifier must implement score(prompts, steps), got {type(verifier).__name__}")
        from ..prm_adapters import PublicPRM

        if isinstance(verifier, (PublicPRM, PAVVerifier)):
            # Frozen and prepared alike: under ZeRO-3 transformers loaded the model inside `zero.Init` (partitioned),
            # so only DeepSpeed's engine can run it, and every process must run its forward passes together.
            verifier.batch_size = args.verifier_batch_size
            verifier.model.requires_grad_(False)
            if self.is_deepspeed_enabled:
                from trl.models.utils import prepare_deepspeed

                verifier.model = prepare_deepspeed(verifier.model, self.accelerator)
            else:
                verifier.model = self.accelerator.prepare_model(verifier.model, evaluation_mode=True)
            lockstep = is_zero3(self.accelerator) if args.verifier_lockstep is None else args.verifier_lockstep
            if lockstep and isinstance(verifier, PAVVerifier):
                verifier.lockstep = Lockstep(self.accelerator.device)
            elif lockstep:
                _run_in_lockstep(verifier, Lockstep(self.accelerator.device))
        self.verifier = verifier
        stored_k = verifier.metadata.prover_k if isinstance(verifier, PAVVerifier) else 1
        if isinstance(verifier, PAVVerifier) and verifier.metadata.target == "q_mu":
            stored_k = 1
        if getattr(verifier, "value_target", "q_pi") == "q_mu":  # e.g. MC rollouts: already the prover's values
            stored_k = 1
            if args.prover_k not in (None, 1):
                raise ValueError(
                    f"prover_k={args.prover_k} would apply Best-of-K to {type(verifier).__name__}'s values, which are "
                    "already the prover's (Q^mu): set the scorer's own prover_k and leave the trainer's at None"
                )
        self.pav_prover_k = args.prover_k if args.prover_k is not None else stored_k
        if args.step_separator is not None:
            self.pav_step_format = StepFormat(args.step_separator)
        elif getattr(verifier, "step_format", None) is not None:
            self.pav_step_format = verifier.step_format
        else:
            logger.warning(
                f"the verifier ({type(verifier).__name__}) has no step_format and step_separator is not set: "
                "completions are split into steps at newlines"
            )
            self.pav_step_format = StepFormat()
        from ..mc_values import MCStepScorer

        if isinstance(verifier, MCStepScorer) and (verifier.policy is None or verifier.policy == "frozen"):
            verifier.bind(self._rollout_policy(frozen=verifier.policy == "frozen"))
        self._last_rewards: torch.Tensor | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards  # (global batch, num reward funcs), for monitoring
        return rewards

    def combine_advantages(
        self,
        outcome_advantages: torch.Tensor,
        process_terms: torch.Tensor,
        token_step: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-token advantages from the outcome advantage and the per-step process terms. Override to change how
        step rewards are combined.

        Args:
            outcome_advantages: `(B,)` the parent trainer's advantages (leave-one-out for RLOO; group-centred,
                optionally scaled, for GRPO).
            process_terms: `(B, H)` per-step process terms (prover advantages, or `Q^μ` / its rewards to go in
                the ablations), already clipped/normalised per the config; 0 for padding steps.
            token_step: `(B, T)` step index of each completion token, -1 outside scored steps.
            completion_mask: `(B, T)`.

        Returns:
            `(B, T)` advantages: `outcome_b + α · process_{b, h(t)}`.
        """
        return dense_advantages(outcome_advantages, process_terms, token_step, self.args.pav_alpha, completion_mask)

    def _pav_advantages(self, inputs: list[dict], output: dict) -> torch.Tensor:
        """Score the batch's completions with the verifier and return `(B, T)` dense advantages (logging the parts)."""
        outcome = output["advantages"].to(torch.float32)
        terms = self._pav_process_terms(inputs, output)
        advantages = self.combine_advantages(outcome, terms.process, terms.token_step, output["completion_mask"])
        self._log_pav(outcome, terms.process, terms.step_mask, output["completion_mask"], terms.steps, terms.owners)
        return advantages

    def _pav_process_terms(self, inputs: list[dict], output: dict) -> ProcessTerms:
        """Locate the steps of the batch's completions, score them with the verifier, and return the per-step
        process terms (prover advantages, or `Q^μ` / its rewards to go in the ablations) with each token's step index.

        Reads `output["completion_ids"]` and `output["completion_mask"]` (`(B, T)`, right-padded).
        """
        device = output["completion_ids"].device
        completion_ids, mask = output["completion_ids"], output["completion_mask"]
        self._pav_spent = {"rollout": 0, "verifier": 0}  # this call's compute on this process (`_log_pav` sums it)
        eos = self.processing_class.eos_token_id
        steps_list, owners, finished_rows = [], [], []
        for ids_row, mask_row in zip(completion_ids.tolist(), mask.tolist()):
            n = int(sum(mask_row))
            ids = ids_row[:n]
            finished = bool(ids) and ids[-1] == eos
            steps, owner = locate_steps(self.processing_class, ids, self.pav_step_format, finished)
            steps_list.append(steps)
            finished_rows.append(finished)
            owners.append(owner + [-1] * (len(ids_row) - n))
        outcomes = self._local_outcomes(len(steps_list))
        # A completion longer than the verifier reads is scored on the leading steps that fit; the rest get the
        # outcome term only (logged as pav/steps_beyond_verifier), and its outcome is no terminal step.
        fits = getattr(self.verifier, "steps_that_fit", None)
        scored_steps = [
            s[: fits(inputs[i]["prompt"], s)] if callable(fits) and s else s for i, s in enumerate(steps_list)
        ]
        beyond = sum(len(s) - len(k) for s, k in zip(steps_list, scored_steps))
        if callable(fits):
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["pav/steps_beyond_verifier"].append(float(beyond))
        # A finished completion ends with a terminal step (its EOS): value moves from the last step's estimate to
        # the known outcome, so stopping early is credited to the token that stops.
        # With `truncated_terminal`, a completion cut at the length limit ends at its outcome too (it is graded as is).
        # A completion with no whole step gets one as well, from the root's value: otherwise an empty or stepless
        # completion carries no process term while every failing trace's terms sum to f(0) - f(V_root) < 0, and RL
        # learns to write nothing.
        cut_at = self.args.max_completion_length if self.args.truncated_terminal else None
        root_fits = getattr(self.verifier, "root_fits", None)  # a prompt alone too long has no root value to read
        terminal = [
            self.args.terminal_value == "outcome"
            and outcomes is not None
            and (finished_rows[i] or (cut_at is not None and int(mask[i].sum()) >= cut_at))
            and len(scored_steps[i]) == len(steps_list[i])
            and (bool(steps_list[i]) or not callable(root_fits) or root_fits(inputs[i]["prompt"]))
            for i in range(len(steps_list))
        ]
        for i, row in enumerate(owners):
            if terminal[i]:  # the terminal step is the tokens after the last whole step (none: it carries nothing)
                last = max((t for t, h in enumerate(row) if h >= 0), default=-1)
                n = int(mask[i].sum())
                row[last + 1 : n] = [len(steps_list[i])] * (n - last - 1)
        token_step = torch.tensor(owners, dtype=torch.long, device=device)
        width = max((len(s) + int(t) for s, t in zip(steps_list, terminal)), default=0)
        process = torch.zeros(len(steps_list), width, dtype=torch.float32, device=device)
        step_mask = torch.zeros_like(process, dtype=torch.bool)
        scored = [i for i, s in enumerate(scored_steps) if s or terminal[i]]
        # Under lockstep every process must call the verifier, even with nothing to score.
        if scored or getattr(self.verifier, "lockstep", None) is not None:
            prompts = [inputs[i]["prompt"] for i in scored]
            read_before = self.verifier.verifier_tokens if _counts_reads(self.verifier) else 0
            if getattr(self.verifier, "needs_gold", False):  # rollout scorers grade against the gold answer
                values = self._score_with_golds(inputs, scored, prompts, [scored_steps[i] for i in scored])
            else:
                values = self.verifier.score(prompts, [scored_steps[i] for i in scored])
            if _counts_reads(self.verifier):  # a learned verifier's reads are compute the arm pays for
                self._pav_spent["verifier"] += int(self.verifier.verifier_tokens - read_before)
            values = checked_step_values(values, [scored_steps[i] for i in scored], self.verifier)
            k = self.pav_prover_k
            for i, v in zip(scored, values):
                q = torch.tensor(v, dtype=torch.float64)
                if terminal[i]:
                    q = torch.cat([q, q.new_tensor([outcomes[i]])])
                if self.args.process_reward == "advantage":
                    term = prover_advantages(q, k)
                elif self.args.process_reward == "q_value":  # ablation: the prover's value itself
                    term = best_of_k(q[1:], k)
                else:  # ablation: the prover's values summed as dense rewards (each step's return)
                    term = rewards_to_go(best_of_k(q[1:], k))
                process[i, : len(term)] = term.to(torch.float32)
                step_mask[i, : len(term)] = True
        if self.args.process_clip is not None:
            process = process.clamp(-self.args.process_clip, self.args.process_clip)
        if self.args.process_normalize:
            process = normalize_process_terms(process, step_mask)
        process = process * step_mask
        return ProcessTerms(process, step_mask, token_step, steps_list, owners)

    def _rollout_policy(self, frozen: bool):
        """The policy being trained as a rollout `Policy` for `MCStepScorer` (its live weights, or a frozen copy)."""
        from ..generation import HFPolicy

        if is_zero3(self.accelerator):
            raise ValueError(
                "MCStepScorer with policy=None/'frozen' rolls out the trained policy itself, which ZeRO-3 shards "
                "across processes: pass a rollout Policy explicitly (e.g. an HFPolicy or VLLMPolicy of a whole model)"
            )
        model = self.accelerator.unwrap_model(self.model)
        if frozen:
            model = detached_copy(model).requires_grad_(False).eval()
        return HFPolicy(
            model,
            self.processing_class,
            self.pav_step_format,
            name="frozen-copy-of-policy" if frozen else "current-policy",
            temperature=getattr(self.args, "temperature", 1.0) or 1.0,
            max_new_tokens=self.args.max_completion_length,
            max_step_tokens=self.args.max_completion_length,
            batch_size=max(self.args.verifier_batch_size, 1),
        )

    def _score_with_golds(self, inputs, scored, prompts, steps) -> list[list[float]]:
        """Score with a verifier that grades rollouts (`needs_gold`), logging the rollout tokens it spent."""
        column = getattr(self.verifier, "gold_column", "gold")
        if column is None:  # graded by the reward functions, which read whole rows
            return self._score_rollouts(prompts, steps, [inputs[i] for i in scored])
        missing = [i for i in scored if column not in inputs[i]]
        if missing:
            raise ValueError(
                f"{type(self.verifier).__name__} grades rollouts against column {column!r}, which row {missing[0]} "
                f"of the batch lacks (columns: {sorted(inputs[missing[0]])})"
            )
        return self._score_rollouts(prompts, steps, [inputs[i][column] for i in scored])

    def _score_rollouts(self, prompts, steps, golds) -> list[list[float]]:
        from ..modeling import render_prompt

        every = getattr(self.verifier, "refresh_every", None)
        # Prover refresh at each multiple of `every` steps (the first scoring call in it, so no drift where some steps
        # generate nothing): the frozen rollout policy takes the trained policy's current weights.
        if every and self.state.global_step // every > getattr(self, "_prover_refresh_bucket", 0):
            live = self.accelerator.unwrap_model(self.model).state_dict()
            self.verifier.policy.model.load_state_dict(live)
            self._prover_refresh_bucket = self.state.global_step // every
        texts = [render_prompt(self.processing_class, p) for p in prompts]
        before = self.verifier.stats.rollout_tokens if hasattr(self.verifier, "stats") else None
        values = self.verifier.score(texts, steps, golds=golds)
        if before is not None:
            self._pav_spent["rollout"] += int(self.verifier.stats.rollout_tokens - before)
        return values

    def _local_outcomes(self, n: int) -> list[float] | None:
        """This process's completions' outcome rewards (weighted sum of reward functions, clipped to [0, 1])."""
        if self._last_rewards is None:
            return None
        weights = self.reward_weights.to(self._last_rewards.device)
        total = (torch.nan_to_num(self._last_rewards, nan=0.0) * weights).sum(1).clamp(0.0, 1.0)
        start = self.accelerator.process_index * n
        return total[start : start + n].tolist()

    def _log_pav(self, outcome, process, step_mask, mask, steps_list, owners) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather
        device = outcome.device
        per_completion = (process * step_mask).sum(1)  # a completion's total process term
        n_steps = torch.tensor([float(len(s)) for s in steps_list], device=device)
        tokens_in_steps = torch.tensor(
            [float(sum(0 <= h < len(s) for h in row)) for row, s in zip(owners, steps_list)], device=device
        )
        g_outcome, g_proc, g_steps, g_tokens = (
            gather(x.float()) for x in (outcome, per_completion, n_steps, tokens_in_steps)
        )
        metrics = self._metrics[mode]
        metrics["pav/outcome_advantage_abs"].append(g_outcome.abs().mean().item())
        metrics["pav/process_term_per_completion"].append(g_proc.mean().item())
        # Every process joins the gather, also one without a complete step (a collective skipped on some processes
        # hangs or mismatches the next one): the sum and count of its step terms.
        step_sums = gather(torch.stack([process[step_mask].float().sum(), step_mask.sum().float()]).to(device))
        step_total, step_count = step_sums.reshape(-1, 2).sum(0).tolist()
        if step_count > 0:
            metrics["pav/process_term_per_step"].append(step_total / step_count)
        metrics["pav/process_outcome_corr"].append(_corr(g_proc, g_outcome))
        metrics["pav/steps_per_completion"].append(g_steps.mean().item())
        metrics["pav/step_length_tokens"].append((g_tokens.sum() / g_steps.sum().clamp(min=1)).item())
        # Compute the process term cost, per completion over all processes, so that the mean TRL logs over a step's
        # generation calls times the completions per step is the step's total (`GeneratedTokensCallback`). Every
        # process joins: whether a verifier counts rollouts or reads depends on its type, the same everywhere.
        verifier = getattr(self, "verifier", None)
        counts = {
            "rollout": hasattr(getattr(verifier, "stats", None), "rollout_tokens"),
            "verifier": _counts_reads(verifier),
        }
        if any(counts.values()):
            spent = getattr(self, "_pav_spent", {"rollout": 0, "verifier": 0})
            local = [float(spent["rollout"]), float(spent["verifier"]), float(len(outcome))]
            rollout, read, completions = gather(torch.tensor(local, device=device)).reshape(-1, 3).sum(0).tolist()
            for kind, total in (("rollout", rollout), ("verifier", read)):
                if counts[kind]:
                    metrics[f"pav/{kind}_tokens_per_completion"].append(total / max(completions, 1.0))
        if self._last_rewards is not None:
            rewards = torch.nan_to_num(self._last_rewards, nan=0.0).sum(1)
            local = rewards[
                self.accelerator.process_index * len(outcome) : (self.accelerator.process_index + 1) * len(outcome)
            ]
            wrong = gather((local <= 0).float().to(per_completion.device))
            if wrong.sum() > 0:
                metrics["pav/process_term_wrong_answers"].append((g_proc * wrong).sum().item() / wrong.sum().item())
            metrics["pav/process_reward_corr"].append(_corr(g_proc, gather(local.float().to(per_completion.device))))


def detached_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` that computes with its own weights only.

    TRL's trainers patch `model.forward` with a closure over the original model's bound `forward` (its fused
    log-prob head). `copy.deepcopy` copies the method but shares the function and its closure, so the copy's forward
    would still run the original's weights: a "frozen" prover would follow the trained policy. Here every
    instance-level `forward` of the copy gets its closure cells deep-copied with the copy's memo, so a bound method,
    a `functools.partial` (accelerate's hooks) or a module held there maps onto the copy, and the patch keeps working.

    Raises:
        RuntimeError: if a forward of the copy still reaches a module of the original (a reference this cannot
            rebind, e.g. through a global); rolling out such a copy would silently use the live weights.

    Example:
        >>> import types
        >>> def patch(module):  # like TRL's: the new forward closes over the original bound one
        ...     original_forward = module.forward
        ...     module.forward = types.MethodType(lambda self, x: 10 * original_forward(x), module)
        >>> live = torch.nn.Linear(1, 1, bias=False)
        >>> patch(live)
        >>> frozen = detached_copy(live)
        >>> with torch.no_grad():
        ...     _ = live.weight.fill_(2.0), frozen.weight.fill_(1.0)
        >>> frozen(torch.ones(1)).item(), live(torch.ones(1)).item()  # the patch kept, on each model's own weights
        (10.0, 20.0)
    """
    import copy
    import types

    memo: dict = {}
    copied = copy.deepcopy(model, memo)
    for module in copied.modules():
        forward = module.__dict__.get("forward")
        func = getattr(forward, "__func__", None)
        if not isinstance(func, types.FunctionType) or not (
            func.__closure__ or func.__defaults__ or func.__kwdefaults__
        ):
            continue
        cells = tuple(_copied_cell(cell, memo) for cell in func.__closure__)
        defaults = copy.deepcopy(func.__defaults__, memo)
        rebuilt = types.FunctionType(func.__code__, func.__globals__, func.__name__, defaults, cells)
        rebuilt.__kwdefaults__ = copy.deepcopy(func.__kwdefaults__, memo)
        rebuilt.__dict__.update(func.__dict__)  # functools.wraps' __wrapped__ and friends
        module.forward = types.MethodType(rebuilt, forward.__self__)
    originals = {id(m) for m in model.modules()}
    for name, module in copied.named_modules():
        forward = module.__dict__.get("forward")
        if forward is not None and _reaches(forward, originals):
            raise RuntimeError(
                f"detached_copy: the copy's {name or 'root'} forward still reaches the original model (a patch this "
                "cannot rebind); its rollouts would use the live weights. Pass an explicit rollout Policy instead."
            )
    return copied


_EMPTY_CELL = object()


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell whose variable is not assigned yet
        return _EMPTY_CELL


def _copied_cell(cell, memo: dict):
    import copy
    import types

    value = _cell_value(cell)
    return types.CellType() if value is _EMPTY_CELL else types.CellType(copy.deepcopy(value, memo))


def _reaches(obj, originals: set[int], depth: int = 4) -> bool:
    """Whether `obj` (a forward: bound method, function, partial or callable object) refers to one of the `originals`
    modules, through bound selves, closures, defaults, globals it reads, partial arguments or attributes, `depth`
    levels down."""
    import functools
    import types

    if id(obj) in originals:
        return True
    if depth == 0 or isinstance(obj, torch.nn.Module):
        return False
    inner: list = []
    if isinstance(obj, types.MethodType):
        inner = [obj.__self__, obj.__func__]
    elif isinstance(obj, types.FunctionType):
        inner = [_cell_value(cell) for cell in obj.__closure__ or ()]
        inner += [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
        # Globals it reads (a module-level reference to the original cannot be rebound).
        inner += [obj.__globals__[name] for name in obj.__code__.co_names if name in obj.__globals__]
    elif isinstance(obj, functools.partial):
        inner = [obj.func, *obj.args, *obj.keywords.values()]
    elif callable(obj) and hasattr(obj, "__dict__"):
        inner = list(vars(obj).values())
    return any(_reaches(x, originals, depth - 1) for x in inner)


def _counts_reads(verifier) -> bool:
    """Whether a verifier counts the tokens it reads (`PAVVerifier.verifier_tokens`)."""
    return isinstance(getattr(verifier, "verifier_tokens", None), numbers.Integral)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if a.numel() < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (a.std(unbiased=False) * b.std(unbiased=False)))
