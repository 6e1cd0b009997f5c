"""The rewriting task: its checker, its procedural policy and exact values against path enumeration."""

import math

import pytest

from trl_pav import MathVerifyGrader
from trl_pav.generation import GenerationRequest
from trl_pav.tasks import RewritePolicy, RewriteTask, get_task
from trl_pav.tasks.rewrite import parse_expression, render_expression, successors

RATES = {"hard_product": 0.7, "product": 0.2, "split": 0.1, "sum": 0.15}


def enumerate_success(state, rates) -> float:
    """Success probability by listing every complete path of reductions (no memo): each path's probability is the
    product of 1/#moves, its success the product of (1 - error rate) of its moves. Restating only delays."""
    total = 0.0
    stack = [(state, 1.0)]
    while stack:
        s, p = stack.pop()
        moves = successors(s)
        if not moves:
            total += p
            continue
        for kind, nxt in moves:
            stack.append((nxt, p * (1 - rates[kind]) / len(moves)))
    return total


@pytest.mark.parametrize("expression", ["12*3+4", "2*3+4+5", "17*6+4+3*9", "13*7+11*2", "5+6+7*8+9"])
def test_exact_value_matches_path_enumeration(expression):
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.3)
    assert pol.exact_value(f"Q:{expression}?\n", []) == pytest.approx(
        enumerate_success(parse_expression(expression), RATES)
    )


def test_values_along_a_trace_and_after_errors():
    task = RewriteTask()
    pol = RewritePolicy(task, RATES)
    prompt = "Q:12*3+4?\n"
    # 12*3 -> split (10*3+2*3) or hard product; 4 is alone so there is no sum until the product is gone.
    root = 0.5 * (1 - 0.7) * (1 - 0.15) + 0.5 * (1 - 0.1) * pol.state_value(((10, 3), (2, 3), 4))
    assert pol.exact_value(prompt, []) == pytest.approx(root)
    assert pol.exact_value(prompt, ["36+4"]) == pytest.approx(0.85)
    assert pol.exact_value(prompt, ["12*3+4"]) == pytest.approx(root)  # restating: no progress
    assert pol.exact_value(prompt, ["36+4", "#### 40"]) == 1.0
    assert pol.exact_value(prompt, ["37+4"]) == 0.0
    assert pol.exact_value(prompt, ["36+4", "#### 41"]) == 0.0
    assert pol.exact_value(prompt, ["10*3+3*3+4"]) == 0.0  # a wrong split
    assert pol.exact_value(prompt, ["#### 40"]) == 1.0  # a jump to the right answer is an outcome success


def test_step_labels_and_first_error():
    task = RewriteTask()
    expr = "17*6+4+3*9"
    good = ["17*6+4+27", "17*6+4+27", "10*6+7*6+4+27", "60+7*6+4+27", "60+42+4+27", "102+4+27", "106+27", "#### 133"]
    assert task.step_labels(expr, good) == [True] * len(good)
    assert [m for m, _ in task.replay(expr, good)] == [
        "product", "restate", "split", "product", "product", "sum", "sum", "sum",
    ]  # fmt: skip
    bad = ["17*6+4+27", "102+4+28", "102+32", "#### 134"]
    assert task.step_labels(expr, bad) == [True, False, False, False]
    assert task.first_error(expr, bad) == 1
    assert task.first_error(expr, ["4+17*6+27"]) == 0  # reordering terms is not a reduction
    assert task.first_error(expr, ["17*6+31"]) == 0  # 3*9 is a product: 4+27 is not a sum yet
    assert task.first_error(expr, ["oops"]) == 0


