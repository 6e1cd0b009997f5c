"""The paper's math, as small pure tensor functions. Everything else in trl_pav calls these; nothing re-derives them.

Notation (arXiv 2410.08146): a trace has steps `a_1..a_H`; `Q^π_h = Q^π(s_h, a_h)` is the probability that the base
policy π finishes correctly after step h, and `Q^π_0` is the value of the bare prompt (the root). Because dynamics are
deterministic and reward comes only at the end, `V(s_h) = Q(s_{h-1}, a_{h-1})`, so a step's advantage is the change
in success probability across it. For a Best-of-K prover μ = BoK(π), `Q^μ = 1 - (1 - Q^π)^K`.

Shapes in docstrings: `B` batch, `H` steps, `T` tokens, `M` sampled next steps of one state, `G` group size.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "bce_classes",
    "best_of_k",
    "best_of_k_unbiased",
    "broadcast_step_values",
    "class_balanced_bce",
    "class_weights",
    "dense_advantages",
    "distinguishability",
    "effective_reward",
    "leave_one_out_advantages",
    "prover_advantages",
    "prover_alignment",
    "prover_values",
    "step_advantages",
]


def _check_k(k: float) -> None:
    if not (isinstance(k, (int, float)) and k >= 1):
        raise ValueError(f"prover K must be a number >= 1 (K = 1 is the base policy itself), got {k!r}")


def best_of_k(q: Tensor, k: float) -> Tensor:
    """Success probability of Best-of-K sampling from a policy with success probability `q`: `1 - (1 - q)^K`.

    Args:
        q: `(...)` success probabilities in [0, 1].
        k: K >= 1. K = 1 returns `q` unchanged.

    Returns:
        `(...)` the Best-of-K success probabilities.

    Example:
        >>> best_of_k(torch.tensor([0.0, 0.5, 1.0]), 2)
        tensor([0.0000, 0.7500, 1.0000])
    """
    _check_k(k)
    if k == 1:
        return q  # exactly π; the transform would round
    return 1.0 - (1.0 - q).clamp(0.0, 1.0) ** k


prover_values = best_of_k
"""Alias: `Q^μ` of a BoK prover from `Q^π`."""


def best_of_k_unbiased(successes: Tensor, n: Tensor | int, k: int) -> Tensor:
    """Unbiased estimate of the Best-of-K success probability from `c` successes in `n` samples.

    The plug-in `1 - (1 - c/n)^K` is biased low (Jensen); the probability that K of the n samples drawn without
    replacement contain a success, `1 - C(n - c, K) / C(n, K)`, is unbiased for K <= n (the pass@k estimator).

    Args:
        successes: `(...)` success counts `c` (integers in [0, n]).
        n: `(...)` or int, samples per estimate.
        k: K with 1 <= K <= min(n).

    Returns:
        `(...)` float64 estimates in [0, 1].

    Example:
        >>> best_of_k_unbiased(torch.tensor([0, 1, 4]), 4, 2)
        tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    """
    _check_k(k)
    c = torch.as_tensor(successes, dtype=torch.float64)
    n_t = torch.as_tensor(n, dtype=torch.float64).expand_as(c)
    if int(k) != k or (n_t < k).any():
        raise ValueError(f"the unbiased Best-of-K estimator needs an integer K <= n, got K={k}, n={n_t.min().item():g}")
    if ((c < 0) | (c > n_t)).any():
        raise ValueError("success counts must lie in [0, n]")
    # C(n-c, K) / C(n, K) = prod_{i=0}^{K-1} (n - c - i) / (n - i), zero once n - c < K.
    i = torch.arange(int(k), dtype=torch.float64)
    ratio = ((n_t[..., None] - c[..., None] - i).clamp(min=0.0) / (n_t[..., None] - i)).prod(-1)
    return 1.0 - ratio


def step_advantages(values: Tensor) -> Tensor:
    """One-step advantages `values[..., h] - values[..., h-1]` from values that start with the root.

    Args:
        values: `(..., H+1)`: root value then the value after each of H steps.

    Returns:
        `(..., H)` the change in value across each step.
    """
    if values.shape[-1] < 2:
        raise ValueError(f"need the root value and at least one step value, got last dimension {values.shape[-1]}")
    return values[..., 1:] - values[..., :-1]


def prover_advantages(q_pi: Tensor, k: float, step_mask: Tensor | None = None) -> Tensor:
    """Prover advantages `A^μ_h = f(Q^π_h) - f(Q^π_{h-1})` with `f(q) = 1 - (1 - q)^K` (the BoK transform).

    This is the one-step advantage of each step (never a sum of future advantages).

    Args:
        q_pi: `(..., H+1)`: `Q^π` of the root (index 0) then after each step.
        k: prover K (1 = the base policy's own advantages).
        step_mask: optional `(..., H)` bool; advantages of masked-out (padding) steps are set to 0.

    Returns:
        `(..., H)` prover advantages.

    Example:
        >>> prover_advantages(torch.tensor([0.5, 0.5, 0.0]), k=1)
        tensor([ 0.0000, -0.5000])
    """
    adv = step_advantages(best_of_k(q_pi, k))
    if step_mask is not None:
        adv = adv.masked_fill(~step_mask.bool(), 0.0)
    return adv


def effective_reward(q_pi: Tensor, advantage: Tensor, alpha: float) -> Tensor:
    """The paper's effective reward of a step: `Q^π(s, a) + α · A^μ(s, a)`.

    Args:
        q_pi: `(...)` base-policy value after the step.
        advantage: `(...)` prover advantage of the step (same shape).
        alpha: weight of the process term (paper: ~0.5 for small models in search, 3-5 in RL). 0 gives Q-only.

    Returns:
        `(...)` effective rewards.
    """
    return q_pi + alpha * advantage


def distinguishability(q_mu: Tensor) -> Tensor:
    """How well a prover tells apart the sampled next steps of one state: `Var_j Q^μ(s, a_j)` (population variance).

    Args:
        q_mu: `(..., M)` prover values of M sampled next steps of the same state.

    Returns:
        `(...)` variances.
    """
    return q_mu.var(dim=-1, unbiased=False)


def prover_alignment(q_mu: Tensor, q_pi: Tensor) -> Tensor:
    """Alignment of a prover with the base policy at one state: `Cov_j(Q^μ(s, a_j), Q^π(s, a_j))` (population).

    For BoK provers `Q^μ` is a monotone function of `Q^π`, so this is never negative.

    Args:
        q_mu: `(..., M)` prover values of M sampled next steps.
        q_pi: `(..., M)` base-policy values of the same steps.

    Returns:
        `(...)` covariances.
    """
    if q_mu.shape != q_pi.shape:
        raise ValueError(f"q_mu and q_pi must have the same shape, got {tuple(q_mu.shape)} and {tuple(q_pi.shape)}")
    return ((q_mu - q_mu.mean(-1, keepdim=True)) * (q_pi - q_pi.mean(-1, keepdim=True))).mean(-1)


def leave_one_out_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Outcome advantages with a leave-one-out group baseline: `r_i - mean_{j != i} r_j` within each group.

    Args:
        rewards: `(B,)` with `B = n_groups * group_size`, groups contiguous (TRL's layout).
        group_size: G >= 2.

    Returns:
        `(B,)` advantages.

    Example:
        >>> leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
        tensor([ 1., -1., -1.,  1.])
    """
    if group_size < 2:
        raise ValueError(f"a leave-one-out baseline needs group_size >= 2, got {group_size}")
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of {group_size} entries, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def broadcast_step_values(step_values: Tensor, token_step: Tensor, fill: float = 0.0) -> Tensor:
    """Spread per-step values over tokens: token t gets `step_values[b, token_step[b, t]]`.

    Args:
        step_values: `(B, H)`.
        token_step: `(B, T)` long: the step index of each token, or -1 for tokens in no scored step.
        fill: value for tokens with index -1.

    Returns:
        `(B, T)`.
    """
    if token_step.shape[0] != step_values.shape[0]:
        raise ValueError(
            f"batch sizes differ: step_values {tuple(step_values.shape)}, token_step {tuple(token_step.shape)}"
        )
    if step_values.shape[1] == 0:
        return torch.full(token_step.shape, fill, dtype=step_values.dtype, device=step_values.device)
    if int(token_step.max()) >= step_values.shape[1]:
        raise ValueError(f"token_step refers to step {int(token_step.max())} but only {step_values.shape[1]} exist")
    gathered = step_values.gather(1, token_step.clamp(min=0))
    return gathered.masked_fill(token_step < 0, fill)


def dense_advantages(
    outcome_advantage: Tensor,
    process_advantage: Tensor,
    token_step: Tensor,
    alpha: float,
    completion_mask: Tensor | None = None,
) -> Tensor:
    """Per-token advantages for RL: `outcome_advantage_b + α · process_advantage_{b, h(t)}`.

    Token t of completion b belongs to step `h(t) = token_step[b, t]`; tokens in no scored step (-1) get the outcome
    part only. The process term is each step's one-step advantage, never a return.

    Args:
        outcome_advantage: `(B,)` per-sequence outcome advantage (e.g. `leave_one_out_advantages`).
        process_advantage: `(B, H)` per-step prover advantages (0 for padding steps).
        token_step: `(B, T)` long step index per completion token, -1 outside scored steps.
        alpha: weight of the process term; 0 returns the outcome advantage broadcast over tokens.
        completion_mask: optional `(B, T)`; advantages of masked-out tokens are set to 0.

    Returns:
        `(B, T)` advantages.
    """
    out = outcome_advantage[:, None] + alpha * broadcast_step_values(process_advantage, token_step)
    if completion_mask is not None:
        out = out * completion_mask.to(out.dtype)
    return out


def bce_classes(labels: Tensor, mask: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """`(low, high)` bool masks: labeled positions with labels `< threshold` and `>= threshold` (the two classes of
    `class_balanced_bce`; sum them across processes to get its `class_counts`).

    Example:
        >>> low, high = bce_classes(torch.tensor([0.2, 0.7, 0.9]), torch.tensor([True, True, False]))
        >>> low.tolist(), high.tolist()
        ([True, False, False], [False, True, False])
    """
    mask = mask.bool()
    return mask & (labels < threshold), mask & (labels >= threshold)


def class_weights(class_counts: Tensor) -> Tensor:
    """Per-position weights `(w_low, w_high)` that give each class half of the total weight: `w_c = N / (2 N_c)`.

    Computed once from a whole dataset, they balance the classes in expectation with the same weights in every
    batch (weights recomputed per micro-batch vary with its composition and shift the calibration of `Q̂`).

    Args:
        class_counts: `(2,)` labeled positions below and at/above the class threshold.

    Returns:
        `(2,)` weights (1 for a class that is absent, whose weight never applies).

    Example:
        >>> class_weights(torch.tensor([3.0, 1.0]))
        tensor([0.6667, 2.0000], dtype=torch.float64)
    """
    counts = class_counts.double()
    present = counts > 0
    n_present = int(present.sum())
    if n_present == 0:
        return torch.ones(2, dtype=torch.float64)
    return torch.where(present, counts.sum() / (n_present * counts.clamp(min=1)), torch.ones_like(counts))


def class_balanced_bce(
    logits: Tensor,
    labels: Tensor,
    mask: Tensor,
    threshold: float = 0.5,
    class_counts: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy against soft labels, class-balanced over labels `< threshold` and `>= threshold`.

    Each class contributes half of the loss (when both are present), so a dataset dominated by failing (or by
    succeeding) steps does not collapse the verifier onto the majority.

    Args:
        logits: `(...)` raw scores; `sigmoid(logits)` estimates `Q^π`.
        labels: `(...)` soft targets in [0, 1].
        mask: `(...)` bool, which positions carry a label.
        threshold: class boundary.
        class_counts: `(2,)` labeled positions below and at/above `threshold` in the *whole* batch when it is split
            across processes. Then the result is this part's share: the shares of all parts sum to the loss of the
            whole batch. `None`: this batch is the whole batch.
        weights: `(2,)` fixed class weights (`class_weights` of the whole dataset). Then the loss is the weighted
            sum over labeled positions divided by their number (in the whole batch, with `class_counts`), instead
            of each class's mean weighted equally within the batch.

    Returns:
        `()` the loss (0 with gradient if no position is labeled).

    Example:
        >>> logits, labels = torch.zeros(4), torch.tensor([0.0, 0.0, 0.0, 1.0])
        >>> mask = torch.ones(4, dtype=torch.bool)
        >>> whole = class_balanced_bce(logits, labels, mask)
        >>> counts = torch.tensor([3.0, 1.0])
        >>> first = class_balanced_bce(logits[:2], labels[:2], mask[:2], class_counts=counts)
        >>> second = class_balanced_bce(logits[2:], labels[2:], mask[2:], class_counts=counts)
        >>> bool(torch.isclose(first + second, whole))
        True
    """
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    classes = bce_classes(labels, mask, threshold)
    if class_counts is None:
        class_counts = torch.stack([m.sum() for m in classes]).to(losses)
    if weights is not None:
        weighted = sum(losses[classes[i]].sum() * float(weights[i]) for i in range(2))
        return weighted / class_counts.sum().clamp(min=1) + logits.sum() * 0.0
    present = [i for i in range(2) if class_counts[i] > 0]
    if not present:
        return logits.sum() * 0.0
    total = sum(losses[classes[i]].sum() / class_counts[i] for i in present)
    return total / len(present) + logits.sum() * 0.0  # keeps the graph when this part holds no label
