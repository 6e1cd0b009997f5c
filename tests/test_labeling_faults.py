"""Labeling under faults: interrupted at random points, shards corrupted, resumed with other settings.

A resumed run must give exactly the dataset of an uninterrupted one, redo (and name) any shard it cannot read, and
refuse to mix shards written under other settings (sampling settings, policy weights, grader).
"""

import json
import random

import pytest
import torch

from trl_pav.generation import HFPolicy
from trl_pav.labeling import LabelingConfigMismatch, MCLabelConfig, MCLabeler, load_labels
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
from trl_pav.testing import tiny_causal_lm

TASK = ArithmeticTask(min_ops=2, max_ops=3)
PROBLEMS = TASK.problems_dataset(6, seed=4)


def config(**kw):
    return MCLabelConfig(n_cov=2, n_mc=4, shard_size=1, seed=3, show_progress=False, **kw)


class Killed(BaseException):
    """Stands for SIGKILL: not an `Exception`, so no handler on the way catches it."""


class KilledAt(NoisyArithmeticPolicy):
    """The policy of the reference run, dying at its `kill_at`-th generate call (private attributes: they are
    not settings of the policy, so they stay out of the labeling fingerprint)."""

    def __init__(self, kill_at: int | None = None):
        super().__init__(TASK, 0.25)
        self._kill_at, self._calls = kill_at, 0

    @property
    def calls(self) -> int:
        return self._calls

    def generate(self, requests, stop_at_step=False):
        self._calls += 1
        if self._calls == self._kill_at:
            raise Killed
        return super().generate(requests, stop_at_step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its dataset and how many generate calls it made."""
    policy = KilledAt()
    out = tmp_path_factory.mktemp("clean")
    dataset = MCLabeler(policy, TASK.grader, config()).label(PROBLEMS, out)
    return dataset.to_list(), policy.calls


@pytest.mark.parametrize("seed", range(4))
def test_killed_at_a_random_point_then_resumed_equals_uninterrupted(reference, tmp_path, seed):
    rows, calls = reference
    kill_at = random.Random(seed).randrange(2, calls)
    with pytest.raises(Killed):
        MCLabeler(KilledAt(kill_at), TASK.grader, config()).label(PROBLEMS, tmp_path)
    finished = len(list((tmp_path / "shards").glob("shard-*.json")))
    assert finished < len(PROBLEMS) and not (tmp_path / "dataset").exists()
    resumed = MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path)
    assert resumed.to_list() == rows
    assert load_labels(tmp_path)[1]["shards_found_finished"] == finished


@pytest.mark.parametrize("damage", ["truncated", "empty", "other shard"])
def test_corrupt_shard_is_named_and_redone(reference, tmp_path, caplog, damage):
    rows, _ = reference
    MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path)
    shard = tmp_path / "shards" / "shard-00002.json"
    text = shard.read_text()
    shard.write_text(
        {
            "truncated": text[: len(text) // 2],
            "empty": "",
            "other shard": (tmp_path / "shards" / "shard-00004.json").read_text(),
        }[damage]
    )
    policy = KilledAt()
    resumed = MCLabeler(policy, TASK.grader, config()).label(PROBLEMS, tmp_path)
    assert f"labeling shard {shard} is unreadable" in caplog.text
    assert resumed.to_list() == rows
    assert load_labels(tmp_path)[1]["shards_found_finished"] == len(PROBLEMS) - 1  # only the damaged one redone
    assert policy.calls > 0


def test_corrupt_manifest_is_named(tmp_path):
    MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path)
    (tmp_path / "manifest.json").write_text('{"fingerprint": ')
    with pytest.raises(LabelingConfigMismatch, match=r"manifest.json is unreadable"):
        MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path)


def test_procedural_policy_settings_are_part_of_the_fingerprint(tmp_path):
    MCLabeler(NoisyArithmeticPolicy(TASK, 0.25), TASK.grader, config()).label(PROBLEMS, tmp_path)
    with pytest.raises(LabelingConfigMismatch, match=r"policy.error_rate: 0.25 -> 0.5"):
        MCLabeler(NoisyArithmeticPolicy(TASK, 0.5, name="noisy-arithmetic-p0.25"), TASK.grader, config()).label(
            PROBLEMS, tmp_path
        )


def test_the_planted_string_is_part_of_the_fingerprint(tmp_path):
    """Every planted problem has the same prompt, so only the task's planted string tells two runs apart."""
    from trl_pav.tasks import PlantedProverPolicy, PlantedTask

    first, other = PlantedTask(vocab_size=4, length=5, planted=(0, 1, 2)), PlantedTask(4, 5, (3, 3, 3))
    cfg = MCLabelConfig(n_cov=1, n_mc=4, strategy="all", show_progress=False)
    MCLabeler(PlantedProverPolicy(first, 5.0), first.grader, cfg).label(first.problems_dataset(2), tmp_path)
    with pytest.raises(LabelingConfigMismatch, match=r"planted: \[0, 1, 2\] -> \[3, 3, 3\]"):
        MCLabeler(PlantedProverPolicy(other, 5.0), other.grader, cfg).label(other.problems_dataset(2), tmp_path)


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, char_tok):
    """A finished labeling run of a tiny HF policy at temperature 1.0 (6 new tokens per rollout)."""
    model = tiny_causal_lm(char_tok)
    out = tmp_path_factory.mktemp("hf")
    problems = TASK.problems_dataset(2, seed=1)
    cfg = MCLabelConfig(n_cov=1, n_mc=2, strategy="all", show_progress=False)
    policy = HFPolicy(model, char_tok, TASK.step_format, name="policy-dir", temperature=1.0, max_new_tokens=6)
    dataset = MCLabeler(policy, TASK.grader, cfg).label(problems, out)
    return model, problems, cfg, out, dataset


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 0.3}, r"policy.temperature: 1.0 -> 0.3"),
        ({"max_new_tokens": 12}, r"policy.max_new_tokens: 6 -> 12"),
        ({"max_step_tokens": 8}, r"policy.max_step_tokens: 64 -> 8"),
    ],
)
def test_resume_refuses_other_sampling_settings(hf_run, char_tok, change, message):
    model, problems, cfg, out, _ = hf_run
    settings = {"temperature": 1.0, "max_new_tokens": 6, **change}
    policy = HFPolicy(model, char_tok, TASK.step_format, name="policy-dir", **settings)
    with pytest.raises(LabelingConfigMismatch, match=message):
        MCLabeler(policy, TASK.grader, cfg).label(problems, out)


