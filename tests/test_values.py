import itertools
import math

import pytest
import torch

from trl_pav import (
    best_of_k,
    broadcast_step_values,
    class_balanced_bce,
    dense_advantages,
    distinguishability,
    effective_reward,
    leave_one_out_advantages,
    prover_advantages,
    prover_alignment,
    step_advantages,
)

Q = torch.linspace(0, 1, 21, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 16, 32])
def test_best_of_k_matches_probability_of_any_success(k):
    # Exact: P(at least one of K independent tries succeeds) by summing over all outcomes for small K.
    if k <= 8:
        for q in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
            exact = sum(q ** sum(o) * (1 - q) ** (k - sum(o)) for o in itertools.product([0, 1], repeat=k) if any(o))
            assert best_of_k(torch.tensor(q, dtype=torch.float64), k).item() == pytest.approx(exact, abs=1e-12)
    out = best_of_k(Q, k)
    assert torch.all(out >= Q - 1e-12)  # a BoK prover is never weaker
    assert torch.all(out[1:] >= out[:-1])  # and monotone in q
    assert out[0] == 0 and out[-1] == 1


def test_best_of_k_identity_and_errors():
    assert torch.equal(best_of_k(Q, 1), Q)
    for bad in (0, 0.5, -1, "4", None):
        with pytest.raises(ValueError, match="prover K"):
            best_of_k(Q, bad)


def test_prover_advantages_hand_computed():
    q = torch.tensor([[0.5, 0.75, 0.0, 0.0], [0.2, 0.2, 0.6, 1.0]])
    a1 = prover_advantages(q, 1)
    assert torch.allclose(a1, torch.tensor([[0.25, -0.75, 0.0], [0.0, 0.4, 0.4]]))
    a2 = prover_advantages(q, 2)
    # f(q) = 1 - (1-q)^2: 0.75, 0.9375, 0, 0 / 0.36, 0.36, 0.84, 1
    assert torch.allclose(a2, torch.tensor([[0.1875, -0.9375, 0.0], [0.0, 0.48, 0.16]]))
    # Advantages telescope to the change from root to end: one-step terms, not returns.
    assert torch.allclose(a2.sum(-1), best_of_k(q[:, -1], 2) - best_of_k(q[:, 0], 2))
    masked = prover_advantages(q, 2, step_mask=torch.tensor([[True, True, False], [True, False, False]]))
    assert torch.allclose(masked, torch.tensor([[0.1875, -0.9375, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="root value"):
        step_advantages(torch.tensor([0.3]))


def test_effective_reward_figure2_example():
    # Paper Fig. 2: a child losing 0.05 from a 0.8-value parent vs a child gaining 0.20 from a 0.5-value parent.
    q_children = torch.tensor([0.75, 0.70])
    adv = torch.tensor([-0.05, 0.20])
    assert torch.argmax(effective_reward(q_children, adv, alpha=0.0)) == 0  # Q-only keeps the high-value parent
    assert torch.argmax(effective_reward(q_children, adv, alpha=0.5)) == 1  # progress wins with the process term
    assert torch.allclose(effective_reward(q_children, adv, 0.5), torch.tensor([0.725, 0.80]))


def test_diagnostics():
    q_pi = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.3, 0.3]], dtype=torch.float64)
    for k in (1, 2, 4, 32):
        q_mu = best_of_k(q_pi, k)
        d = distinguishability(q_mu)
        assert torch.allclose(d, ((q_mu - q_mu.mean(-1, keepdim=True)) ** 2).mean(-1))
        al = prover_alignment(q_mu, q_pi)
        assert torch.all(al >= -1e-15)  # BoK provers are never misaligned
        assert al[1] == 0 and d[1] == 0
    assert torch.allclose(prover_alignment(q_pi, q_pi), distinguishability(q_pi))
    # Distinguishability is not monotone in K: it vanishes when the prover always (K -> inf) succeeds.
    d = [distinguishability(best_of_k(q_pi[0], k)).item() for k in (1, 2, 4, 64, 1024)]
    assert d[-1] < d[1] and d[-1] < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        prover_alignment(q_pi, q_pi[:, :2])


def test_leave_one_out():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    adv = leave_one_out_advantages(r, 3)
    assert torch.allclose(adv, torch.tensor([1.0, -0.5, -0.5, 0.5, 0.5, -1.0], dtype=torch.float64))
    assert torch.allclose(adv.view(-1, 3).sum(-1), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="group_size >= 2"):
        leave_one_out_advantages(r, 1)
    with pytest.raises(ValueError, match="multiple of 4"):
        leave_one_out_advantages(r, 4)


