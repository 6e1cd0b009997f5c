"""Step controls of the stages (issue 25): separator, step token limit, cut steps, a public PRM in search."""

import json
import re
from pathlib import Path

import pytest
import yaml

from trl_pav import StepFormat
from trl_pav.cli import main
from trl_pav.generation import HFPolicy
from trl_pav.prm_adapters import RLHFlowPRM, convention_of
from trl_pav.scripts import label, rl, search_eval, sft
from trl_pav.scripts.common import load_stage_problems
from trl_pav.search import BeamSearchConfig, ComputeLedger, SearchEvalConfig, beam_search, evaluate_search
from trl_pav.search.runner import merge_search_results
from trl_pav.steps import parse_separator
from trl_pav.tasks import ArithmeticTask
from trl_pav.testing import char_tokenizer, markov_causal_lm, tiny_causal_lm, tiny_public_prm

MATH500 = Path(__file__).parents[2] / "shared" / "data" / "math500_test.jsonl"
# A line that only opens or closes display math: a step under a newline separator, never one under "\n\n".
BARE_DELIMITER = re.compile(r"^(\\\[|\\\]|\$\$|\\begin\{[A-Za-z*]+\}|\\end\{[A-Za-z*]+\})$")


def parse(script, argv):
    return script.make_parser(argv).parse_args_and_config(args=argv)


# ---- (a) MATH-500 paragraphs ---------------------------------------------------------------------------------------
def test_math500_solutions_split_into_paragraphs_with_the_stage_separator():
    if not MATH500.exists():
        pytest.skip(f"MATH-500 data not found at {MATH500}")
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    (args, _, _) = parse(label, ["--dataset_name", str(MATH500), "--separator", "\\n\\n", "--num_problems", "2"])
    problems, _, fmt = load_stage_problems(args, "train", args.separator)
    assert fmt == StepFormat.blank_line() and len(problems) == 2
    for i, row in enumerate(rows):
        steps = fmt.split(row["solution"])
        assert steps, f"row {i}: no step"
        for h, step in enumerate(steps):
            assert step.strip(), f"row {i}, step {h}: whitespace-only {step!r}"
            assert not BARE_DELIMITER.match(step.strip()), f"row {i}, step {h}: a bare delimiter {step!r}"
        assert fmt.join(steps).strip() == row["solution"].strip(), f"row {i}: the steps do not join back"
    # The old forced default, one step per line, cuts display math into bare-delimiter steps.
    newline = [s for r in rows for s in StepFormat().split(r["solution"])]
    assert any(BARE_DELIMITER.match(s.strip()) for s in newline)


def test_sft_keeps_math500_paragraphs_with_the_separator(tmp_path):
    if not MATH500.exists():
        pytest.skip(f"MATH-500 data not found at {MATH500}")
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    argv = ["--dataset_name", str(MATH500), "--separator", "\\n\\n", "--output_dir", str(tmp_path), "--bf16", "false"]
    assert parse(sft, argv)[0].separator == "\n\n"
    fmt = StepFormat.blank_line()
    for i, row in enumerate(rows):
        steps = fmt.split(sft.solution_completion(row, i, "\n\n"))
        assert steps == [s.strip() for s in fmt.split(row["solution"])], f"row {i}: paragraphs changed"
        assert not any(BARE_DELIMITER.match(s) for s in steps), f"row {i}: a bare delimiter step"
    # A newline keeps the line-per-step completions the recipe always wrote.
    assert sft.solution_completion({"solution": "a\n\nb\n c"}, 0) == "a\nb\nc"


def test_a_task_keeps_its_own_separator():
    (args, _, _) = parse(label, ["--task", "arithmetic", "--num_problems", "2", "--separator", "\\n\\n"])
    with pytest.raises(ValueError, match=r"task 'arithmetic' writes steps separated by '\\n'"):
        load_stage_problems(args, "train", args.separator)
    (args, _, _) = parse(label, ["--task", "arithmetic", "--num_problems", "2", "--separator", "\\n"])
    assert load_stage_problems(args, "train", args.separator)[2] == StepFormat()


def test_parse_separator_and_cut_step():
    assert parse_separator("\\n\\n") == "\n\n" and parse_separator("\n\n") == "\n\n"
    assert parse_separator("\\t;") == "\t;" and parse_separator("\\\\") == "\\" and parse_separator("ки") == "ки"
    with pytest.raises(ValueError, match="non-empty"):
        parse_separator("")
    blank = StepFormat.blank_line()
    assert blank.cut_step("x = 2\n") == "x = 2" and blank.cut_step("x\n\n") == "x" and blank.cut_step(" \n") is None
    assert StepFormat(";;").cut_step("a;") == "a" and StepFormat().cut_step("a b") == "a b"


# ---- (b) steps cut at max_step_tokens -----------------------------------------------------------------------------
class FlatScorer:
    """0.5 for every prefix: ranking falls back to sample order."""

    def score(self, prompts, steps):
        return [[0.5] * (len(s) + 1) for s in steps]


