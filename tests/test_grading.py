import json
import re
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
    assert ExactMatchGrader().grade("so A: 12 ", "12") == 1.0
    assert ExactMatchGrader().grade("QA:12", "12") == ExactMatchGrader().grade("A:\n12", "12") == 0.0
    assert ExactMatchGrader().grade("A:" * 20000 + " 12", "12") == 0.0  # one start of a match, not 20,000
    assert ExactMatchGrader().grade("3*4=12\r\nA:12\r\n", "12") == 1.0  # Windows line ends
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


# ---- bounded grading -------------------------------------------------------------------------------------------------
def test_answer_regex_is_linear_in_whitespace():
    """The former default pattern took 34 s on 2,000 newlines after "answer" (three adjacent backtracking `\\s*`)."""
    import time

    from trl_pav._mathgrade import DEFAULT_ANSWER_PATTERN

    pattern = re.compile(DEFAULT_ANSWER_PATTERN)
    for text in ("The answer" + "\n" * 50_000 + "x", "answer is" + " \t" * 50_000, ("answer " * 5) * 5_000):
        start = time.perf_counter()
        extract_answer(text, pattern)
        assert time.perf_counter() - start < 1.0
    assert extract_answer("The answer is: 12", pattern) == "12"
    assert extract_answer("so the answer is $-3$.", pattern) == "-3"
    assert extract_answer("Answer\n\n7", pattern) == "7"


def test_grading_time_is_bounded_in_the_main_thread_and_in_threads(caplog):
    import time

    grader = MathVerifyGrader(timeout_seconds=0.5)
    assert grader.grade(r"\boxed{\frac{1}{2}}", "0.5") == 1.0  # starts the worker (plain numbers do not need it)
    slack = 2.0  # process scheduling on a busy machine (and, rarely, a replacement worker's start)
    # Two towers (distinct texts: no cache). An integral used to be the second; math-verify sometimes settles it
    # within the limit, which made the timeout count flaky.
    for completion in (r"\boxed{10^{10^{10}}}", r"\boxed{7^{10^{11}}}"):
        start = time.perf_counter()
        assert grader.grade(completion, "1") == 0.0
        assert time.perf_counter() - start < 0.5 + slack
    assert grader.timeouts == 2
    assert "did not grade within 0.5 s and counts as wrong (2 so far" in caplog.text
    assert grader.grade(r"\boxed{\frac{1}{2}}", "0.5") == 1.0  # a fresh worker took over

    results, seconds = {}, {}

    def work(i):
        start = time.perf_counter()
        tower = f"Attempt {i}: " + r"\boxed{10^{10^{10}}}"  # distinct texts: no answer comes from the cache
        results[i] = grader.grade(tower if i % 2 else rf"\boxed{{{i}}}", str(i))
        seconds[i] = time.perf_counter() - start

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0}
    assert max(seconds.values()) < 0.5 + 2 * slack  # may wait once for a worker to start
    assert grader.timeouts == 4


def test_long_answers_grade_zero_without_parsing():
    """`1+1+...+1` with 5,001 terms equals 5001, but no real final answer is 10,001 characters long: such an answer
    is refused by `max_answer_chars` (math-verify cannot parse it either: it recurses too deep and grades it 0)."""
    grader = MathVerifyGrader()
    assert grader.grade(r"\boxed{" + "+".join(["1"] * 5001) + "}", "5001") == 0.0
    assert grader.timeouts == 0
    assert grader.grade(r"\boxed{" + "+".join(["1"] * 200) + "}", "200") == 1.0
    assert MathVerifyGrader(max_answer_chars=None, timeout_seconds=5).grade(
        r"\boxed{" + "+".join(["1"] * 5001) + "}", "5001"
    ) in (0.0, 1.0)  # bounded either way


def test_grade_batch_matches_grade():
    grader = MathVerifyGrader()
    completions = [r"\boxed{\frac{1}{2}}", "#### 7", "The answer is 3", "nothing", r"\boxed{x^2}"]
    golds = ["0.5", "8", "3", "1", "x^2"]
    expected = [MathVerifyGrader(timeout_seconds=None).grade(c, g) for c, g in zip(completions, golds)]
    assert grade_batch(grader, completions, golds) == expected == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_a_gold_answer_that_is_not_text_is_an_error_not_a_zero():
    for grader in (MathVerifyGrader(), MathVerifyGrader(timeout_seconds=None), ExactMatchGrader()):
        with pytest.raises(TypeError, match=r"gold answer 0 is 5 \(int\): gold answers are text"):
            grader.grade("\\boxed{5}\nA:5", 5)
        assert grader.grade(None, "5") == 0.0  # a malformed model output still scores 0
    with pytest.raises(TypeError, match=r"gold answer 1 is None \(NoneType\)"):
        MathVerifyGrader().grade_batch(["\\boxed{1}", "\\boxed{2}"], ["1", None])


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"So $\boxed 5$ since $f(x) = x^{2}$.", "5"),  # a later brace is not the box's argument
        ("The sum is \\boxed{5}.\nPut the final answer in \\boxed{}.", "5"),  # an echoed empty box
        (r"\boxed {7}", "7"),  # whitespace before the brace
        ("\\boxed{3} then \\boxed{4", "3"),  # a box whose braces never close gives way to the one before
        ("The answer is 5.\n#### Verification\nok", "5"),  # a markdown heading is not a #### answer
        ("#### Step 2\nso x = 3\n#### 3", "3"),  # a heading with a digit, then the answer line
        ("2+2=4\n#### 4", "4"),
    ],
)
def test_answer_extraction_of_odd_but_clear_outputs(completion, gold):
    assert MathVerifyGrader(timeout_seconds=None).grade(completion, gold) == 1.0
    wrong = str(int(gold) + 1)
    assert MathVerifyGrader(timeout_seconds=None).grade(completion, wrong) == 0.0


@pytest.mark.timeout(60)  # scanning each unclosed box to the end is quadratic: minutes on this text
def test_many_unclosed_boxes_give_way_to_the_last_closed_one():
    assert extract_boxed("\\boxed{5} " + "\\boxed{x" * 50_000) == "5"


def test_a_text_answer_after_hashes_is_the_answer_not_earlier_prose():
    from trl_pav._mathgrade import DEFAULT_ANSWER_PATTERN

    pattern = re.compile(DEFAULT_ANSWER_PATTERN)
    assert extract_answer("Let me find the answer: it is between A and C.\n#### B", pattern) == "B"
    assert extract_answer("So the answer is yes.\n#### no", pattern) == "no"
    assert extract_answer("#### 72 dollars", pattern) == "72 dollars"
