import itertools
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_pav import MathVerifyGrader, load_tokenizer
from trl_pav.generation import GenerationRequest, HFPolicy, Policy
from trl_pav.generation.base import mix_seed
from trl_pav.tasks import (
    ArithmeticTask,
    PlantedOracleScorer,
    PlantedProverPolicy,
    PlantedTask,
    TinyPolicyConfig,
    evaluate,
    get_task,
    reference_steps,
    train_sft_policy,
)
from trl_pav.testing import tiny_causal_lm


def all_small_expressions():
    for n_ops in (1, 2, 3):
        for nums in itertools.product(range(1, 4), repeat=n_ops + 1):
            for ops in itertools.product("+-*", repeat=n_ops):
                yield "".join(str(n) + o for n, o in zip(nums, [*ops, ""]))


def test_evaluate_and_reference_traces_exhaustive():
    task = ArithmeticTask()
    fmt = task.step_format
    mv = MathVerifyGrader()
    count = 0
    for expr in all_small_expressions():
        value = eval(expr)  # Python's precedence is the task's
        assert evaluate(expr) == value
        steps = reference_steps(expr)
        assert steps[-1] == f"#### {value}"
        assert len(steps) == expr.count("+") + expr.count("-") + expr.count("*") + 1
        assert task.step_labels(expr, steps) == [True] * len(steps)
        assert task.first_error(expr, steps) is None
        text = fmt.join(steps)
        assert task.grader.grade(text, str(value)) == 1.0
        assert task.grader.grade(text, str(value + 1)) == 0.0
        count += 1
        if count % 20 == 0:  # math-verify reads the final answer the same way (sampled: it is slow)
            assert mv.grade(text, str(value)) == 1.0 and mv.grade(text, str(value + 1)) == 0.0
    assert count == 9 * 3 + 27 * 9 + 81 * 27


def test_first_error_oracle():
    task = ArithmeticTask()
    expr = "25-29*14-2"
    ref = reference_steps(expr)
    for i in range(len(ref)):
        bad = list(ref)
        bad[i] = bad[i][:-1] + str((int(bad[i][-1]) + 1) % 10)  # wrong last digit
        assert task.first_error(expr, bad) == i
        assert task.step_labels(expr, bad) == [True] * i + [False] * (len(ref) - i)
    assert task.first_error(expr, ["25-29=-4", "-4*14=-56"]) == 0  # precedence violated (true equation, wrong value)
    assert task.first_error(expr, ["14-2=12"]) == 0
    assert task.first_error(expr, ["garbage"]) == 0
    assert task.first_error(expr, ["29*14=406", "#### -383"]) is None  # a correct early answer is correct
    assert task.first_error(expr, ["29*14=406", "#### -383", "1+1=2"]) == 2  # nothing may follow the answer
    # A different valid order keeps the value: correct.
    assert task.first_error("2*3+4*5", ["4*5=20", "2*3=6", "6+20=26", "#### 26"]) is None
    assert task.first_error("2-3+4", ["3+4=7"]) == 0  # 2-(3+4) changes the value


def test_problem_generation():
    task = ArithmeticTask(min_operand=5, max_operand=9, min_ops=3, max_ops=3, operators="+*")
    probs = task.sample_problems(50, seed=3)
    assert probs == task.sample_problems(50, seed=3)
    assert probs != task.sample_problems(50, seed=4)
    for p in probs:
        nums = [int(x) for x in p.expression.replace("*", "+").split("+")]
        assert len(nums) == 4 and all(5 <= x <= 9 for x in nums)
        assert p.answer == eval(p.expression)
        assert p.prompt == f"Q:{p.expression}?\n"
    with pytest.raises(ValueError, match="operators"):
        ArithmeticTask(operators="/")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")


