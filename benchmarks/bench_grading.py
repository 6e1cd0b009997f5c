"""Grading under a time bound: worst case on adversarial answers, and the cost of the bound on ordinary ones.

(1) Adversarial completions (the issue's list: 2,000 newlines after "answer", power towers, 5,000 nested braces,
    3,000 nested parentheses, an integral of `sin(x^{100})`, `2^{2^{30}}`, a 5,001-term sum): seconds per call of the
    bounded `MathVerifyGrader()` (default `timeout_seconds=2.0`), worst case reported. The unbounded grader is not run
    on them (it does not finish).
(2) Ordinary answers: `--n` distinct completions built from MATH-500 solutions (the boxed answer, `#### n` and prose
    forms, right and wrong gold answers), graded by the bounded grader (one `grade` call each, and `grade_batch`) and
    by the named baseline, the unbounded in-process grader `MathVerifyGrader(timeout_seconds=None)`: the same
    extraction and math-verify calls with no worker. The two are interleaved over `--reps` repetitions after a
    warm-up (in chunks of 100 answers, so that a shared machine's load weighs on all alike); each repetition uses
    fresh grader objects, so no answer is served from a cache.
Final line: {"benchmark": "grading", "worst_case_seconds": ..., "ratio_per_call": ..., "ratio_batch": ...} where a
ratio is bounded time / baseline time (median over repetitions, with min and max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import ROOT, emit

from trl_pav import MathVerifyGrader

MATH500 = ROOT.parent / "shared" / "data" / "math500_test.jsonl"
CHUNK = 100  # answers per interleaved chunk


def adversarial() -> dict[str, tuple[str, str]]:
    return {
        "answer_then_2000_newlines": ("The answer" + "\n" * 2000 + "x", "1"),
        "tower_10^10^10": (r"\boxed{10^{10^{10}}}", "1"),
        "tower_9^9^9^9": (r"\boxed{9^{9^{9^{9}}}}", "1"),
        "nested_braces_5000": (r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1"),
        "nested_parens_3000": (r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}", "1"),
        "integral_sin_x100": (r"\boxed{\int_0^1 \sin(x^{100})\,dx}", "1"),
        "2^2^30": (r"\boxed{2^{2^{30}}}", "1"),
        "sum_of_5001_ones": (r"\boxed{" + "+".join(["1"] * 5001) + "}", "5001"),
    }


def ordinary(n: int) -> tuple[list[str], list[str]]:
    """`n` distinct (completion, gold) pairs from MATH-500: the solution itself and rewritten endings."""
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()]
    completions, golds = [], []
    k = 0
    while len(completions) < n:
        row, other = rows[k % len(rows)], rows[(k + 7) % len(rows)]
        attempt = k // len(rows)
        body = f"Attempt {k}.\n{row['solution']}"
        form = attempt % 4
        if form == 0:
            text = body
        elif form == 1:
            text = f"Attempt {k}.\nWorking...\n#### {row['answer']}"
        elif form == 2:
            text = f"Attempt {k}.\nWorking...\nThe answer is {row['answer']}"
        else:
            text = body
        gold = row["answer"] if attempt % 3 else other["answer"]  # a third graded against a wrong gold
        completions.append(text)
        golds.append(gold)
        k += 1
    return completions, golds


def timed(fn, *args):
    """`(seconds, fn(*args))`."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def one_by_one(grader: MathVerifyGrader, completions: list[str], golds: list[str]) -> list[float]:
    return [grader.grade(c, g) for c, g in zip(completions, golds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="ordinary answers")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions after the warm-up")
    args = parser.parse_args()

    bounded = MathVerifyGrader()
    bounded.grade(r"\boxed{\frac{1}{2}}", "0.5")  # start the worker outside the timings (plain numbers skip it)
    worst = {}
    for name, (completion, gold) in adversarial().items():
        seconds, grade = timed(bounded.grade, completion, gold)
        worst[name] = round(seconds, 3)
        print(f"adversarial {name}: {seconds:.3f} s, grade {grade}", flush=True)
    worst_case = max(worst.values())

    completions, golds = ordinary(args.n)
    warm = slice(0, min(200, args.n))
    MathVerifyGrader(timeout_seconds=None).grade_batch(completions[warm], golds[warm])
    MathVerifyGrader().grade_batch(completions[warm], golds[warm])
    per_call, batch, agree = [], [], True
    for rep in range(args.reps):
        base, one, many = MathVerifyGrader(timeout_seconds=None), MathVerifyGrader(), MathVerifyGrader()
        t_base = t_one = t_many = 0.0
        r_base, r_one, r_many = [], [], []
        # Interleaved in chunks, so that the load of a shared machine weighs on the three alike.
        for start in range(0, args.n, CHUNK):
            part = slice(start, start + CHUNK)
            seconds, grades = timed(one_by_one, base, completions[part], golds[part])
            t_base, r_base = t_base + seconds, r_base + grades
            seconds, grades = timed(one_by_one, one, completions[part], golds[part])
            t_one, r_one = t_one + seconds, r_one + grades
            seconds, grades = timed(many.grade_batch, completions[part], golds[part])
            t_many, r_many = t_many + seconds, r_many + grades
        agree &= r_base == r_one == r_many
        per_call.append(t_one / t_base)
        batch.append(t_many / t_base)
        print(
            f"rep {rep}: unbounded {t_base:.2f} s ({args.n / t_base:.0f}/s), bounded grade {t_one:.2f} s, "
            f"bounded grade_batch {t_many:.2f} s; accuracy {sum(r_base) / args.n:.3f}",
            flush=True,
        )
    emit(
        {
            "benchmark": "grading",
            "worst_case_seconds": worst_case,
            "adversarial_seconds": worst,
            "ordinary_answers": args.n,
            "baseline": "MathVerifyGrader(timeout_seconds=None), in-process, unbounded",
            "ratio_per_call": round(statistics.median(per_call), 3),
            "ratio_per_call_range": [round(min(per_call), 3), round(max(per_call), 3)],
            "ratio_batch": round(statistics.median(batch), 3),
            "ratio_batch_range": [round(min(batch), 3), round(max(batch), 3)],
            "same_grades": agree,
        }
    )


if __name__ == "__main__":
    main()
