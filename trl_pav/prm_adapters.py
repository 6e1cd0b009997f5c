"""Public process reward models as step scorers: the `StepScorer` protocol over the input conventions of published PRMs.

Each adapter renders a trace the way its PRM was trained to read it, runs one forward pass per trace (batched,
right-padded) and returns `[root, p(step 1 good), ..., p(step H good)]`, so it plugs into beam search, best-of-N, the
RL trainers and step-error evaluation wherever a trl_pav verifier does.

What the numbers mean: these models estimate the probability that a step is correct (or, for Math-Shepherd, that a
correct answer is still reachable after it), not `Q^π` of your policy. trl_pav treats them **as `Q` estimates**: the
process advantages computed from them are differences of those probabilities. They have no value for the bare
prompt, so the root is the constant `root_value` (default 1.0: "no mistake yet"), which makes the first step's
advantage `f(q_1) - f(1)`; a constant root leaves beam-search rankings among siblings unchanged.

Conventions (real Hub ids in `docs/guide.md`):

- `QwenMathPRM`: chat template (system, user, assistant), steps joined and terminated with `<extra_0>`, a two-class
  head read at every `<extra_0>` token, `p(good) = softmax(logits)[1]` (Qwen/Qwen2.5-Math-PRM-7B and -72B).
- `MathShepherdPRM`: `question + " " + "Step 1: ... ки\\nStep 2: ... ки"` through a causal LM; at each `ки` token,
  `p(good) = softmax(logits[[+, -]])[0]` (peiyi9979/math-shepherd-mistral-7b-prm).
- `RLHFlowPRM`: a chat in which each step is a user turn (the first prefixed by the question) answered by the
  assistant with `+`; `p(good) = softmax(logits[[+, -]])[0]` at the position that predicts each `+`
  (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, RLHFlow/Llama3.1-8B-PRM-Mistral-Data).
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .steps import StepFormat
from .tokenization import prompt_token_ids

__all__ = [
    "MathShepherdPRM",
    "PublicPRM",
    "QwenMathPRM",
    "RLHFlowPRM",
    "convention_of",
    "load_public_prm",
    "load_step_scorer",
    "question_text",
]

Prompt = str | list[dict[str, str]]
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "trust_remote_code")


class PublicPRM:
    """Base of the public-PRM adapters: batching, padding, length checks and the root value.

    Subclasses implement `_encode(prompt, steps) -> (input_ids, read_positions)` and
    `_step_probs(read_logits) -> (H,)` (the `(H, V)` logits of one trace at its read positions).

    Args:
        model: the PRM (a causal LM, or a model whose output's first element or `.logits` is `(B, T, C)`).
        tokenizer: its tokenizer (fast).
        step_format: how completions are split into steps where the caller has text (RL, `as_reward_func`).
        root_value: value of the bare prompt (the PRM has none); see the module docstring.
        batch_size: traces per forward pass.
        max_length: longest tokenized trace; longer traces raise (never truncated silently).
    """

    default_step_format: ClassVar[StepFormat] = StepFormat.blank_line()
    auto_class: ClassVar[str] = "AutoModelForCausalLM"

    def __init__(
        self,
        model,
        tokenizer,
        step_format: StepFormat | None = None,
        root_value: float = 1.0,
        batch_size: int = 8,
        max_length: int | None = None,
    ):
        if not 0.0 <= root_value <= 1.0:
            raise ValueError(f"{type(self).__name__}: root_value must be in [0, 1], got {root_value}")
        self.model, self.tokenizer = model, tokenizer
        self.step_format = step_format or self.default_step_format
        self.root_value = float(root_value)
        self.batch_size = batch_size
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = max_length or limit or 4096
        self.verifier_tokens = 0  # tokens read, for the search compute ledger

    # ---- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, **kwargs: Any) -> PublicPRM:
        """Load the PRM and its tokenizer from a folder or Hub id.

        Hub keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`, `trust_remote_code`) go to
        model and tokenizer; `step_format`, `root_value`, `batch_size`, `max_length` and the adapter's own options go
        to the adapter; the rest (`dtype`, `device_map`, `quantization_config`, ...) to the model.
        """
        import inspect

        import transformers

        hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "tokenizer"}
        adapter = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        config = transformers.AutoConfig.from_pretrained(str(model_name_or_path), **hub)
        auto = getattr(transformers, cls.auto_class)
        if any(a.endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or []):
            auto = transformers.AutoModelForTokenClassification
        model = auto.from_pretrained(str(model_name_or_path), **hub, **kwargs)
        model.eval()
        return cls(model, _load_prm_tokenizer(model_name_or_path, hub), **adapter)

    # ---- scoring --------------------------------------------------------------------------------------------------
    def _encode(self, prompt: Prompt, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        raise NotImplementedError

    def _step_probs(self, read_logits: torch.Tensor) -> torch.Tensor:
        """`(H,)` probabilities that each step is good, from the `(H, V)` logits at its read position."""
        raise NotImplementedError

    def markers(self) -> list[str]:
        """The text the adapter writes to mark where steps end (none: its read positions come from the layout)."""
        return []

    def _escaped(self, text: str) -> str:
        # Model output may contain a marker's text ("ки" in Russian); a zero-width space after its first character
        # keeps the text readable and stops it from becoming a read position.
        for marker in self.markers():
            text = text.replace(marker, marker[0] + "\u200b" + marker[1:])
        return text

    def _checked(self, prompt: Prompt, steps: Sequence[str], where: str) -> tuple[list[int], list[int]]:
        for h, step in enumerate(steps):
            if not isinstance(step, str) or not step.strip():
                raise ValueError(f"{where}, step {h}: a step must be a non-empty string, got {step!r}")
        if self.markers():
            steps = [self._escaped(step) for step in steps]
            if isinstance(prompt, str):
                prompt = self._escaped(prompt)
            elif isinstance(prompt, list):
                prompt = [
                    {**m, "content": self._escaped(m["content"])}
                    if isinstance(m, dict) and isinstance(m.get("content"), str)
                    else m
                    for m in prompt
                ]
        ids, positions = self._encode(prompt, list(steps))
        if len(positions) != len(steps):
            raise ValueError(
                f"{where}: found {len(positions)} step markers for {len(steps)} steps (does a step or the prompt "
                f"contain the {type(self).__name__} step marker?)"
            )
        if len(ids) > self.max_length:
            raise ValueError(
                f"{where}: {len(ids)} tokens exceed max_length {self.max_length}; traces are never truncated silently"
            )
        return ids, positions

    def trace_tokens(self, prompt: Prompt, steps: Sequence[str]) -> int:
        """Tokens that scoring this trace reads (what `verifier_tokens` counts for it; 0 without steps)."""
        return len(self._checked(prompt, steps, "trace")[0]) if len(steps) else 0

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """`[root_value, p(step 1 good), ...]` for every trace (the `StepScorer` protocol)."""
        if len(prompts) != len(steps):
            raise ValueError(f"score: {len(prompts)} prompts but {len(steps)} step lists")
        out: list[list[float]] = [[self.root_value] for _ in prompts]
        todo = [i for i, s in enumerate(steps) if len(s)]
        encoded = {i: self._checked(prompts[i], steps[i], f"trace {i}") for i in todo}
        todo.sort(key=lambda i: len(encoded[i][0]))  # similar lengths share a batch: less padding
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                reads = self._read_logits([encoded[i][0] for i in chunk], [encoded[i][1] for i in chunk])
                for i, read in zip(chunk, reads):
                    out[i] += self._step_probs(read).tolist()
        finally:
            self.model.train(was_training)
        return out

    def _read_logits(self, ids_list: list[list[int]], positions_list: list[list[int]]) -> list[torch.Tensor]:
        """`(H_b, V)` float logits at each trace's read positions, from one right-padded forward pass (causal
        models: padding never changes real positions). Causal LMs compute vocabulary logits only at the batch's read
        positions (`logits_to_keep`): the full `(B, T, V)` logits of a 128k vocabulary would not fit in memory."""
        import inspect

        device = next(self.model.parameters()).device
        width = max(len(x) for x in ids_list)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids_list], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids_list], device=device)
        self.verifier_tokens += int(mask.sum())
        kwargs: dict[str, Any] = {}
        where = {p: p for ps in positions_list for p in ps}
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            keep = sorted(where)
            where = {p: k for k, p in enumerate(keep)}
            kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
        output = self.model(input_ids=ids, attention_mask=mask, **kwargs)
        logits = output.logits if hasattr(output, "logits") else output[0]
        return [logits[b, [where[p] for p in ps]].float() for b, ps in enumerate(positions_list)]

    def as_reward_func(self, mode: str = "final", alpha: float = 0.5, prover_k: float = 1.0):
        """This scorer as a TRL `reward_funcs` entry (see `trl_pav.reward_funcs.scorer_reward_func`)."""
        from .reward_funcs import scorer_reward_func

        return scorer_reward_func(self, mode=mode, alpha=alpha, prover_k=prover_k, step_format=self.step_format)


def _load_prm_tokenizer(model_name_or_path: str | os.PathLike, hub: dict[str, Any]):
    """The serialized fast tokenizer (`tokenizer.json`) when there is one, so the architecture cannot rebuild it as its
    default class (see `load_tokenizer`); else whatever `AutoTokenizer` builds."""
    from transformers import AutoTokenizer
    from transformers.utils import cached_file

    from .tokenization import load_tokenizer

    lookup = {k: v for k, v in hub.items() if k != "trust_remote_code"}
    found = cached_file(
        str(model_name_or_path),
        "tokenizer.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **lookup,
    )
    if found is not None:
        return load_tokenizer(model_name_or_path, **lookup)
    return AutoTokenizer.from_pretrained(str(model_name_or_path), **hub)


def _check_messages(prompt: Prompt, who: str) -> list[dict[str, str]]:
    """`prompt` as a list of `{"role", "content"}` messages (a TRL conversational prompt), checked."""
    if isinstance(prompt, dict) or not isinstance(prompt, Sequence) or not prompt:
        raise TypeError(f"{who}: a prompt must be a string or a non-empty list of chat messages, got {prompt!r:.80}")
    for k, message in enumerate(prompt):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise TypeError(f"{who}: prompt message {k} must be a dict with a 'role', got {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise TypeError(
                f"{who}: prompt message {k} ({message['role']}) must have string 'content', got "
                f"{message.get('content')!r:.80}"
            )
    return [dict(m) for m in prompt]


def question_text(prompt: Prompt, who: str = "prompt") -> str:
    """The question of a prompt for PRMs that read plain text: a string as is, the content of the last user message
    of a chat prompt (what RL with a chat template and conversational datasets pass).

    Raises:
        TypeError: if `prompt` is neither a string nor a list of `{"role", "content"}` messages.
        ValueError: if a chat prompt has no user message.

    Example:
        >>> question_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}])
        '1+1?'
    """
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in _check_messages(prompt, who) if m["role"] == "user"]
    if not users:
        raise ValueError(
            f"{who}: a chat prompt needs a user message (the question), got roles {[m['role'] for m in prompt]}"
        )
    return users[-1]


def _token_id(tokenizer, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"the tokenizer encodes the {what} {text!r} to no token")
    return ids[-1]


class QwenMathPRM(PublicPRM):
    """Qwen2.5-Math-PRM convention: steps joined and terminated by `<extra_0>`, a two-class head read there.

    Load the real models with `QwenMathPRM.from_pretrained("Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True,
    dtype=torch.bfloat16)`.

    Args:
        system_prompt: system turn put before a prompt that has none (Qwen's default for math): a plain string and
            a chat prompt of one user message read the same.
        step_token: the separator token.
        (others: see `PublicPRM`)

    Example:
        >>> from trl_pav.testing import tiny_public_prm
        >>> prm = QwenMathPRM(*tiny_public_prm("qwen-prm"))
        >>> [len(v) for v in prm.score(["1+1?"], [["1+1=2", "#### 2"]])]
        [3]
    """

    auto_class: ClassVar[str] = "AutoModel"
    default_step_format: ClassVar[StepFormat] = StepFormat.blank_line()

    def __init__(
        self,
        model,
        tokenizer,
        step_format: StepFormat | None = None,
        root_value: float = 1.0,
        batch_size: int = 8,
        max_length: int | None = None,
        system_prompt: str = "Please reason step by step, and put your final answer within \\boxed{}.",
        step_token: str = "<extra_0>",
    ):
        super().__init__(model, tokenizer, step_format, root_value, batch_size, max_length)
        self.system_prompt, self.step_token = system_prompt, step_token
        self.step_token_id = _token_id(tokenizer, step_token, "step token")
        if tokenizer.chat_template is None:
            raise ValueError("QwenMathPRM needs a tokenizer with a chat template (Qwen's)")

    def _encode(self, prompt: Prompt, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = _check_messages(prompt, "QwenMathPRM")
        if messages[0]["role"] != "system":  # the PRM was trained with its system turn; a chat prompt may bring its own
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        answer = self.step_token.join(steps) + self.step_token
        text = self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
        # The model card encodes with special tokens (Qwen's add none); a template that writes BOS gets no second.
        ids = prompt_token_ids(self.tokenizer, text)
        return ids, [t for t, i in enumerate(ids) if i == self.step_token_id]

    def markers(self) -> list[str]:
        return [self.step_token]

    def _step_probs(self, read_logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(read_logits[:, :2], dim=-1)[:, 1]


class MathShepherdPRM(PublicPRM):
    """Math-Shepherd convention: `question + " " + "Step 1: ... ки\\nStep 2: ... ки"`, `+`/`-` logits at each `ки`.

    Load the real model with `MathShepherdPRM.from_pretrained("peiyi9979/math-shepherd-mistral-7b-prm")`.

    Args:
        step_tag: the tag ending each step.
        good_token, bad_token: the tokens whose logits are compared at each tag.
        number_steps: prefix `Step h: ` to steps that do not start with `Step <n>:` (the training data's layout).
        (others: see `PublicPRM`)

    Example:
        >>> from trl_pav.testing import tiny_public_prm
        >>> prm = MathShepherdPRM(*tiny_public_prm("math-shepherd"))
        >>> prm.render("What is 1+1?", ["1+1=2", "Step 2: The answer is 2"])
        'What is 1+1? Step 1: 1+1=2 ки\\nStep 2: The answer is 2 ки'
        >>> [len(v) for v in prm.score(["What is 1+1?"], [["1+1=2", "The answer is 2"]])]
        [3]
    """

    default_step_format: ClassVar[StepFormat] = StepFormat.newline()
    _numbered = re.compile(r"^Step \d+\s*:")

    def __init__(
        self,
        model,
        tokenizer,
        step_format: StepFormat | None = None,
        root_value: float = 1.0,
        batch_size: int = 8,
        max_length: int | None = None,
        step_tag: str = "ки",
        good_token: str = "+",
        bad_token: str = "-",
        number_steps: bool = True,
    ):
        super().__init__(model, tokenizer, step_format, root_value, batch_size, max_length)
        self.step_tag, self.number_steps = step_tag, number_steps
        self.step_tag_id = _token_id(tokenizer, step_tag, "step tag")
        self.candidate_ids = [
            _token_id(tokenizer, good_token, "good token"),
            _token_id(tokenizer, bad_token, "bad token"),
        ]

    def render(self, prompt: Prompt, steps: Sequence[str]) -> str:
        """The PRM's input text (a chat prompt contributes its last user message, the question)."""
        prompt = question_text(prompt, "MathShepherdPRM")
        lines = []
        for h, step in enumerate(steps):
            step = step.strip()
            if self.number_steps and not self._numbered.match(step):
                step = f"Step {h + 1}: {step}"
            lines.append(f"{step} {self.step_tag}")
        return f"{prompt} " + "\n".join(lines)

    def markers(self) -> list[str]:
        return [self.step_tag]

    def _encode(self, prompt: Prompt, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = prompt_token_ids(self.tokenizer, self.render(prompt, steps))  # with BOS, as the model card encodes
        return ids, [t for t, i in enumerate(ids) if i == self.step_tag_id]

    def _step_probs(self, read_logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(read_logits[:, self.candidate_ids], dim=-1)[:, 0]


class RLHFlowPRM(PublicPRM):
    """RLHFlow convention: each step is a user turn answered by the assistant with `+`; read `+`/`-` where the
    assistant's answer is predicted (the first step's turn starts with the question).

    Load the real models with `RLHFlowPRM.from_pretrained("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")`.

    Args:
        good_token, bad_token: the assistant's answers compared at each step.
        (others: see `PublicPRM`)

    Example:
        >>> from trl_pav.testing import tiny_public_prm
        >>> prm = RLHFlowPRM(*tiny_public_prm("rlhflow"))
        >>> [len(v) for v in prm.score(["1+1?"], [["1+1=2", "#### 2"]])]
        [3]
    """

    default_step_format: ClassVar[StepFormat] = StepFormat.blank_line()

    def __init__(
        self,
        model,
        tokenizer,
        step_format: StepFormat | None = None,
        root_value: float = 1.0,
        batch_size: int = 8,
        max_length: int | None = None,
        good_token: str = "+",
        bad_token: str = "-",
    ):
        super().__init__(model, tokenizer, step_format, root_value, batch_size, max_length)
        if tokenizer.chat_template is None:
            raise ValueError("RLHFlowPRM needs a tokenizer with a chat template")
        self.good_token = good_token
        self.candidate_ids = [
            _token_id(tokenizer, good_token, "good token"),
            _token_id(tokenizer, bad_token, "bad token"),
        ]

    def conversation(self, prompt: Prompt, steps: Sequence[str]) -> list[dict[str, str]]:
        """The chat the PRM reads: (question + step 1, +), (step 2, +), ...; a chat prompt contributes its last user
        message (the question)."""
        prompt = question_text(prompt, "RLHFlowPRM")
        turns = []
        for h, step in enumerate(steps):
            turns.append({"role": "user", "content": f"{prompt} {step}" if h == 0 else step})
            turns.append({"role": "assistant", "content": self.good_token})
        return turns

    def _encode(self, prompt: Prompt, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        turns = self.conversation(prompt, steps)
        render = self.tokenizer.apply_chat_template
        text = render(turns, tokenize=False)
        # Where each assistant answer starts: the end of the chat so far with a generation prompt.
        answer_chars = []
        for h in range(len(steps)):
            head = render(turns[: 2 * h + 1], tokenize=False, add_generation_prompt=True)
            if not text.startswith(head) or not text.startswith(self.good_token, len(head)):
                raise ValueError(
                    f"RLHFlowPRM: the chat template does not render step {h}'s answer right after its prompt; "
                    "this template cannot be read this way"
                )
            answer_chars.append(len(head))
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        real = [(s, t) for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s]
        real_starts = [s for s, _ in real]
        positions = []
        for c in answer_chars:
            k = bisect_right(real_starts, c) - 1  # the last real token starting at or before the answer
            if k < 0 or real[k][1] == 0:
                raise ValueError(f"RLHFlowPRM: no token before the answer at character {c}")
            positions.append(real[k][1] - 1)  # the position that predicts the answer token
        return enc["input_ids"], positions

    def _step_probs(self, read_logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(read_logits[:, self.candidate_ids], dim=-1)[:, 0]


PRM_ADAPTERS: dict[str, type[PublicPRM]] = {
    "qwen-prm": QwenMathPRM,
    "math-shepherd": MathShepherdPRM,
    "rlhflow": RLHFlowPRM,
}


# Name fragments of the published checkpoints (lower case) and their conventions.
_NAME_HINTS = (("math-prm", "qwen-prm"), ("math-shepherd", "math-shepherd"), ("rlhflow", "rlhflow"))


def convention_of(model_name_or_path: str | os.PathLike) -> str | None:
    """The convention of a published PRM read from its Hub id or folder name, None when the name does not say.

    Example:
        >>> convention_of("Qwen/Qwen2.5-Math-PRM-7B"), convention_of("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")
        ('qwen-prm', 'rlhflow')
        >>> convention_of("outputs/my-prm") is None
        True
    """
    name = str(model_name_or_path).lower()
    return next((convention for hint, convention in _NAME_HINTS if hint in name), None)


def load_public_prm(convention: str, model_name_or_path: str | os.PathLike, **kwargs: Any) -> PublicPRM:
    """Load a public PRM by convention name (`"qwen-prm"`, `"math-shepherd"`, `"rlhflow"`) from a folder or Hub id.

    Raises:
        ValueError: for an unknown convention.
    """
    if convention not in PRM_ADAPTERS:
        raise ValueError(f"unknown PRM convention {convention!r}; choose one of {sorted(PRM_ADAPTERS)}")
    return PRM_ADAPTERS[convention].from_pretrained(model_name_or_path, **kwargs)


def load_step_scorer(model_name_or_path: str | os.PathLike, scorer_type: str = "pav", **kwargs: Any):
    """A step scorer from a folder or Hub id: a trl_pav verifier (`"pav"`) or a public PRM (`"qwen-prm"`,
    `"math-shepherd"`, `"rlhflow"`); keyword arguments go to its `from_pretrained`.

    Raises:
        ValueError: for an unknown `scorer_type`.
    """
    if scorer_type == "pav":
        from .modeling import PAVVerifier

        return PAVVerifier.from_pretrained(model_name_or_path, **kwargs)
    if scorer_type not in PRM_ADAPTERS:
        raise ValueError(f"unknown scorer type {scorer_type!r}; choose 'pav' or one of {sorted(PRM_ADAPTERS)}")
    return load_public_prm(scorer_type, model_name_or_path, **kwargs)