def test_arithmetic_tokenizer_roundtrip(tmp_path):
    task = ArithmeticTask()
    tok = task.tokenizer()
    ds = task.sft_dataset(20, seed=0)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    for row in ds:
        text = row["prompt"] + row["completion"]
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
        assert again(text)["input_ids"] == ids
        assert again.decode(ids, skip_special_tokens=True) == text


def brute_force_values(task, gamma, prefix):
    """Success probability of μ_γ from `prefix` by enumerating every completion."""
    probs = task.prover_probs(gamma)
    total = 0.0
    rest = task.length - len(prefix)
    for tail in itertools.product(range(task.vocab_size), repeat=rest):
        seq = [*prefix, *tail]
        p, k = 1.0, task.match_state(prefix)
        for a in tail:
            p *= probs[k, a]
            k = int(task.transitions[k, a])
        total += p * task.is_success(seq)
    return total


@pytest.mark.parametrize("gamma", [1.0, 3.0, 10.0])
def test_planted_dp_matches_brute_force(gamma):
    task = PlantedTask(vocab_size=4, length=6, planted=(1, 2, 1))
    rng = random.Random(0)
    prefixes = [[]] + [[rng.randrange(4) for _ in range(rng.randrange(1, 6))] for _ in range(12)]
    prefixes += [[1, 2], [1, 2, 1], [2, 1, 2, 1, 2]]
    for prefix in prefixes:
        values = task.exact_values(gamma, task.decode(prefix))
        for h in range(len(prefix) + 1):
            assert values[h] == pytest.approx(brute_force_values(task, gamma, prefix[:h]), abs=1e-12)
    # Uniform symbols (γ = 1) from the root: inclusion-exclusion is messy, the enumeration is the truth.
    assert task.success_probability(gamma) == pytest.approx(brute_force_values(task, gamma, []), abs=1e-12)
    assert not task.value_table(gamma).flags.writeable  # kept for the next caller: nobody may change it


def test_mix_seed_equals_the_tensor_hash():
    """`mix_seed` hashes Python ints; the tensor finaliser used for per-token Gumbel noise is the reference."""
    import torch

    from trl_pav.generation.base import _MASK32, _hash32

    def reference(*parts):
        h = torch.tensor(0x9E3779B9, dtype=torch.int64)
        for p in parts:
            h = _hash32(h ^ _hash32(torch.tensor(int(p) & _MASK32, dtype=torch.int64)))
        return int(h)

    rng = random.Random(0)
    for _ in range(300):
        parts = [rng.randint(-(2**40), 2**40) for _ in range(rng.randint(0, 5))]
        assert mix_seed(*parts) == reference(*parts)


def test_planted_automaton_and_grader():
    task = PlantedTask()
    assert task.grader.grade("a d g a d f b b b b") == 1.0
    assert task.grader.grade("d g a d f a a a a a") == 1.0
    assert task.grader.grade("d g a d a a a a a a") == 0.0
    assert task.grader.grade("a d g a d f b b b") == 1.0  # stopped early, after the planted string
    assert task.grader.grade("d g a d f") == 1.0
    assert task.grader.grade("a d g a d") == 0.0  # stopped before completing it
    assert task.grader.grade("b b b b b b d g a d f") == 0.0  # longer than `length`
    assert task.grader.grade("a d g a d f b b b z") == 0.0  # unknown symbol
    # Overlap: "d g a d" then "g a d f" needs the automaton to fall back to state 1 after a mismatch.
    assert task.match_state([3, 6, 0, 3, 6, 0, 3, 5]) == 5
    assert task.exact_values(5.0, ["d", "g", "a", "d", "f"])[-1] == 1.0
    assert task.exact_values(5.0, ["zz"])[1] == 0.0