def capped_policy(separator: str, chain: dict, cap: int = 4) -> HFPolicy:
    """A char-level Markov LM that never writes the separator: every step runs into `cap` tokens."""
    tok = char_tokenizer()
    model = markov_causal_lm(tok, chain, hidden_size=128)
    return HFPolicy(model, tok, StepFormat(separator), max_new_tokens=64, max_step_tokens=cap)


@pytest.mark.parametrize(
    ("separator", "chain", "step"),
    [
        ("\n", {"\n": {"a": 1.0}, "a": {"a": 1.0}}, "aaaa"),
        # "a\na\n" cut before a blank line: the trailing newline would move the boundary, so it goes.
        ("\n\n", {"\n": {"a": 1.0}, "a": {"\n": 1.0}}, "a\na"),
    ],
)
def test_keep_loses_no_child_cut_at_the_step_limit(separator, chain, step):
    policy = capped_policy(separator, chain)
    cfg = BeamSearchConfig(budget=6, expansions=3, max_depth=3, prover_k=1, truncated_step="keep")
    ledger = ComputeLedger()
    (result,) = beam_search(policy, FlatScorer(), ["Q:1+1?\n"], cfg, ledger)
    assert ledger.sampled_steps == 6 + 6 + 6  # N from the prompt, then B * C per depth
    assert ledger.truncated_kept == ledger.sampled_steps and ledger.truncated_dropped == 0
    assert result.steps == [step] * 3 and not result.answered  # the cut steps carried the beams to max_depth
    policy.step_format.check_steps(result.steps)
    assert ledger.totals()["truncated_kept"] == 18


def test_drop_records_every_child_it_drops():
    policy = capped_policy("\n", {"\n": {"a": 1.0}, "a": {"a": 1.0}})
    ledger = ComputeLedger()
    cfg = BeamSearchConfig(budget=6, expansions=3, max_depth=3, prover_k=1)
    assert cfg.truncated_step == "drop"
    (result,) = beam_search(policy, FlatScorer(), ["Q:1+1?\n"], cfg, ledger)
    assert ledger.sampled_steps == 6 and ledger.truncated_dropped == 6 and ledger.truncated_kept == 0
    assert result.steps == [] and not result.answered  # every beam died at the first step
    with pytest.raises(ValueError, match="truncated_step must be 'drop' or 'keep', got 'cut'"):
        BeamSearchConfig(truncated_step="cut")


def test_search_records_count_truncated_children():
    policy = capped_policy("\n", {"\n": {"a": 1.0}, "a": {"a": 1.0}})
    prompts, golds = ["Q:1+1?\n", "Q:2+2?\n"], ["2", "4"]
    grader = ArithmeticTask().grader
    parts = []
    for truncated_step in ("drop", "keep"):
        cfg = SearchEvalConfig(
            methods=["pav_beam", "majority"], budgets=[3], max_depth=2, prover_k=1, truncated_step=truncated_step
        )
        out = evaluate_search(policy, prompts, golds, grader, cfg, pav=FlatScorer(), show_progress=False)
        beam = out["methods"]["pav_beam"][0]
        assert (
            beam[f"truncated_{truncated_step}ped" if truncated_step == "drop" else "truncated_kept"]
            == (beam["sampled_steps"])
        )
        assert out["methods"]["majority"][0]["truncated_dropped"] == 0  # best-of-N samples whole traces
        parts.append(out)
    assert parts[0]["methods"]["pav_beam"][0]["truncated_dropped"] == 2 * 3
    assert parts[1]["methods"]["pav_beam"][0]["truncated_kept"] == 2 * (3 + 3)
    # Shards add their counts up.
    merged = merge_search_results([parts[1], {**parts[1], "problem_ids": [2, 3]}])
    assert merged["methods"]["pav_beam"][0]["truncated_kept"] == 4 * (3 + 3)
    with pytest.raises(ValueError, match="truncated_step must be 'drop' or 'keep'"):
        SearchEvalConfig(truncated_step="maybe")


# ---- (c) the flags reach the configs ------------------------------------------------------------------------------
def test_label_and_search_parse_the_step_flags(tmp_path):
    common = ["--model_name_or_path", "p", "--dataset_name", "d.jsonl", "--separator", "\\n\\n"]
    script_args, label_config, _ = parse(label, [*common, "--max_step_tokens", "128"])
    assert script_args.separator == "\n\n" and script_args.max_step_tokens == 128 and label_config.n_mc == 20
    argv = [*common, "--max_step_tokens", "128", "--max_depth", "40", "--truncated_step", "keep"]
    script_args, search_config, _ = parse(search_eval, [*argv, "--prm", "Qwen/Qwen2.5-Math-PRM-7B"])
    assert script_args.separator == "\n\n" and script_args.max_step_tokens == 128
    assert search_config.max_depth == 40 and search_config.truncated_step == "keep"
    assert script_args.prm == "Qwen/Qwen2.5-Math-PRM-7B" and script_args.prm_type is None
    # Defaults: the dataset's newline, 64 tokens, cut steps dropped (counted).
    script_args, search_config, _ = parse(search_eval, ["--model_name_or_path", "p", "--task", "arithmetic"])
    assert (script_args.separator, script_args.max_step_tokens, search_config.truncated_step) == (None, 64, "drop")
    # A YAML config: a double-quoted "\n\n" is a blank line already, a single-quoted one is read as escapes.
    for quoted in ('"\\n\\n"', "'\\n\\n'"):
        path = tmp_path / "search.yaml"
        path.write_text(f"model_name_or_path: p\ndataset_name: d.jsonl\nseparator: {quoted}\n")
        assert yaml.safe_load(path.read_text())["separator"] in ("\n\n", "\\n\\n")
        assert parse(search_eval, ["--config", str(path)])[0].separator == "\n\n"
    # RL and verifier training read the same escapes in their step_separator.
    rl_argv = ["--model_name_or_path", "p", "--task", "arithmetic", "--step_separator", "\\n\\n"]
    rl_argv += ["--output_dir", str(tmp_path / "rl"), "--bf16", "false", "--report_to", "none"]
    assert parse(rl, rl_argv)[1].step_separator == "\n\n"