def test_policy_samples_match_exact_values():
    """Monte-Carlo success of the sampler from the root and from a mid-trace state lies within 4 binomial standard
    errors of the exact value."""
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    prompt = "Q:17*6+4+3*9?\n"
    n = 3000
    for prefix in [(), ("17*6+4+27",)]:
        exact = pol.exact_value(prompt, list(prefix))
        gens = pol.generate([GenerationRequest(prompt, prefix, seed=s) for s in range(n)])
        wins = sum(task.grader.grade(task.step_format.join([*prefix, *g.steps]), "133") for g in gens)
        assert all(g.finished for g in gens)
        assert abs(wins / n - exact) < 4 * math.sqrt(exact * (1 - exact) / n)


def test_stop_at_step_continues_any_state():
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    prompt = "Q:17*6+4+3*9?\n"
    steps: tuple[str, ...] = ()
    for depth in range(40):
        g = pol.generate([GenerationRequest(prompt, steps, seed=depth)], stop_at_step=True)[0]
        assert len(g.steps) == 1
        steps = (*steps, g.steps[0])
        if g.finished:
            break
    assert steps[-1].startswith("####")


def test_wrong_steps_always_give_wrong_answers():
    task = RewriteTask(max_terms=5)
    pol = RewritePolicy(task, {"hard_product": 0.5, "product": 0.5, "split": 0.5, "sum": 0.5}, restate_rate=0.1)
    for p in task.sample_problems(200, seed=3):
        steps = pol.sample_trace(p.expression, seed=hash(p.expression) % 1000)
        ok = all(task.step_labels(p.expression, steps))
        assert task.grader.grade(task.step_format.join(steps), p.gold) == float(ok)


def test_sft_traces_are_correct_varied_and_math_verify_agrees():
    task = RewriteTask()
    mv = MathVerifyGrader()
    data = task.sft_dataset(200, seed=5)
    orders, restates = set(), 0
    for prompt, completion in zip(data["prompt"], data["completion"]):
        expr = prompt[2:-2]
        steps = task.step_format.split(completion)
        assert all(task.step_labels(expr, steps))
        gold = str(eval(expr))
        assert task.grader.grade(completion, gold) == 1.0 == mv.grade(completion, gold)
        restates += sum(m == "restate" for m, _ in task.replay(expr, steps))
        orders.add((expr, tuple(steps)))
    assert restates > 0
    traces = [task.reference_steps("17*6+4+3*9", seed=s) for s in range(50)]
    assert len({tuple(t) for t in traces}) > 10  # several evaluation orders


def test_problems_and_tokenizer():
    task = get_task("rewrite")
    probs = task.sample_problems(300, seed=1)
    assert probs == task.sample_problems(300, seed=1)
    for p in probs:
        state = parse_expression(p.expression)
        assert render_expression(state) == p.expression
        assert task.min_terms <= len(state) <= task.max_terms
        assert any(isinstance(t, tuple) for t in state)
        assert eval(p.expression) == p.answer
    tok = task.tokenizer()
    text = probs[0].prompt + task.step_format.join(task.reference_steps(probs[0].expression))
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_bad_inputs_raise():
    task = RewriteTask()
    with pytest.raises(ValueError, match="error_rates"):
        RewritePolicy(task, {"product": 0.1})
    with pytest.raises(ValueError, match="hard_product"):
        RewritePolicy(task, {**RATES, "hard_product": 1.5})
    with pytest.raises(ValueError, match="not a rewrite-task prompt"):
        RewritePolicy(task, RATES).exact_value("hello", [])
    with pytest.raises(ValueError, match="min_terms"):
        RewriteTask(min_terms=1)
    with pytest.raises(ValueError, match="not a rewrite-task expression"):
        task.replay("1-2", [])


def test_search_with_exact_values_finds_answers():
    from trl_pav.search import BeamSearchConfig, beam_search

    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.1)
    probs = task.sample_problems(8, seed=11)
    out = beam_search(pol, pol, [p.prompt for p in probs], BeamSearchConfig(budget=6, max_depth=20))
    assert all(task.grader.grade(task.step_format.join(r.steps), p.gold) == 1.0 for r, p in zip(out, probs))


