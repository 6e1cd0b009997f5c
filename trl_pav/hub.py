"""Hub cards: the verifier's model card and the labels' dataset card, built with `huggingface_hub`'s card classes.

The model card is what `PAVVerifier.save_pretrained`, `PAVRewardTrainer.save_model` and `PAVRewardTrainer.push_to_hub`
(through `create_model_card`) write, so every save and push keeps the same card: YAML metadata (`library_name`, tags
`trl`, `trl-pav`, `process-reward-model`, `model-index` with the held-out metrics, the dataset and the base model only
when they are Hub ids), what the model predicts, how to score with trl_pav and with plain transformers, the citation.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from .modeling import PAVMetadata

__all__ = [
    "CARD_EXAMPLE",
    "SETLUR_2024_BIBTEX",
    "card_example",
    "is_hub_id",
    "labels_dataset_card",
    "pav_model_card",
    "pav_trainer_paper",
    "push_labels_to_hub",
]

SETLUR_2024_BIBTEX = """@article{setlur2024rewarding,
    title   = {{Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning}},
    author  = {Amrith Setlur and Chirag Nagpal and Adam Fisch and Xinyang Geng and Jacob Eisenstein and Rishabh Agarwal
               and Alekh Agarwal and Jonathan Berant and Aviral Kumar},
    year    = 2024,
    journal = {arXiv preprint arXiv:2410.08146}
}"""


def pav_trainer_paper(parent_paper: dict[str, str]) -> dict[str, str]:
    """A TRL trainer's `_paper` entry for its PAV variant: Setlur et al. 2024 as the paper, both citations kept.

    Example:
        >>> pav_trainer_paper({"citation": "@article{x}"})["id"]
        '2410.08146'
    """
    citations = [SETLUR_2024_BIBTEX, parent_paper.get("citation", "")]
    return {
        "title": "Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning",
        "id": "2410.08146",
        "citation": "\n\n".join(c for c in citations if c),
    }


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """True for an `owner/name` repository id that is not a local path (local paths never go into card metadata).

    Example:
        >>> is_hub_id("Qwen/Qwen2.5-0.5B"), is_hub_id("/tmp/policy"), is_hub_id("outputs/policy"), is_hub_id("")
        (True, False, False, False)
    """
    if not name:
        return False
    name = str(name)
    return bool(_HUB_ID.match(name)) and not os.path.exists(name) and not name.startswith(("outputs/", "./", "../"))


_SCORING_SNIPPET = """```python
import torch
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerFast

repo = "{repo}"
model = AutoModelForTokenClassification.from_pretrained(repo).eval()
tokenizer = PreTrainedTokenizerFast.from_pretrained(repo)
prompt, steps = {prompt!r}, {steps!r}

# Read rule: the prompt (with special tokens) and each step segment (separator + step, no special tokens) are
# tokenized separately; the value is read at the last token holding a character of each segment.
ids, reads = [], []
for h, segment in enumerate([prompt] + [({separator!r} if h else "") + s for h, s in enumerate(steps)]):
    enc = tokenizer(segment, add_special_tokens=(h == 0), return_offsets_mapping=True)
    last = max(t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > a)
    reads.append(len(ids) + last)
    ids += enc["input_ids"]
"""

# How the one-label head's values are read at those positions.
_SCALAR_READ = """with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0, :, 0]
q = torch.sigmoid(logits[reads]).tolist()  # [Q root, Q after step 1, ...]
```"""

# The likelihood head's read rule: the same reads; the outputs are the LM head's V logits and one value logit.
_LIKELIHOOD_READ = """with torch.no_grad():
    out = model(input_ids=torch.tensor([ids])).logits[0].double()
