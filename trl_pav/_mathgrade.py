"""Answer extraction and math-verify grading with no package imports, so it also runs as a grading worker process.

`trl_pav.grading` imports the functions from here. Run as a script (`python _mathgrade.py READ_FD WRITE_FD`), it is
the worker that `MathVerifyGrader` sends grading jobs to: starting it imports math-verify only (not torch), and the
parent can kill it when a job overruns its time limit, which no thread can do to sympy stuck in C code.

Protocol: the parent sends `(settings, [(completion, gold), ...])`; the worker answers one float per pair, in order,
as soon as each is graded (so the parent times every pair on its own).
"""

from __future__ import annotations

import logging
import re

# math-verify logs a warning on every call once its signal-based timeouts are disabled; we disable them on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# Possessive quantifiers: the whitespace runs cannot trade characters with each other, so a long run of whitespace
# after "answer" costs linear time (the former `\s*(?:is)?\s*[:=]?\s*` backtracked cubically: 34 s on 2,000 newlines).
DEFAULT_ANSWER_PATTERN = r"(?i)answer\s*+(?:is\s*+)?[:=]?\s*+\$?([^\n$]+)"
_HASH = re.compile(r"####\s*+([^\n]+)")
_BOXED_SPACE = re.compile(r"\s+([^\s$]+)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A `####` line is GSM8K's answer line, unless it is a markdown heading: words, then more text below it.
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")
_UNCLOSED = object()  # `_boxed_content`: a brace that never closes (before `stop`)


def _boxed_content(text: str, end: int, stop: int):
    """The argument of the box command ending at `end`: `{...}` with nested braces balanced (whitespace before the
    brace allowed), or the `\boxed 5` form; `None` if neither, `_UNCLOSED` if the brace does not close before
    `stop`."""
    i = end
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        m = _BOXED_SPACE.match(text, end)
        return m.group(1) if m else None
    depth = 0
    for j in range(i, stop):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return _UNCLOSED


def extract_boxed(text: str) -> str | None:
    r"""Content of the last non-empty `\boxed{...}` (or `\fbox{...}`) in `text`, with nested braces balanced;
    `None` if absent. An empty box (an echoed instruction: "put the answer in \boxed{}") or one whose braces never
    close gives way to the box before it.

    Example:
        >>> extract_boxed(r"so $x = \boxed{\frac{1}{2}}$.")
        '\\frac{1}{2}'
        >>> extract_boxed(r"\boxed{5}. Put the final answer in \boxed{}.")
        '5'
    """
    stop = len(text)
    for m in reversed(list(_BOXED.finditer(text))):
        content = _boxed_content(text, m.end(), stop)
        if content is _UNCLOSED:
            # Its brace never closes, so an earlier box still open when it starts cannot close either: every scan
            # stops here (linear time on a text of many unclosed boxes).
            stop = m.start()
        elif content is not None and content.strip():
            return content
    return None


def _is_heading(content: str, rest: str) -> bool:
    """Whether a `####` line is a markdown heading, not an answer line: more text follows it, and it reads as words
    (a word of three or more letters outside LaTeX commands, and no digit)."""
    if not rest.strip():
        return False
    return bool(_WORD.search(_LATEX_COMMAND.sub("", content))) and not any(c.isdigit() for c in content)


def extract_answer(text: str, answer_pattern: re.Pattern[str] | None = None) -> str | None:
    r"""The final answer of a completion: the last `\boxed{}`, else the last `#### n` line that is not a markdown
    heading (`#### Verification` with more text below it), else `answer_pattern`'s group 1, else the last `####`
    line whatever it says.

    Example:
        >>> extract_answer("2+2=4\n#### 4")
        '4'
        >>> extract_answer("The answer is 5.\n#### Verification\nok", re.compile(DEFAULT_ANSWER_PATTERN))
        '5.'
        >>> extract_answer("So the answer is yes.\n#### no", re.compile(DEFAULT_ANSWER_PATTERN))
        'no'
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    hashes = list(_HASH.finditer(text))
    for m in reversed(hashes):
        if not _is_heading(m.group(1), text[m.end() :]):
            return m.group(1).strip()
    if answer_pattern is not None:
        found = answer_pattern.findall(text)
        if found:
            last = found[-1]
            return (last[0] if isinstance(last, tuple) else last).strip()
    return hashes[-1].group(1).strip() if hashes else None


def _parse(text: str) -> list:
    from math_verify import parse

    return parse(f"${text}$", parsing_timeout=None)


_GOLD_CACHE: dict[str, list] = {}
_GOLD_CACHE_SIZE = 4096


def _parse_gold(gold: str) -> list:
    # The same gold answer is graded against many completions (every rollout of a problem): parse it once.
    parsed = _GOLD_CACHE.get(gold)
    if parsed is None:
        parsed = _parse(gold)
        if len(_GOLD_CACHE) >= _GOLD_CACHE_SIZE:
            _GOLD_CACHE.pop(next(iter(_GOLD_CACHE)))
        _GOLD_CACHE[gold] = parsed
    return parsed


def math_verify_grade(
    completion: str, gold: str, answer_pattern: str, float_rounding: int, max_answer_chars: int | None
) -> float:
    """1.0 if the completion's final answer equals `gold` under math-verify, else 0.0; never raises, no time bound.

    An extracted answer longer than `max_answer_chars` grades 0 without being parsed.
    """
    if not isinstance(completion, str) or not isinstance(gold, str):
        return 0.0
    answer = extract_answer(completion, re.compile(answer_pattern))
    if answer is None or not answer.strip():
        return 0.0
    if max_answer_chars is not None and len(answer) > max_answer_chars:
        return 0.0
    try:
        from math_verify import verify

        target = _parse(answer)
        reference = _parse_gold(gold)
        if not target or not reference:
            return 0.0
        ok = verify(reference, target, float_rounding=float_rounding, timeout_seconds=None)
    except BaseException as err:  # math-verify fails in many ways on garbage (RecursionError included): grade 0.
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return 0.0
    return 1.0 if ok else 0.0


def _serve(read_fd: int, write_fd: int) -> None:
    import sys
    from multiprocessing.connection import Connection

    sys.setrecursionlimit(10_000)  # deep but legitimate expressions; a crash only costs this worker
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    # Warm up before saying ready: the first parse loads the LaTeX grammar, which must not count against a job.
    math_verify_grade(r"\boxed{\frac{1}{2}}", "0.5", DEFAULT_ANSWER_PATTERN, 6, None)
    outbox.send("ready")
    while True:
        try:
            settings, pairs = inbox.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        for completion, gold in pairs:
            outbox.send(math_verify_grade(completion, gold, *settings))


if __name__ == "__main__":
    import sys

    _serve(int(sys.argv[1]), int(sys.argv[2]))