def test_dense_advantages_hand_computed():
    outcome = torch.tensor([0.5, -0.5])
    process = torch.tensor([[0.2, -0.4, 0.0], [0.1, 0.0, 0.0]])
    token_step = torch.tensor([[0, 0, 1, 1, 1, -1], [0, 0, 0, -1, -1, -1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    out = dense_advantages(outcome, process, token_step, alpha=2.0, completion_mask=mask)
    expected = torch.tensor([[0.9, 0.9, -0.3, -0.3, -0.3, 0.5], [-0.3, -0.3, -0.3, -0.5, 0.0, 0.0]])
    assert torch.allclose(out, expected)
    zero = dense_advantages(outcome, process, token_step, alpha=0.0)
    assert torch.allclose(zero, outcome[:, None].expand(2, 6))
    assert torch.equal(broadcast_step_values(process[:, :0], token_step, fill=3.0), torch.full((2, 6), 3.0))
    with pytest.raises(ValueError, match="refers to step 4 but only 3 exist"):
        broadcast_step_values(process, token_step + 3)


def test_class_balanced_bce():
    logits = torch.tensor([0.0, 2.0, -1.0, 5.0], requires_grad=True)
    labels = torch.tensor([0.9, 0.6, 0.1, 0.0])
    mask = torch.tensor([True, True, True, False])
    loss = class_balanced_bce(logits, labels, mask)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    expected = 0.5 * (bce[:2].mean() + bce[2])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits.grad[3] == 0
    # Only one class present: plain mean over it.
    only = class_balanced_bce(logits, torch.tensor([0.9, 0.6, 0.7, 0.8]), mask)
    assert torch.allclose(
        only, torch.nn.functional.binary_cross_entropy_with_logits(logits[:3], torch.tensor([0.9, 0.6, 0.7]))
    )
    none = class_balanced_bce(logits, labels, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad


@pytest.mark.parametrize("n,k", [(4, 1), (8, 4), (20, 4), (5, 5)])
def test_unbiased_best_of_k_matches_exact_expectation(n, k):
    """E[estimate] over Binomial(n, q) successes equals 1 - (1 - q)^K exactly; the plug-in is biased low."""
    from trl_pav.values import best_of_k_unbiased

    c = torch.arange(n + 1)
    for q in (0.05, 0.2, 0.5, 0.9):
        pmf = torch.tensor([math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(n + 1)], dtype=torch.float64)
        exact = 1 - (1 - q) ** k
        assert float((pmf * best_of_k_unbiased(c, n, k)).sum()) == pytest.approx(exact, abs=1e-12)
        plug_in = float((pmf * best_of_k(c / n, k)).sum())
        assert k == 1 or plug_in < exact - 1e-6
    with pytest.raises(ValueError, match="K <= n"):
        best_of_k_unbiased(c, n, n + 1)


def test_dataset_class_weights_balance_in_expectation():
    """Fixed dataset weights give each class half of the total weight, and the same weights in every batch."""
    from trl_pav.values import class_weights

    labels = torch.tensor([0.1, 0.2, 0.0, 0.9, 0.3, 0.7])
    low, high = labels < 0.5, labels >= 0.5
    w = class_weights(torch.tensor([float(low.sum()), float(high.sum())]))
    per_position = torch.where(low, w[0], w[1])
    assert float(per_position[low].sum()) == pytest.approx(float(per_position[high].sum()))
    assert float(per_position.mean()) == pytest.approx(1.0)
    logits = torch.linspace(-1, 1, 6)
    mask = torch.ones(6, dtype=torch.bool)
    loss = class_balanced_bce(logits, labels, mask, weights=w)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    assert float(loss) == pytest.approx(float((bce * per_position).mean()))


def test_rewards_to_go_by_hand():
    from trl_pav.values import rewards_to_go

    r = torch.tensor([[0.5, 0.25, 1.0], [0.3, 0.0, 0.0]])  # the second row padded with zeros after one step
    assert torch.allclose(rewards_to_go(r), torch.tensor([[1.75, 1.25, 1.0], [0.3, 0.0, 0.0]]))
    # A restated step (same prover value again) adds that value to every earlier step's return: padding pays.
    padded = rewards_to_go(torch.tensor([0.5, 0.5, 1.0]))
    assert padded[0] - rewards_to_go(torch.tensor([0.5, 1.0]))[0] == pytest.approx(0.5)