# log p of each token under the kept LM head (position t-1 predicts token t); prompt tokens do not count
token_logp = torch.log_softmax(out[:-1, :-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
token_logp = torch.cat([torch.zeros(1, dtype=token_logp.dtype), token_logp])
token_logp[: reads[0] + 1] = 0.0
least = torch.cummin(token_logp, 0).values  # the least likely completion token so far
q = torch.sigmoid(out[:, -1] + least)[reads].tolist()  # [Q root, Q after step 1, ...]
```"""


# The usage example of a card: a generic problem in MATH's answer format, no task's own prompt layout.
CARD_EXAMPLE = (
    "What is 3 * 4 + 5? Put the final answer in \\boxed{}.",
    ["First, 3 * 4 = 12.", "Then 12 + 5 = 17, so the answer is \\boxed{17}."],
)


def card_example(separator: str, example: tuple[str, list[str]] = CARD_EXAMPLE) -> tuple[str, list[str]]:
    """`example` as steps the checkpoint's step format reads back as they are: a step holding the `separator` has it
    removed (so that joining and splitting at the separator gives the same steps).

    Example:
        >>> card_example("\\n\\n")[1][0]
        'First, 3 * 4 = 12.'
        >>> card_example(". ")[1]
        ['First, 3 * 4 = 12.', 'Then 12 + 5 = 17, so the answer is \\\\boxed{17}.']
        >>> card_example(" ")[1][0]
        'First,3*4=12.'
    """
    prompt, steps = example
    return prompt, [step.replace(separator, "") for step in steps]


def pav_model_card(
    metadata: PAVMetadata,
    repo_id: str | None = None,
    dataset: str | None = None,
    example: tuple[str, list[str]] | None = None,
    extra_tags: list[str] | None = None,
) -> ModelCard:
    """The verifier's model card.

    Args:
        metadata: the checkpoint's `PAVMetadata` (prover, target, kind, step format, metrics, base model).
        repo_id: the Hub repository (shown in the usage code; a placeholder otherwise).
        dataset: the training dataset (listed in the metadata only when it is a Hub id).
        example: a prompt and steps for the usage code (e.g. a training row). `None`: a generic problem
            (`CARD_EXAMPLE`) with steps written for the checkpoint's own step separator.
        extra_tags: more tags.

    Example:
        >>> from trl_pav.modeling import PAVMetadata
        >>> card = pav_model_card(PAVMetadata(base_model="/tmp/x", metrics={"eval_auc": 0.9}))
        >>> card.data.base_model is None, "trl-pav" in card.data.tags, card.data.eval_results[0].metric_value
        (True, True, 0.9)
    """
    m = metadata
    what = "process advantage verifier (PAV)" if m.kind == "pav" else "outcome reward model (ORM)"
    predicts = "the base policy's success probability Q^π" if m.target == "q_pi" else "a prover policy's Q^μ"
    prover = f"Best-of-{m.prover_k} of the base policy" if m.target == "q_pi" else "a separate prover policy"
    dataset_id = dataset if is_hub_id(dataset) else None
    name = repo_id.split("/")[-1] if repo_id else "pav-verifier"
    eval_results = [
        EvalResult(
            task_type="token-classification",
            task_name="step value estimation",
            dataset_type=dataset_id or "held-out-stepwise",
            dataset_name=dataset_id or "held-out stepwise traces",
            metric_type=k.removeprefix("eval_"),
            metric_name=k,
            metric_value=v,
        )
        for k, v in m.metrics.items()
        if isinstance(v, (int, float))
        and k not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
        and k != "epoch"
    ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=sorted({"trl", "trl-pav", "process-reward-model", m.kind, *(extra_tags or [])}),
        base_model=m.base_model if is_hub_id(m.base_model) else None,
        datasets=[dataset_id] if dataset_id else None,
        model_name=name,
        eval_results=eval_results or None,
    )
    metrics = "\n".join(
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in m.metrics.items()
    )
    separator = m.step_format.get("separator", "\n")
    example = card_example(separator) if example is None else example
    snippet = _SCORING_SNIPPET.format(
        repo=repo_id or "<this repo or folder>", prompt=example[0], steps=example[1], separator=separator
    )
    head = "one label; the sigmoid of its logit"
    snippet += _LIKELIHOOD_READ if m.likelihood_head else _SCALAR_READ
    if m.likelihood_head:
        head = (
            "its LM head kept as the first V outputs and a value output last; the sigmoid of the value logit plus "
            "the log-probability of the least likely completion token so far"
        )
    content = f"""---
{data.to_yaml()}
---

# {name}: a {what}

Trained with trl_pav, process advantage verifiers on TRL (Setlur et al. 2024, arXiv 2410.08146). An
`AutoModelForTokenClassification` with {head} at the end of the prompt and of every step estimates {predicts}.

| field | value |
|---|---|
| base model | `{m.base_model or "not recorded"}` |
| step separator | `{separator!r}` |
| prover | {prover} |
| kind | `{m.kind}` |
| read position | {getattr(m, "read_position", "")} |
| training max_length | {getattr(m, "max_length", None)} |
| metadata format | {getattr(m, "format_version", 1)} (trl_pav {getattr(m, "trl_pav_version", "") or "unknown"}) |

## Held-out metrics

| metric | value |
|---|---|
{metrics or "| (none recorded) | |"}

## Use with trl_pav

```python
from trl_pav import PAVVerifier

verifier = PAVVerifier.from_pretrained("{repo_id or "<this repo or folder>"}")
q = verifier.score([{example[0]!r}], [{example[1]!r}])           # [[Q root, Q step 1, Q step 2]]
a = verifier.advantages([{example[0]!r}], [{example[1]!r}])      # Best-of-K prover advantages per step
reward = verifier.as_reward_func()                  # a `reward_funcs` entry for any TRL trainer
```

## Use with plain transformers

{snippet}

## Citation

```bibtex
{SETLUR_2024_BIBTEX}
```
"""
    return ModelCard(content)


def labels_dataset_card(metadata: dict[str, Any], repo_id: str | None = None) -> DatasetCard:
    """The dataset card of Monte-Carlo labels: labeling config, rollout budget and fingerprint from `metadata.json`.

    Example:
        >>> card = labels_dataset_card({"config": {"n_mc": 20}, "rollouts": 400, "fingerprint": "ab12"})
        >>> "ab12" in card.text and "process-reward-model" in card.data.tags
        True
    """
    config = metadata.get("config", {})
    budget_keys = [k for k in metadata if k not in ("config",)]
    data = DatasetCardData(
        tags=["trl", "trl-pav", "process-reward-model", "stepwise-supervision"],
        pretty_name=(repo_id.split("/")[-1] if repo_id else "PAV step labels"),
    )
    budget = "\n".join(f"| {k} | {json.dumps(metadata[k])} |" for k in budget_keys)
    configuration = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in config.items())
    content = f"""---
{data.to_yaml()}
---

# Monte-Carlo step labels for a process advantage verifier

Written by trl_pav's `MCLabeler` (Setlur et al. 2024, arXiv 2410.08146). One row per trace: `prompt`, `completions`
(the steps), `labels` (the fraction of rollouts from each step's prefix that reach a correct answer: an estimate of
`Q^π`), with provenance columns (root value, rollouts per label, seed outcome, gold answer, prover, policy).
Train a verifier on it with `PAVRewardTrainer` or `trl-pav train-pav` (a labels id has one `train` split:
`eval_fraction` holds prompts out of it for evaluation):

```bash
trl-pav train-pav --model_name_or_path <backbone> --dataset_name {repo_id or "<this dataset>"} --eval_fraction 0.02
```

Fingerprint: `{metadata.get("fingerprint", "not recorded")}` (same fingerprint, same labeling configuration and
problems).

## Labeling configuration

| field | value |
|---|---|
{configuration or "| (not recorded) | |"}

## Budget and provenance

| field | value |
|---|---|
{budget or "| (not recorded) | |"}

## Citation

```bibtex
{SETLUR_2024_BIBTEX}
```
"""
    return DatasetCard(content)


def push_labels_to_hub(dataset, metadata: dict[str, Any], repo_id: str, **kwargs: Any) -> None:
    """Push labels and their dataset card (configuration, budget, fingerprint) to the Hub dataset `repo_id`."""
    dataset.push_to_hub(repo_id, **kwargs)
    token = kwargs.get("token")
    labels_dataset_card(metadata, repo_id).push_to_hub(repo_id, repo_type="dataset", token=token)