def test_planted_prover_matches_dp():
    """Empirical success of μ_γ through the Policy interface lies within a 99.9% binomial interval of the DP value."""
    task = PlantedTask()
    gamma = 10.0
    policy = PlantedProverPolicy(task, gamma)
    assert isinstance(policy, Policy)
    n = 4000
    gens = policy.generate([GenerationRequest(task.prompt, seed=s) for s in range(n)])
    rate = np.mean([task.grader.grade(task.step_format.join(g.steps)) for g in gens])
    p = task.success_probability(gamma)
    assert abs(rate - p) < 3.3 * np.sqrt(p * (1 - p) / n), (rate, p)
    # From a prefix, one step at a time.
    one = policy.generate([GenerationRequest(task.prompt, ("d", "g"), seed=1)], stop_at_step=True)[0]
    assert len(one.steps) == 1 and not one.finished
    scorer = PlantedOracleScorer(task, gamma)
    assert scorer.score([">"], [["d", "g"]]) == [task.exact_values(gamma, ["d", "g"])]


def test_hf_policy_seeded_and_batch_independent(char_tok):
    model = tiny_causal_lm(char_tok, seed=1)
    reqs = [GenerationRequest("Q:1+2*3?\n", steps=("2*3=6",) * (i % 3), seed=100 + i) for i in range(9)]
    big = HFPolicy(model, char_tok, batch_size=16, max_new_tokens=12, max_step_tokens=6)
    small = HFPolicy(model, char_tok, batch_size=1, max_new_tokens=12, max_step_tokens=6)
    assert isinstance(big, Policy)
    for stop in (False, True):
        a, b = big.generate(reqs, stop_at_step=stop), small.generate(reqs, stop_at_step=stop)
        assert [(g.steps, g.finished, g.num_tokens) for g in a] == [(g.steps, g.finished, g.num_tokens) for g in b]
        for g in a:
            assert g.num_tokens <= (6 if stop else 12)
            if stop:
                assert len(g.steps) <= 1 and all("\n" not in s for s in g.steps)
    # Different seeds give different samples; the same seed the same sample.
    again = big.generate(reqs)
    assert [g.steps for g in again] == [g.steps for g in big.generate(reqs)]
    assert len({tuple(g.steps) for g in again}) > 1


def test_hf_policy_length_budget_counts_steps_taken(char_tok):
    """`max_new_tokens` bounds the whole completion: a rollout from a prefix of n tokens gets what is left, so the
    prefix plus its continuation never exceeds the budget of a trace sampled from the prompt."""
    model = tiny_causal_lm(char_tok, seed=1)
    policy = HFPolicy(model, char_tok, max_new_tokens=12, max_step_tokens=5)
    prompt = "Q:1+2*3?\n"
    for steps in [(), ("2*3=6",), ("2*3=6", "1+6=7"), ("2*3=6", "1+6=7", "####")]:
        taken = len(char_tok(prompt + "\n".join(steps) + ("\n" if steps else ""))["input_ids"])
        taken -= len(char_tok(prompt)["input_ids"])
        left = max(0, 12 - taken)
        for stop in (False, True):
            gens = policy.generate([GenerationRequest(prompt, steps, seed=s) for s in range(16)], stop_at_step=stop)
            assert max(g.num_tokens for g in gens) <= (min(5, left) if stop else left)
            if left == 0:
                assert all(g.truncated and not g.steps for g in gens)
            if not stop and left:
                assert any(g.num_tokens == left for g in gens)  # untrained model: some rows run to the limit


