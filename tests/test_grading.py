import json
import threading

import pytest

from trl_pav import ExactMatchGrader, Grader, MathVerifyGrader, extract_answer, extract_boxed, grade_batch


def test_extraction():
    assert extract_boxed(r"x \boxed{\frac{a}{\sqrt{2}}} and \boxed{3}") == "3"
    assert extract_boxed(r"\boxed{\frac{a}{\sqrt{2}}}.") == r"\frac{a}{\sqrt{2}}"
    assert extract_boxed(r"\boxed{unbalanced") is None
    assert extract_boxed("no box") is None
    assert extract_answer("2+2=4\n#### 4") == "4"
    assert extract_answer("so the answer is: 12") is None
    import re

    assert extract_answer("so the answer is: 12", re.compile(r"answer is:\s*(\S+)")) == "12"


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$", "0.5", 1.0),
        (r"so $\boxed{\frac{1}{2}}$", r"\frac12", 1.0),
        (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", 1.0),
        ("#### 71", "72", 0.0),
        ("The answer is 5", "5", 1.0),
        ("Answer: -383", "-383", 1.0),
        ("", "5", 0.0),
        ("\\boxed{", "5", 0.0),
        ("\x00\x01garbage }{}{ \\frac{", "5", 0.0),
        ("\\boxed{\\frac{}{}}", "5", 0.0),
        (None, "5", 0.0),
    ],
)
def test_math_verify_grader(completion, gold, expected):
    assert MathVerifyGrader().grade(completion, gold) == expected


def test_graders_satisfy_protocol():
    assert isinstance(MathVerifyGrader(), Grader)
    assert isinstance(ExactMatchGrader(), Grader)
    assert ExactMatchGrader().grade("3*4=12\nA:12", "12") == 1.0
    assert ExactMatchGrader().grade("3*4=12\nA:13", "12") == 0.0
    assert ExactMatchGrader().grade("3*4=12", "12") == 0.0
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        grade_batch(ExactMatchGrader(), ["a", "b"], ["1"])


def test_grader_off_main_thread():
    results = []

    def work():
        results.append(MathVerifyGrader().grade(r"\boxed{\frac{3}{4}}", "0.75"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1.0] * 4


def test_math500_agreement(math500_path):
    """Every MATH-500 solution's boxed answer must grade correct against the row's answer; others' answers must not."""
    with open(math500_path) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 500
    grader = MathVerifyGrader()
    disagree = [
        (r["unique_id"], extract_boxed(r["solution"]), r["answer"])
        for r in rows
        if grader.grade(r["solution"], r["answer"]) != 1.0
    ]
    agreement = 1 - len(disagree) / len(rows)
    print(f"MATH-500 self-agreement: {agreement:.1%}; exceptions: {disagree}")
    assert agreement >= 0.99, disagree

    # Another row's answer must grade incorrect, except where the two answers are the same value in another notation.
    accepted = []
    pairs = 0
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["answer"]
        if other.strip() == row["answer"].strip():
            continue
        pairs += 1
        if grader.grade(row["solution"], other) != 0.0:
            accepted.append((row["answer"], other))
    print(f"wrong answers accepted: {len(accepted)} of {pairs}: {accepted}")
    assert len(accepted) <= 0.01 * pairs, accepted