def test_bad_step_flags_name_the_value():
    base = ["--model_name_or_path", "p", "--task", "arithmetic"]
    with pytest.raises(ValueError, match="max_step_tokens must be >= 1, got 0"):
        parse(label, [*base, "--max_step_tokens", "0"])
    with pytest.raises(ValueError, match="separator must be a non-empty string"):
        parse(search_eval, [*base, "--separator", ""])
    with pytest.raises(SystemExit):  # argparse lists the choices
        parse(search_eval, [*base, "--truncated_step", "cut"])
    with pytest.raises(ValueError, match="prm_type must be one of"):
        parse(search_eval, [*base, "--prm", "x", "--prm_type", "qwen"])
    with pytest.raises(ValueError, match=r"prm .* and pav_model_name_or_path .* are both set"):
        parse(search_eval, [*base, "--prm", "x", "--pav_model_name_or_path", "y"])


# ---- a public PRM as the scorer of search ---------------------------------------------------------------------------
def test_convention_of_published_names():
    assert convention_of("Qwen/Qwen2.5-Math-PRM-72B") == "qwen-prm"
    assert convention_of("peiyi9979/math-shepherd-mistral-7b-prm") == "math-shepherd"
    assert convention_of("RLHFlow/Llama3.1-8B-PRM-Mistral-Data") == "rlhflow"
    assert convention_of("/models/prm") is None


@pytest.fixture
def tiny_search_models(tmp_path):
    tok = char_tokenizer()
    policy = tmp_path / "policy"
    tiny_causal_lm(tok, seed=1).save_pretrained(policy)
    tok.save_pretrained(policy)
    prm_model, prm_tok = tiny_public_prm("rlhflow", seed=2)
    prm = tmp_path / "RLHFlow-tiny"  # the name says the convention
    prm_model.save_pretrained(prm)
    prm_tok.save_pretrained(prm)
    return policy, prm


def test_search_with_a_public_prm(tmp_path, tiny_search_models, capsys):
    policy, prm = tiny_search_models
    argv = ["search", "--model_name_or_path", str(policy), "--prm", str(prm), "--task", "arithmetic"]
    argv += ["--num_problems", "2", "--budgets", "3", "--max_depth", "2", "--max_new_tokens", "16"]
    argv += ["--max_step_tokens", "6", "--truncated_step", "keep", "--methods", "pav_beam", "orm_bon", "majority"]
    argv += ["--output_dir", str(tmp_path / "search"), "--verifier_batch_size", "4"]
    main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert set(summary["best_accuracy"]) == {"pav_beam", "orm_bon", "majority"}
    beam, orm = results["methods"]["pav_beam"][0], results["methods"]["orm_bon"][0]
    # The PRM scored the beams and the ORM's candidates; the majority vote reads no verifier.
    assert beam["verifier_tokens"] > 0 and orm["verifier_tokens"] > 0
    assert results["methods"]["majority"][0]["verifier_tokens"] == 0
    assert beam["truncated_dropped"] == 0 and results["config"]["truncated_step"] == "keep"
    assert results["step_settings"] == {"separator": "\n", "max_step_tokens": 6}


def test_search_prm_needs_a_convention(tmp_path, tiny_search_models):
    policy, prm = tiny_search_models
    other = tmp_path / "my-prm"
    prm.rename(other)
    argv = ["search", "--model_name_or_path", str(policy), "--prm", str(other), "--task", "arithmetic"]
    argv += ["--num_problems", "1", "--budgets", "3", "--methods", "pav_beam", "--debug"]
    with pytest.raises(ValueError, match=r"cannot tell the convention of prm .*my-prm.*: set prm_type"):
        main(argv)


def test_prm_reads_the_problem_not_the_policy_chat_prompt():
    prm = RLHFlowPRM(*tiny_public_prm("rlhflow", seed=2))
    wrapped = search_eval._RawPrompts(prm, {"<user>2*3?</user>": "2*3?"})
    steps = [["2*3=6"]]
    assert wrapped.score(["<user>2*3?</user>"], steps) == prm.score(["2*3?"], steps)
    assert wrapped.verifier_tokens == prm.verifier_tokens > 0 and wrapped.step_format == prm.step_format