def test_hf_policy_sampling_distribution(char_tok):
    """Per-row Gumbel sampling follows softmax(logits / T): first-token frequencies match the model's probabilities."""
    model = tiny_causal_lm(char_tok, seed=2, hidden_size=16)
    temperature, n = 0.3, 3000
    policy = HFPolicy(model, char_tok, temperature=temperature, max_new_tokens=1, batch_size=512)
    gens = policy.generate([GenerationRequest("ab", seed=s) for s in range(n)])
    with torch.no_grad():
        logits = model(torch.tensor([char_tok("ab")["input_ids"]])).logits[0, -1] / temperature
    probs = torch.softmax(logits.double(), -1)
    # Tokens that come back as a visible one-character step (whitespace and special tokens yield no step).
    visible = [i for i in probs.argsort(descending=True).tolist() if char_tok.decode([i]).strip()][:3]
    assert len(visible) == 3
    for token_id in visible:
        char, p = char_tok.decode([token_id]), float(probs[token_id])
        hits = sum(1 for g in gens if g.steps == [char])
        assert abs(hits / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (char, hits / n, p)


def test_hf_policy_ignores_the_checkpoints_generation_settings(char_tok):
    """Instruct checkpoints ship logit-changing defaults in generation_config.json (Qwen2.5-Math-1.5B-Instruct:
    repetition_penalty 1.05); transformers fills unset settings from it, which would change the policy sampled from.
    HFPolicy samples the plain distribution, whatever the checkpoint says, and leaves the model's config in place."""
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig

    model = tiny_causal_lm(char_tok, seed=3).eval()
    requests = [GenerationRequest("Q:1+1?\n", seed=s) for s in range(4)]
    plain = [HFPolicy(model, char_tok, temperature=t, max_new_tokens=12).generate(requests) for t in (0.0, 1.0)]
    shipped = GenerationConfig(repetition_penalty=50.0, no_repeat_ngram_size=1, min_new_tokens=12)
    model.generation_config = shipped
    for t, expected in zip((0.0, 1.0), plain):
        assert HFPolicy(model, char_tok, temperature=t, max_new_tokens=12).generate(requests) == expected
    assert model.generation_config is shipped
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=True))
    assert HFPolicy(lora, char_tok, temperature=0.0, max_new_tokens=12).generate(requests) == plain[0]
    assert model.generation_config is shipped


def test_hf_policy_stops_at_the_checkpoints_end_tokens(char_tok):
    """A chat checkpoint may end its turn with a token its tokenizer does not call EOS (Llama 3.1 Instruct's
    `<|eot_id|>`); generation_config.eos_token_id names it, and HFPolicy stops there and calls the trace finished."""
    from transformers import GenerationConfig

    from trl_pav.testing import markov_causal_lm

    model = markov_causal_lm(char_tok, {"x": {"a": 1.0}, "a": {"!": 1.0}, "!": {"b": 1.0}}, hidden_size=128).eval()
    request = [GenerationRequest("x", seed=0)]
    (before,) = HFPolicy(model, char_tok, temperature=0.0, max_new_tokens=8).generate(request)
    assert before.steps == ["a!b"] and before.finished and before.num_tokens == 4
    end = char_tok.convert_tokens_to_ids("!")
    model.generation_config = GenerationConfig(eos_token_id=[char_tok.eos_token_id, end])
    policy = HFPolicy(model, char_tok, temperature=0.0, max_new_tokens=8)
    (after,) = policy.generate(request)
    assert after.steps == ["a"] and after.finished and after.num_tokens == 2
    assert policy.fingerprint()["end_tokens"] == [char_tok.eos_token_id, end]


def test_stop_at_step_with_bpe(bpe_tok):
    model = tiny_causal_lm(bpe_tok, seed=0)
    policy = HFPolicy(model, bpe_tok, max_step_tokens=5, max_new_tokens=10)
    out = policy.generate([GenerationRequest("Q: 1+1?\n", seed=s) for s in range(4)], stop_at_step=True)
    for g in out:
        assert len(g.steps) <= 1 and g.num_tokens <= 5


