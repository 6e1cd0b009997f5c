"""How text becomes reasoning steps and back: the one step contract shared by labeling, verifiers, search and RL.

A completion is a string; its *steps* are the pieces between occurrences of a separator. Everything that needs a step
boundary as a token position derives it from the step's character offsets through a fast tokenizer's offset mapping
(`token_positions`), so a verifier with a different tokenizer from the policy still scores the same steps.

Rule for empty and whitespace-only pieces: they are not steps. `split` drops them; `spans` reports only the kept
pieces. A text is *canonical* when it has no such pieces, and then `join(split(text)) == text`. `join` accepts a list
of steps only if `split(join(steps)) == steps`: no step is whitespace-only, contains the separator, or starts or ends
with part of it in a way that moves a boundary (`"x\\n"` before a blank-line separator); other lists raise.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["StepFormat", "TokenizedTrace", "parse_separator", "token_positions", "tokenize_trace"]


@dataclass(frozen=True)
class StepFormat:
    """Splits completions into steps and joins them back.

    Args:
        separator (`str`, defaults to `"\\n"`):
            Text between consecutive steps. The paper uses a newline; many datasets use a blank line (`"\\n\\n"`).

    Example:
        >>> from trl_pav import StepFormat
        >>> fmt = StepFormat()
        >>> fmt.split("29*14=406\\n25-406=-381\\nA:-381")
        ['29*14=406', '25-406=-381', 'A:-381']
        >>> fmt.spans("29*14=406\\n25-406=-381")
        [(0, 9), (10, 21)]
        >>> StepFormat.blank_line().join(["x = 2", "y = 3"])
        'x = 2\\n\\ny = 3'
    """

    separator: str = "\n"

    def __post_init__(self) -> None:
        if not isinstance(self.separator, str) or self.separator == "":
            raise ValueError(f"StepFormat.separator must be a non-empty string, got {self.separator!r}")

    @classmethod
    def newline(cls) -> StepFormat:
        """One step per line (the paper's format)."""
        return cls("\n")

    @classmethod
    def blank_line(cls) -> StepFormat:
        """Steps separated by an empty line (common in MATH-style datasets)."""
        return cls("\n\n")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans `(start, end)` (end exclusive) of the steps of `text`, skipping whitespace-only pieces."""
        if not isinstance(text, str):
            raise TypeError(f"StepFormat.spans expects a string, got {type(text).__name__}")
        out: list[tuple[int, int]] = []
        start = 0
        sep, n = self.separator, len(self.separator)
        while True:
            stop = text.find(sep, start)
            end = len(text) if stop == -1 else stop
            if text[start:end].strip():
                out.append((start, end))
            if stop == -1:
                return out
            start = stop + n

    def complete_spans(self, text: str, finished: bool = False) -> list[tuple[int, int]]:
        """Spans of the steps of `text` that are known to be complete: followed by a separator, or all of them when
        the text is finished (no more text will follow).

        Example:
            >>> StepFormat(";").complete_spans("1+1=2;2+2=")
            [(0, 5)]
        """
        return [(s, e) for s, e in self.spans(text) if finished or text.startswith(self.separator, e)]

    def split(self, text: str) -> list[str]:
        """The steps of `text`, in order (whitespace-only pieces dropped)."""
        return [text[s:e] for s, e in self.spans(text)]

    def join(self, steps: Sequence[str]) -> str:
        """Join steps with the separator. Raises if the result would not split back into the same steps."""
        self.check_steps(steps)
        return self.separator.join(steps)

    def check_step(self, step: str, where: str = "step") -> None:
        """Raise `ValueError` if `step` is not a valid single step under this format."""
        if not isinstance(step, str):
            raise TypeError(f"{where}: a step must be a string, got {type(step).__name__}")
        if not step.strip():
            raise ValueError(f"{where}: a step must not be empty or whitespace-only, got {step!r}")
        if self.separator in step:
            raise ValueError(f"{where}: a step must not contain the separator {self.separator!r}, got {step!r}")

    def check_steps(self, steps: Sequence[str]) -> None:
        """Raise `ValueError` unless `split(separator.join(steps)) == steps`, naming the first offending step."""
        for i, step in enumerate(steps):
            self.check_step(step, where=f"step {i}")
        text = self.separator.join(steps)
        back = self.split(text)
        if back != list(steps):
            # A step that starts or ends with part of the separator moves the boundary when joined.
            i = next((j for j, (a, b) in enumerate(zip(back, steps)) if a != b), min(len(back), len(steps)))
            raise ValueError(
                f"step {i} ({steps[min(i, len(steps) - 1)]!r}) would not split back out of the joined text: "
                f"it starts or ends with part of the separator {self.separator!r}"
            )

    def cut_step(self, text: str) -> str | None:
        """`text` (a step cut at a token limit) as a step that joins back: any trailing part of the separator
        removed (`"x\\n"` before a blank-line separator would move the boundary), None if nothing is left.

        Example:
            >>> StepFormat.blank_line().cut_step("We have x\\n")
            'We have x'
            >>> StepFormat.blank_line().cut_step("\\n") is None
            True
        """
        sep = self.separator
        step = text.split(sep, 1)[0]  # a whole separator ends the step
        for k in range(len(sep) - 1, 0, -1):
            if step.endswith(sep[:k]):
                step = step[:-k]
                break
        return step if step.strip() else None

    def step_ends(self, steps: Sequence[str], offset: int = 0) -> list[int]:
        """Exclusive character end of each step inside `offset + join(steps)`."""
        ends, pos = [], offset
        for i, step in enumerate(steps):
            pos += len(step)
            ends.append(pos)
            if i + 1 < len(steps):
                pos += len(self.separator)
        return ends

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for storing inside a model config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StepFormat:
        """Inverse of `to_dict`; `None` gives the default format."""
        if data is None:
            return cls()
        unknown = set(data) - {"separator"}
        if unknown:
            raise ValueError(f"StepFormat.from_dict: unknown keys {sorted(unknown)}")
        return cls(**data)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def parse_separator(text: str) -> str:
    """A separator as typed on a command line or in single-quoted YAML: the escapes `\\n`, `\\t`, `\\r` and `\\\\`
    become the characters they name (`--separator '\\n\\n'` is a blank line); other text is kept as is.

    Raises:
        ValueError: if the separator is empty (or not a string).

    Example:
        >>> parse_separator("\\\\n\\\\n") == "\\n\\n", parse_separator("\\n") == "\\n", parse_separator(";")
        (True, True, ';')
    """
    if not isinstance(text, str) or text == "":
        raise ValueError(f"separator must be a non-empty string, got {text!r}")
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def token_positions(offsets: Sequence[tuple[int, int]], char_ends: Sequence[int]) -> list[int]:
    """Token index that holds the last character before each character end.

    For a step spanning characters `[start, end)`, the result is the token that contains character `end - 1`. Where no
    token covers that character (tokenizers that trim whitespace from offsets), it is the last token that starts before
    `end`. Special tokens (empty offsets such as `(0, 0)`) are never chosen.

    Args:
        offsets: `(T,)` pairs `(start, end)` from a fast tokenizer's `return_offsets_mapping=True`, in token order.
        char_ends: `(H,)` exclusive character ends, each at least 1.

    Returns:
        `(H,)` token indices.

    Raises:
        ValueError: if a character end lies before the first real token (it cannot be located).

    Example:
        >>> token_positions([(0, 0), (0, 2), (2, 3), (3, 6)], [3, 6])
        [2, 3]
    """
    real = [(s, i) for i, (s, e) in enumerate(offsets) if e > s]
    starts = [s for s, _ in real]
    out = []
    for end in char_ends:
        # Offsets are in text order, so the last real token starting before `end` holds character `end - 1`.
        k = bisect_left(starts, end) - 1
        if k < 0:
            raise ValueError(f"character end {end} lies before every token (first token starts at {starts[:1]})")
        out.append(real[k][1])
    return out


@dataclass(frozen=True)
class TokenizedTrace:
    """A prompt and its steps tokenized segment by segment.

    Attributes:
        input_ids: `(T,)` token ids of prompt, step 1, separator + step 2, ...
        positions: `(H+1,)` index of the prompt's last token (the root), then of each step's last token.
    """

    input_ids: list[int]
    positions: list[int]


def tokenize_trace(tokenizer, prompt: str, steps: Sequence[str], step_format: StepFormat) -> TokenizedTrace:
    """Tokenize `prompt + join(steps)` one segment at a time: the prompt, step 1, then separator + step h.

    Tokenizing segments separately means no token ever straddles a step boundary, so the tokens of a prefix of the
    steps are exactly a prefix of the tokens of the whole trace: scoring a whole trace in one forward gives the same
    values as scoring every prefix on its own. Each position comes from the segment's offset mapping through
    `token_positions` (the token holding the segment's last character).

    Args:
        tokenizer: a fast tokenizer (it must return offset mappings).
        prompt: the rendered prompt text (apply a chat template first for chat prompts); must not be empty.
        steps: the steps, each valid under `step_format`.
        step_format: how steps are separated.

    Returns:
        A `TokenizedTrace`; the prompt is encoded with the tokenizer's special tokens (BOS), steps without.

    Example:
        >>> from trl_pav.testing import char_tokenizer
        >>> t = tokenize_trace(char_tokenizer(), "Q:", ["1+1=2", "A:2"], StepFormat())
        >>> t.positions, len(t.input_ids)
        ([2, 7, 11], 12)
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"tokenize_trace: prompt must be a non-empty string, got {prompt!r:.60}")
    step_format.check_steps(steps)
    ids: list[int] = []
    positions: list[int] = []
    segments = [(step_format.separator if h else "") + step for h, step in enumerate(steps)]
    encodings = [tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)]
    if segments:  # one batched call for all steps
        batch = tokenizer(segments, add_special_tokens=False, return_offsets_mapping=True)
        encodings += [
            {"input_ids": i, "offset_mapping": o} for i, o in zip(batch["input_ids"], batch["offset_mapping"])
        ]
    for h, (segment, enc) in enumerate(zip([prompt, *segments], encodings)):
        if not enc["input_ids"]:
            raise ValueError(f"tokenize_trace: segment {h} ({segment!r:.40}) produced no tokens")
        (pos,) = token_positions(enc["offset_mapping"], [len(segment)])
        positions.append(len(ids) + pos)
        ids.extend(enc["input_ids"])
    return TokenizedTrace(input_ids=ids, positions=positions)