def test_fit_recovers_a_known_policys_rates():
    """Rates measured on traces of a known procedural policy match its rates within binomial error, and the
    attempted kind of a wrong step is read from its shape."""
    task = RewriteTask()
    truth = RewritePolicy(task, RATES, restate_rate=0.2)
    probs = task.sample_problems(600, seed=21)
    traces = [(p.expression, truth.sample_trace(p.expression, seed=i)) for i, p in enumerate(probs)]
    fitted = RewritePolicy.fit(task, traces)
    totals: dict[str, int] = {}
    for expr, steps in traces:
        for kind, (right, wrong) in task.move_counts(expr, steps).items():
            totals[kind] = totals.get(kind, 0) + right + wrong
    for kind, rate in RATES.items():
        assert abs(fitted.error_rates[kind] - rate) < 4 * math.sqrt(rate * (1 - rate) / totals[kind]), kind
    assert abs(fitted.restate_rate - 0.2) < 0.03
    state = parse_expression("17*6+4+3*9")
    assert task.attempted_kind(state, "17*6+4+28") == "product"
    assert task.attempted_kind(state, "103+4+3*9") == "hard_product"
    assert task.attempted_kind(state, "10*6+8*6+4+3*9") == "split"
    assert task.attempted_kind(parse_expression("102+4+27"), "107+27") == "sum"
    assert task.attempted_kind(state, "17*6+4+3*9") == "restate"
    assert task.attempted_kind(state, "hello") == "unreadable"


def test_scores_along_a_trace_equal_the_value_of_each_prefix():
    task = RewriteTask()
    pol = RewritePolicy(task, RATES, restate_rate=0.2)
    prompt = "Q:17*6+4+3*9?\n"
    trace = ["17*6+4+27", "17*6+4+27", "10*6+7*6+4+27", "60+7*6+4+28", "60+42+4+28", "#### 134"]
    scores = pol.score([prompt], [trace])[0]
    assert scores == [pol.exact_value(prompt, trace[:h]) for h in range(len(trace) + 1)]
    assert scores[4:] == [0.0, 0.0, 0.0] and scores[3] > 0
    with pytest.raises(ValueError, match="not a rewrite-task expression"):
        pol.score(["Q:1-2?\n"], [[]])


def test_trace_lengths_follow_the_task():
    from trl_pav.experiments.arithmetic_verifiers import trace_limits

    # Two times-table products, no restating: evaluate each, then the sum is the answer, so exactly 3 steps.
    fixed = RewriteTask(min_terms=2, max_terms=2, product_share=1.0, max_factor=9, restate_rate=0.0)
    lengths = fixed.trace_lengths(quantile=1.0, n=300)
    assert lengths["steps"] == 3
    tok = fixed.tokenizer()
    assert lengths["prompt_tokens"] == len(tok("Q:9*9+9*9?\n")["input_ids"])  # the longest prompt there is
    # The longest step is a three-digit answer ("#### 162": 8 characters, one token each); any sum step is shorter.
    assert lengths["step_tokens"] == 8
    # "81+9*9\n81+81\n#### 162" and the end token.
    assert lengths["tokens"] <= len("81+9*9\n81+81\n#### 162") + 1
    from trl_pav.tasks import DEFAULT_POLICY

    small = trace_limits(RewriteTask(min_terms=2, max_terms=3, max_factor=15))
    large = trace_limits(RewriteTask())
    assert small["max_new_tokens"] < large["max_new_tokens"] and small["max_depth"] < large["max_depth"]
    assert small["max_new_tokens"] % 16 == 0
    # The default task's 99.5th percentile is longer than the policy's position table leaves: the cap binds.
    room = DEFAULT_POLICY["rewrite"].max_positions - RewriteTask().trace_lengths()["prompt_tokens"]
    assert RewriteTask().trace_lengths()["tokens"] > room and large["max_new_tokens"] == room
    with pytest.raises(ValueError, match="quantile"):
        fixed.trace_lengths(quantile=0.0)