def test_sft_training_deterministic_and_reloadable(tmp_path, capsys):
    import transformers

    task = ArithmeticTask()
    cfg = TinyPolicyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_steps=4, batch_size=8)
    data = task.sft_dataset(32, seed=0)
    a = train_sft_policy(task.tokenizer(), data, tmp_path / "a", cfg)
    level = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # quiet logging turns progress bars into printed log dicts
    try:
        b = train_sft_policy(task.tokenizer(), data, tmp_path / "b", cfg)
    finally:
        transformers.utils.logging.set_verbosity(level)
    assert capsys.readouterr().out == ""  # library code prints nothing
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    for (n, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(pa, pb), n
    # Reload through both paths keeps the character tokenizer intact (Llama config: AutoTokenizer is safe).
    text = data[0]["prompt"] + data[0]["completion"]
    ref = task.tokenizer()(text)["input_ids"]
    assert load_tokenizer(a)(text)["input_ids"] == ref
    assert AutoTokenizer.from_pretrained(a)(text)["input_ids"] == ref


def test_vllm_policy_is_cleanly_absent_on_cpu():
    import importlib.util

    from trl_pav.generation.vllm import VLLMPolicy

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match=r"trl-pav\[vllm\]"):
            VLLMPolicy("some/model")


def test_vllm_policy_request_and_output_handling(monkeypatch):
    """VLLMPolicy against a stand-in engine shaped like vLLM's API (SamplingParams in, RequestOutput out)."""
    import sys
    import types

    from trl_pav.testing import VLLMCompletion as Completion
    from trl_pav.testing import VLLMRequestOutput as RequestOutput
    from trl_pav.testing import VLLMSamplingParams as SamplingParams

    class Engine:
        def __init__(self):
            self.calls = []

        def generate(self, prompts, params, use_tqdm=False):
            self.calls.append((prompts, params))
            scripted = {
                0: Completion("2*3=6", [1, 2, 3, 4, 5], "stop", "\n"),  # stopped at the separator
                1: Completion("#### 6", [1, 2, 3, 4, 5, 6], "stop", None),  # end of sequence
                2: Completion("12345678", list(range(8)), "length"),  # ran out of tokens
            }
            outputs = []
            for p in params:
                if p.seed in scripted:
                    outputs.append(scripted[p.seed])
                elif p.seed in blank_seeds:
                    outputs.append(Completion("", [0], "stop", "\n"))  # the model wrote a blank line first
                else:
                    outputs.append(Completion("2*3=6", [1, 2, 3, 4, 5], "stop", "\n"))
            return [RequestOutput([c]) for c in outputs]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    from trl_pav.generation.vllm import VLLMPolicy

    blank_seeds = {3, mix_seed(3, 1), 4}  # seed 3 opens with two blank lines, seed 4 with one
    engine = Engine()
    policy = VLLMPolicy(engine, TASK_FMT, max_step_tokens=8, name="stand-in")
    assert isinstance(policy, Policy)
    reqs = [
        GenerationRequest("Q:2*3?\n", seed=0),
        GenerationRequest("Q:2*3?\n", ("2*3=6",), seed=1),
        GenerationRequest("Q:2*3?\n", seed=2),
    ]
    out = policy.generate(reqs, stop_at_step=True)
    assert [(g.steps, g.finished, g.truncated, g.num_tokens) for g in out] == [
        (["2*3=6"], False, False, 5),
        (["#### 6"], True, False, 6),
        (["12345678"], False, True, 8),
    ]
    prompts, params = engine.calls[0]
    assert prompts[1] == "Q:2*3?\n2*3=6\n" and [p.seed for p in params] == [0, 1, 2]
    assert all(p.stop == ["\n"] and p.max_tokens == 8 for p in params)
    policy.generate(reqs[:1])
    assert engine.calls[-1][1][0].stop is None

    # A step that opens with blank lines: vLLM stops at the first separator with no text. The request goes on past
    # it (a new seed per attempt, the tokens charged) until a step comes out or the budget is spent.
    engine.calls.clear()
    blank = [GenerationRequest("Q:2*3?\n", seed=3), GenerationRequest("Q:2*3?\n", seed=4)]
    policy.max_step_tokens = 8
    first, second = policy.generate(blank, stop_at_step=True)
    assert (first.steps, first.finished, first.truncated, first.num_tokens) == (["2*3=6"], False, False, 7)
    assert [p.seed for p in engine.calls[1][1]] == [mix_seed(3, 1), mix_seed(4, 1)]
    assert [p.max_tokens for p in engine.calls[2][1]] == [6]
    assert engine.calls[2][0] == ["Q:2*3?\n\n\n"]
    assert (second.steps, second.num_tokens) == (["2*3=6"], 6)
    policy.max_step_tokens = 2
    (spent,) = policy.generate(blank[:1], stop_at_step=True)
    assert (spent.steps, spent.truncated, spent.num_tokens) == ([], True, 2)


