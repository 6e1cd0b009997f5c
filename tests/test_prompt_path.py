"""One prompt path for every stage: chat-rendered prompts carry exactly one BOS wherever they are tokenized (HF
generation, the verifier, the PRM adapters), the ids equal what TRL's trainers feed the model, conversational datasets
and column mapping load, every adapter reads message-list prompts, and SFT trains on the prompt the other stages
render."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from trl_pav import GenerationRequest, HFPolicy, PAVMetadata, PAVVerifier, StepFormat, load_problems
from trl_pav.datasets_io import is_conversational
from trl_pav.prm_adapters import MathShepherdPRM, QwenMathPRM, RLHFlowPRM, question_text
from trl_pav.testing import TINY_CHAT_TEMPLATE, char_tokenizer, tiny_causal_lm, tiny_public_prm, tiny_token_classifier
from trl_pav.tokenization import adds_bos, prompt_token_ids, without_added_bos
from trl_pav.trainers.pav_reward_trainer import tokenize_stepwise_row

ROOT = Path(__file__).resolve().parents[1]
# Llama 3 / Gemma / Mistral style: the template itself writes BOS before the first turn.
BOS_TEMPLATE = "{{ bos_token }}" + TINY_CHAT_TEMPLATE
MESSAGES = [{"role": "user", "content": "What is 2*3+1?"}]
STEPS = ["2*3=6", "6+1=7"]


def bos_tokenizer(template: str = BOS_TEMPLATE):
    tok = char_tokenizer()  # prepends BOS when it tokenizes with special tokens, as Llama's does
    tok.chat_template = template
    return tok


def trl_prompt_ids(tok, messages) -> list[int]:
    """What TRL's GRPO/SFT trainers feed the model for a conversational prompt."""
    return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"])


def test_the_template_writes_bos_and_plain_tokenization_doubles_it():
    """The bug this file guards against, stated on the tokenizer itself."""
    tok = bos_tokenizer()
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.startswith(tok.bos_token) and adds_bos(tok)
    assert tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2


@pytest.mark.parametrize("template", [BOS_TEMPLATE, TINY_CHAT_TEMPLATE], ids=["bos-template", "no-bos-template"])
def test_prompt_token_ids_of_rendered_prompts_equal_trls(template):
    tok = bos_tokenizer(template)
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt_token_ids(tok, text, rendered=True) == trl_prompt_ids(tok, MESSAGES)
    # Auto: plain text gets its BOS, text that starts with one gets none added.
    auto = prompt_token_ids(tok, text)
    assert auto.count(tok.bos_token_id) == 1 and auto[0] == tok.bos_token_id
    assert prompt_token_ids(tok, "Q:1+1?") == tok("Q:1+1?")["input_ids"]
    assert prompt_token_ids(tok, "Q:1+1?", rendered=False) == tok("Q:1+1?")["input_ids"]
    # Text for code that adds special tokens itself: the template's BOS is left to the tokenizer.
    assert tok(without_added_bos(tok, text))["input_ids"] == auto