def test_resume_refuses_other_weights_under_the_same_name(hf_run, char_tok):
    model, problems, cfg, out, dataset = hf_run
    same = HFPolicy(model, char_tok, TASK.step_format, name="policy-dir", temperature=1.0, max_new_tokens=6)
    assert MCLabeler(same, TASK.grader, cfg).label(problems, out).to_list() == dataset.to_list()
    retrained = tiny_causal_lm(char_tok)
    retrained.load_state_dict(model.state_dict())
    with torch.no_grad():
        retrained.lm_head.weight[0, 0] += 1e-3  # tied to the embeddings: one weight of the checkpoint changed
    policy = HFPolicy(retrained, char_tok, TASK.step_format, name="policy-dir", temperature=1.0, max_new_tokens=6)
    with pytest.raises(LabelingConfigMismatch, match=r"policy.weights: "):
        MCLabeler(policy, TASK.grader, cfg).label(problems, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["policy"]["temperature"] == 1.0 and len(manifest["settings"]["policy"]["weights"]) == 32


def test_killed_between_writing_a_shard_and_renaming_it(reference, tmp_path, monkeypatch):
    import trl_pav.labeling as labeling

    rows, _ = reference
    real_replace = labeling.os.replace

    def dying_replace(src, dst):
        if str(dst).endswith("shard-00003.json"):
            raise Killed
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(labeling.os, "replace", dying_replace)
        with pytest.raises(Killed):
            MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path)
    assert (tmp_path / "shards" / "shard-00003.json.tmp").exists()
    assert not (tmp_path / "shards" / "shard-00003.json").exists()
    assert MCLabeler(KilledAt(), TASK.grader, config()).label(PROBLEMS, tmp_path).to_list() == rows