TASK_FMT = ArithmeticTask().step_format


def test_planted_prover_samples_are_those_of_numpy_choice():
    """The prover's hand-rolled sampler draws exactly what `rng.choice(p=...)` would (same seeds, same symbols)."""
    import numpy as np

    from trl_pav.generation.base import GenerationRequest
    from trl_pav.tasks import PlantedProverPolicy, PlantedTask

    task = PlantedTask()
    for gamma in (1.0, 10.0):
        policy = PlantedProverPolicy(task, gamma)
        requests = [GenerationRequest(">", tuple("dga"[: i % 4]), seed=i) for i in range(300)]
        for req, gen in zip(requests, policy.generate(requests)):
            rng, k, symbols = np.random.default_rng(req.seed), task.match_state(task.encode(req.steps)), []
            for _ in range(task.length - len(req.steps)):
                a = int(rng.choice(task.vocab_size, p=task.prover_probs(gamma)[k]))
                symbols.append(a)
                k = int(task.transitions[k, a])
            assert gen.steps == task.decode(symbols)


def test_checkers_mark_huge_and_non_ascii_numbers_wrong_instead_of_raising():
    """A model can write a 5,000-digit number (Python refuses int() over 4,300 digits) or another script's digits."""
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, RewritePolicy, RewriteTask

    big = "9" * 5000
    arith = ArithmeticTask()
    assert arith.step_labels("2*3+4", [f"{big}*3=1"]) == [False]
    assert arith.step_labels("2*3+4", ["2*3=6", "6+4=10", f"#### {big}"]) == [True, True, False]
    assert arith.step_labels("2*3+4", ["٢*٣=٦"]) == [False]
    assert arith.grader.grade("#### ٥", "5") == 0.0 and arith.grader.grade("#### 5", "5") == 1.0
    assert NoisyArithmeticPolicy(arith, 0.1).exact_value("Q:2*3+4?\n", [f"{big}*3=1"]) == 0.0
    rewrite = RewriteTask()
    assert rewrite.step_labels("2*3+4", [f"{big}+4"]) == [False]
    assert rewrite.grader.grade(f"#### {big}", "10") == 0.0
    rates = dict.fromkeys(("hard_product", "product", "split", "sum"), 0.1)
    values = RewritePolicy(rewrite, rates).values_along("Q:2*3+4?\n", ["6+4", f"#### {big}"])
    assert values[-1] == 0.0


def test_planted_prover_continues_no_prefix_past_the_trace_length():
    from trl_pav.generation import GenerationRequest
    from trl_pav.tasks import PlantedProverPolicy, PlantedTask

    task = PlantedTask(vocab_size=4, length=3, planted=(0, 1))
    policy = PlantedProverPolicy(task, 5.0)
    for stop in (False, True):
        (gen,) = policy.generate([GenerationRequest(task.prompt, ("a", "b", "c", "d"), seed=0)], stop_at_step=stop)
        assert gen.steps == [] and gen.finished
    with pytest.raises(TypeError, match="from_letters"):
        PlantedTask(planted="ab")
    with pytest.raises(TypeError, match="ints"):
        PlantedTask(planted=(0, 1.5))
    assert PlantedTask.from_letters("dgadf") == PlantedTask()