class _Recorder:
    """Records the unpadded input ids of every forward pass that starts a generation."""

    def __init__(self, model, pad_id):
        self.rows: list[list[int]] = []
        self.pad_id = pad_id
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if ids.shape[1] > 1:  # the prefill (each later pass feeds one new token)
            if mask is None or mask.shape[1] != ids.shape[1]:
                mask = torch.ones_like(ids)
            self.rows += [row[m.bool()].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("rendered", [None, True], ids=["auto", "rendered_prompts"])
def test_hf_policy_sends_one_bos_for_chat_prompts(rendered):
    """The ids the policy's model sees for a Llama-style chat prompt hold exactly one BOS, equal to TRL's ids for the
    same messages (followed by the steps when continuing a prefix)."""
    tok = bos_tokenizer()
    model = tiny_causal_lm(tok)
    recorder = _Recorder(model, tok.pad_token_id)
    fmt = StepFormat()
    policy = HFPolicy(model, tok, fmt, temperature=0, max_new_tokens=16, rendered_prompts=rendered)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    policy.generate([GenerationRequest(prompt, seed=0), GenerationRequest(prompt, STEPS, seed=1)])
    assert len(recorder.rows) == 2
    by_length = sorted(recorder.rows, key=len)
    expected = trl_prompt_ids(tok, MESSAGES)
    assert by_length[0] == expected
    assert by_length[1] == expected + tok(fmt.join(STEPS) + fmt.separator, add_special_tokens=False)["input_ids"]
    for row in recorder.rows:
        assert row.count(tok.bos_token_id) == 1


def test_hf_policy_rendered_prompts_follow_trl_for_templates_without_bos():
    """A template that writes no BOS: `rendered_prompts=True` adds none (TRL's ids), the default adds the
    tokenizer's; the setting is part of the fingerprint only when given."""
    tok = bos_tokenizer(TINY_CHAT_TEMPLATE)
    model = tiny_causal_lm(tok)
    recorder = _Recorder(model, tok.pad_token_id)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    rendered = HFPolicy(model, tok, temperature=0, max_new_tokens=2, rendered_prompts=True)
    plain = HFPolicy(model, tok, temperature=0, max_new_tokens=2)
    rendered.generate([GenerationRequest(prompt, seed=0)])
    plain.generate([GenerationRequest(prompt, seed=0)])
    assert recorder.rows == [trl_prompt_ids(tok, MESSAGES), tok(prompt)["input_ids"]]
    assert rendered.fingerprint()["rendered_prompts"] is True and "rendered_prompts" not in plain.fingerprint()


def test_verifier_reads_one_bos_for_chat_prompts_in_scoring_and_training():
    """Messages (RL) and the policy-rendered text (search, labels) give the verifier the same ids, with one BOS,
    both when scoring and when its training rows are tokenized."""
    tok = bos_tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata())
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    from_messages = verifier.encode(MESSAGES, STEPS)
    from_text = verifier.encode(rendered, STEPS)
    assert from_messages == from_text
    ids = from_messages.input_ids
    prompt_ids = trl_prompt_ids(tok, MESSAGES)
    assert ids.count(tok.bos_token_id) == 1 and ids[: len(prompt_ids)] == prompt_ids
    assert from_messages.positions[0] == len(prompt_ids) - 1  # the root is read at the prompt's last token
    assert verifier.score([MESSAGES], [STEPS]) == verifier.score([rendered], [STEPS])
    row = {"prompt": rendered, "completions": STEPS, "labels": [0.5, 1.0], "root_value": 0.5}
    train = tokenize_stepwise_row(row, tok, verifier.step_format)
    assert train["input_ids"] == ids


def test_prm_adapters_send_one_bos_with_a_bos_template():
    """Qwen's recipe encodes the template output with special tokens: a template that writes BOS gets no second."""
    model, tok = tiny_public_prm("qwen-prm")
    tok.chat_template = BOS_TEMPLATE
    ids, positions = QwenMathPRM(model, tok)._encode("1+1?", ["1+1=2", "#### 2"])
    assert ids.count(tok.bos_token_id) == 1 and len(positions) == 2
    model, tok = tiny_public_prm("rlhflow")
    tok.chat_template = BOS_TEMPLATE
    ids, positions = RLHFlowPRM(model, tok)._encode("1+1?", ["1+1=2", "#### 2"])
    assert ids.count(tok.bos_token_id) == 1 and len(positions) == 2
    model, tok = tiny_public_prm("math-shepherd")
    ids, _ = MathShepherdPRM(model, tok)._encode("1+1?", ["1+1=2"])
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the model card's BOS, once


@pytest.mark.parametrize("adapter", [QwenMathPRM, MathShepherdPRM, RLHFlowPRM], ids=lambda a: a.__name__)
def test_every_adapter_reads_message_list_prompts(adapter):
    """RL with a chat template passes `[{"role": "user", "content": q}]`: it scores as the question `q` itself; a
    system turn of the policy's does not reach the plain-text conventions."""
    convention = {QwenMathPRM: "qwen-prm", MathShepherdPRM: "math-shepherd", RLHFlowPRM: "rlhflow"}[adapter]
    prm = adapter(*tiny_public_prm(convention, seed=1))
    steps = [["2*3=6", "6+1=7"], ["2*3=5"]]
    question = "What is 2*3+1?"
    as_text = prm.score([question, question], steps)
    as_chat = prm.score([[{"role": "user", "content": question}]] * 2, steps)
    assert as_chat == as_text and len(as_text[0]) == 3
    if adapter is not QwenMathPRM:  # Qwen renders a chat prompt's own system turn, as its template does
        with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
        assert prm.score([with_system], steps[:1]) == as_text[:1]
    with pytest.raises(TypeError, match="message 0 must be a dict with a 'role'"):
        prm.score([["not a message"]], steps[:1])
    if adapter is not QwenMathPRM:
        with pytest.raises(ValueError, match="needs a user message"):
            prm.score([[{"role": "system", "content": "x"}]], steps[:1])


def test_question_text():
    assert question_text("1+1?") == "1+1?"
    chat = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "?"},
        {"role": "user", "content": "q"},
    ]
    assert question_text(chat) == "q"
    with pytest.raises(TypeError, match=r"message 0 .* must have string 'content'"):
        question_text([{"role": "user", "content": None}])


