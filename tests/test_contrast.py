"""The same-problem ranking term of verifier training (`PAVRewardConfig.contrast_weight`)."""

import itertools
import math

import pytest
import torch
from datasets import Dataset

from trl_pav import PAVRewardConfig, PAVRewardTrainer, grouped_pairwise_loss
from trl_pav.testing import tiny_token_classifier
from trl_pav.trainers import GroupedRowSampler
from trl_pav.values import class_balanced_bce


def brute_force_pairwise(logits, labels, mask, groups):
    """The definition, one pair at a time."""
    reads = [
        (float(logits[b, r]), float(labels[b, r]), int(groups[b]))
        for b in range(logits.shape[0])
        for r in range(logits.shape[1])
        if mask[b, r]
    ]
    num = den = 0.0
    for (li, yi, gi), (lj, yj, gj) in itertools.product(reads, reads):
        if gi == gj and yi > yj:
            num += (yi - yj) * math.log1p(math.exp(-(li - lj)))
            den += yi - yj
    return num / den if den else 0.0


def test_pairwise_loss_matches_its_definition_and_ignores_group_offsets():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    labels = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 3, generator=gen) > 0.3
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    got = float(grouped_pairwise_loss(logits, labels, mask, groups))
    assert got == pytest.approx(brute_force_pairwise(logits, labels, mask, groups), rel=1e-9)
    # A constant per group (how easy the problem is) cannot change it.
    shifted = logits + torch.tensor([5.0, 5.0, -3.0, -3.0, -3.0, 9.0], dtype=torch.float64)[:, None]
    assert float(grouped_pairwise_loss(shifted, labels, mask, groups)) == pytest.approx(got, rel=1e-9)
    # Pairs across groups never count: one read per row, each row its own group, leaves no pair.
    alone, one_read = torch.arange(6), torch.ones(6, 1, dtype=torch.bool)
    assert float(grouped_pairwise_loss(logits[:, :1], labels[:, :1], one_read, alone)) == 0.0
    assert float(grouped_pairwise_loss(logits[:, :1], labels[:, :1], one_read, alone * 0)) > 0.0


def test_pairwise_loss_without_pairs_is_zero_with_gradient():
    logits = torch.zeros(2, 1, requires_grad=True)
    loss = grouped_pairwise_loss(
        logits, torch.tensor([[1.0], [0.0]]), torch.ones(2, 1, dtype=torch.bool), torch.tensor([0, 1])
    )
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_grouped_sampler_keeps_groups_together_and_reshuffles():
    groups = [3, 1, 3, 2, 1, 3, 0, 2]
    sampler = GroupedRowSampler(groups, seed=7)
    first, second = list(sampler), list(sampler)
    for order in (first, second):
        assert sorted(order) == list(range(len(groups)))
        seen = [groups[i] for i in order]
        runs = [g for k, g in enumerate(seen) if k == 0 or g != seen[k - 1]]
        assert len(runs) == len(set(groups))  # each group is one contiguous run
    assert list(GroupedRowSampler(groups, seed=7)) == first  # same seed, same order
    assert any(list(GroupedRowSampler(groups, seed=s)) != first for s in range(8, 14))
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_config_refuses_bad_contrast_weight(tmp_path):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="contrast_weight"):
            PAVRewardConfig(output_dir=str(tmp_path), contrast_weight=bad, report_to="none", use_cpu=True)


@pytest.mark.parametrize("kind", ["pav", "orm"])
def test_trainer_loss_is_pointwise_plus_weighted_pairwise(char_tok, tmp_path, kind):
    rows = [
        {"prompt": "Q:1+2?\n", "completions": ["1+2=3", "#### 3"], "labels": [0.9, 1.0], "seed_outcome": 1.0},
        {"prompt": "Q:1+2?\n", "completions": ["1+2=4", "#### 4"], "labels": [0.1, 0.0], "seed_outcome": 0.0},
        {"prompt": "Q:5-1?\n", "completions": ["5-1=4", "#### 4"], "labels": [0.6, 1.0], "seed_outcome": 1.0},
        {"prompt": "Q:1+2?\n", "completions": ["1+2=3", "#### 3"], "labels": [0.7, 1.0], "seed_outcome": 1.0},
        {"prompt": "Q:5-1?\n", "completions": ["5-1=5", "#### 5"], "labels": [0.2, 0.0], "seed_outcome": 0.0},
    ]
    weight = 0.7
    cfg = PAVRewardConfig(
        output_dir=str(tmp_path),
        kind=kind,
        contrast_weight=weight,
        class_balanced=False,
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=5,
    )
    trainer = PAVRewardTrainer(
        tiny_token_classifier(char_tok, seed=1), cfg, Dataset.from_list(rows), processing_class=char_tok
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["groups"].tolist() in ([0, 0, 0, 1, 1], [1, 1, 0, 0, 0])  # whole prompts, one after the other
    model = trainer.model.eval()
    loss = float(trainer.compute_loss(model, batch).detach())
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., 0]
    read = logits.gather(1, batch["read_positions"])
    labels, mask = batch["read_labels"].clamp(min=0), batch["read_labels"] >= 0
    pointwise = torch.nn.functional.binary_cross_entropy_with_logits(read[mask], labels[mask])
    pairwise = brute_force_pairwise(read, labels, mask, batch["groups"])
    assert pairwise > 0
    assert loss == pytest.approx(float(pointwise) + weight * pairwise, rel=1e-5)
    # Without the term the trainer's loss is the pointwise loss alone, and batches are not grouped.
    cfg.contrast_weight = 0.0
    assert float(trainer.compute_loss(model, batch).detach()) == pytest.approx(float(pointwise), rel=1e-5)
    assert float(class_balanced_bce(read, labels, mask)) > 0