def test_load_problems_column_mapping_and_conversational_prompts():
    rows = [
        {"query": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}], "final": 2},
        {"query": [{"role": "user", "content": "2+2?"}], "final": 4},
    ]
    problems = load_problems(Dataset.from_list(rows), prompt_column="query", answer_column="final")
    assert problems["prompt"] == [row["query"] for row in rows] and problems["gold"] == ["2", "4"]
    assert "query" not in problems.column_names and is_conversational(problems)
    # A string problem column goes into the template; an answer column gives its boxed / #### answer.
    text = Dataset.from_list([{"q": "1+1?", "sol": "So $\\boxed{2}$."}, {"q": "3?", "sol": "3\n#### 3"}])
    problems = load_problems(text, prompt_column="q", answer_column="sol", template="Q: {problem}")
    assert problems["prompt"] == ["Q: 1+1?", "Q: 3?"] and problems["gold"] == ["2", "3"]
    assert not is_conversational(problems)


def test_load_problems_bad_columns_and_messages_name_row_and_field():
    data = Dataset.from_list([{"problem": "1+1?", "answer": "2"}])
    with pytest.raises(ValueError, match="prompt column 'query' is not a column of the problems; found"):
        load_problems(data, prompt_column="query")
    with pytest.raises(ValueError, match="answer column 'final' is not a column"):
        load_problems(data, answer_column="final")
    no_user = Dataset.from_list([{"prompt": [{"role": "system", "content": "hi"}], "gold": "2"}])
    with pytest.raises(ValueError, match="row 0: field 'prompt' has no user message"):
        load_problems(no_user)
    bad = [
        {"prompt": [{"role": "user", "content": "1+1?"}], "gold": "2"},
        {"prompt": [{"role": "user", "content": None}], "gold": "2"},
    ]
    with pytest.raises(ValueError, match="row 1: field 'prompt', message 0 needs string 'role' and 'content'"):
        load_problems(Dataset.from_list(bad))
    with pytest.raises(ValueError, match="row 0: field 'question' must be a non-empty string or a list of chat"):
        load_problems(Dataset.from_list([{"question": "  ", "answer": "1"}]))


def test_load_problems_gold_is_text_and_bad_settings_are_named():
    from trl_pav import MathVerifyGrader

    # A numeric gold column becomes a text column (graders compare text); a grader then credits the right answer.
    problems = load_problems(Dataset.from_list([{"prompt": "2+3?", "gold": 5}, {"prompt": "6*2?", "gold": 12}]))
    assert problems.features["gold"].dtype == "string" and problems["gold"] == ["5", "12"]
    assert MathVerifyGrader().grade("So \\boxed{5}", problems[0]["gold"]) == 1.0
    # A numeric gold column beside the answer column is rewritten as text too.
    rows = [{"question": "1+1?", "answer": "so\n#### 2", "gold": 2}]
    problems = load_problems(Dataset.from_list(rows), answer_column="answer")
    assert problems.features["gold"].dtype == "string" and problems["gold"] == ["2"]
    with pytest.raises(ValueError, match="row 1: field 'gold' is nan, not a usable answer"):
        load_problems(Dataset.from_list([{"prompt": "a?", "gold": 1.0}, {"prompt": "b?", "gold": float("nan")}]))
    data = Dataset.from_list([{"problem": "1+1?", "answer": "2"}])
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_problems(data, limit=-1)
    with pytest.raises(ValueError, match="write literal braces twice"):
        load_problems(data, template="Put it in \\boxed{}.\n{problem}")
    with pytest.raises(ValueError, match=r"template must contain '\{problem\}'"):
        load_problems(data, template="Solve it.")
    assert load_problems(data, template="In \\boxed{{}}: {problem}")["prompt"] == ["In \\boxed{}: 1+1?"]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_stage_flags_map_columns_and_conversational_data_needs_the_chat_template(tmp_path):
    """`--dataset_prompt_column` / `--dataset_answer_column` reach `load_problems`; conversational prompts without
    `--use_chat_template` stop with a clear error; with it, labeling renders them through the template."""
    from trl_pav.scripts import label
    from trl_pav.scripts.common import chat_prompts, load_stage_problems

    data = _write_jsonl(tmp_path / "chat.jsonl", [{"conv": [{"role": "user", "content": "1+1?"}], "ref": "2"}] * 2)
    argv = ["--dataset_name", data, "--dataset_prompt_column", "conv", "--dataset_answer_column", "ref"]
    argv += ["--model_name_or_path", "x"]
    args, _, _ = label.make_parser().parse_args_and_config(args=argv)
    with pytest.raises(ValueError, match=r"the prompts are chat messages .* set use_chat_template"):
        load_stage_problems(args, "train")
    args.use_chat_template = True
    problems, _, _ = load_stage_problems(args, "train")
    assert problems["gold"] == ["2", "2"] and problems["prompt"][0] == [{"role": "user", "content": "1+1?"}]
    tok = bos_tokenizer()
    assert chat_prompts(problems, tok)["prompt"][0] == tok.apply_chat_template(
        problems["prompt"][0], tokenize=False, add_generation_prompt=True
    )
    assert chat_prompts(problems)["prompt"] == problems["prompt"]  # RL: the messages, as TRL takes them


def test_label_recipe_on_a_conversational_dataset(tmp_path):
    """End to end: a conversational dataset with mapped columns is labeled through the policy's chat template
    (validated as rendered text, not refused as a non-string prompt)."""
    from trl_pav.cli import main as cli
    from trl_pav.labeling import load_labels

    tok = bos_tokenizer()
    policy = tmp_path / "policy"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"conv": MESSAGES, "ref": "7"}])
    argv = ["--model_name_or_path", str(policy), "--dataset_name", data, "--dataset_prompt_column", "conv"]
    argv += ["--dataset_answer_column", "ref", "--use_chat_template", "true", "--max_new_tokens", "48"]
    argv += ["--n_cov", "4", "--n_mc", "1", "--show_progress", "false", "--output_dir", str(tmp_path / "labels")]
    cli(["label", *argv])
    dataset, meta = load_labels(tmp_path / "labels")
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert meta["seed_traces"] == 4 and set(dataset["prompt"]) == {rendered}


def test_sft_with_chat_template_trains_on_the_prompt_other_stages_render(tmp_path, monkeypatch, math500_path):
    """`trl-pav sft --use_chat_template`: conversational prompt/completion rows; the prompt tokens SFT trains
    behind are exactly the ids the policy is sampled from in labeling, search and RL (one BOS)."""
    import trl

    from trl_pav.cli import main as cli

    seen = {}

    class Recording(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainer"] = self

    monkeypatch.setattr(trl, "SFTTrainer", Recording)
    tok = bos_tokenizer()
    policy = tmp_path / "policy"
    tiny_causal_lm(tok).save_pretrained(policy)
    tok.save_pretrained(policy)
    argv = ["sft", "--model_name_or_path", str(policy), "--dataset_name", math500_path, "--num_problems", "2"]
    argv += ["--use_chat_template", "true", "--max_steps", "1", "--per_device_train_batch_size", "2"]
    argv += ["--max_length", "4096", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no"]
    cli([*argv, "--output_dir", str(tmp_path / "sft")])
    train = seen["trainer"].train_dataset
    problems = load_problems(math500_path, limit=2)
    for row, problem in zip(train, problems):
        messages = [{"role": "user", "content": problem["prompt"]}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = prompt_token_ids(tok, rendered, rendered=True)
        prompt_len = next(t for t, label in enumerate(row["labels"]) if label != -100)  # completion-only loss
        assert row["input_ids"][:prompt_len] == expected and row["input_ids"].count(tok.bos_token_id) == 1
        completion = tok.decode(row["input_ids"][prompt_len:])
        assert completion.rstrip().endswith("<|end|>") and "\\boxed{" in completion
    # A tokenizer without a chat template is refused before any model is loaded.
    tok.chat_template = None
    tok.save_pretrained(policy)
    (policy / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(SystemExit, match="no chat template"):
        cli([*argv, "--output_dir", str(tmp_path / "sft2")])


STAGES_THAT_PROMPT = ("sft", "label", "search_eval", "rl_pav", "rl_ppo")


@pytest.mark.parametrize("stage", STAGES_THAT_PROMPT)
def test_math_configs_send_the_instruct_model_chat_prompts(stage):
    """The MATH 1.5B pipeline starts from Qwen2.5-Math-1.5B-Instruct: every stage that prompts its policy renders
    the problem through its chat template (the same prompt text and ids in sft, label, search and RL)."""
    sft = yaml.safe_load((ROOT / "recipes" / "configs" / "math_1.5b" / "sft.yaml").read_text())
    assert "Instruct" in sft["model_name_or_path"]
    config = yaml.safe_load((ROOT / "recipes" / "configs" / "math_1.5b" / f"{stage}.yaml").read_text())
    assert config.get("use_chat_template") is True


def test_real_chat_tokenizer_ids_equal_trls_in_every_mode(bpe_tok):
    """SmolLM2's real BPE tokenizer and chat template (no BOS written, none added): the policy's ids, the verifier's
    and TRL's agree whatever `rendered_prompts` says, so the rule changes nothing where there was no double BOS."""
    text = bpe_tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    expected = trl_prompt_ids(bpe_tok, MESSAGES)
    assert [prompt_token_ids(bpe_tok, text, r) for r in (None, True, False)] == [expected] * 3
    assert bpe_tok(without_added_bos(bpe_tok, text))["input_ids"] == expected
