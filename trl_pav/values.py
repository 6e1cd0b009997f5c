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
    "clipped_value_loss",
    "cross_fit_terms",
    "dense_advantages",
    "distinguishability",
    "effective_reward",
    "expected_prover_advantage",
    "gae",
    "grouped_pairwise_loss",
    "kl_penalty",
    "last_token_mask",
    "leave_one_out_advantages",
    "masked_moments",
    "new_direction",
    "ppo_policy_loss",
    "ppo_reward_stream",
    "prover_advantages",
    "prover_alignment",
    "prover_score",
    "prover_update_angle",
    "prover_values",
    "rewards_to_go",
    "step_advantages",
    "step_end_mask",
    "theorem_terms",
    "tilted_choice_probs",
    "whiten",
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


def expected_prover_advantage(value: Tensor, k: float) -> Tensor:
    """Expected sum of the prover advantages along the base policy's own trace: `V - f(V)`, `f(q) = 1 - (1 - q)^K`.

    Along a trace of π from a state of value `V = Q^π` that ends at its outcome, the one-step advantages
    `f(Q_h) - f(Q_{h-1})` telescope to `f(outcome) - f(V)`, and `E[f(outcome)] = E[outcome] = V` since an outcome is
    0 or 1. For K > 1 and `0 < V < 1` this is negative (`f` is concave: Jensen), so π's own steps lose prover value on
    average while a step that leaves the value unchanged (a no-progress step) scores exactly 0: with α > 0 the
    process term pays stalling over the policy's average step (docs/tasks.md). K = 1 gives 0.

    Args:
        value: `(...)` `Q^π` of the state the traces start from, in [0, 1].
        k: prover K >= 1.

    Returns:
        `(...)` the expected advantage sum per trace.

    Example:
        >>> expected_prover_advantage(torch.tensor([0.0, 0.5, 1.0]), 2)
        tensor([ 0.0000, -0.2500,  0.0000])
    """
    return value - best_of_k(value, k)


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


def rewards_to_go(rewards: Tensor) -> Tensor:
    """Each step's return: the sum of its reward and every later step's, `out[..., h] = Σ_{h' >= h} rewards[..., h']`.

    The process term of PAV-RL is never a return (a summed advantage telescopes to the last value); this is for the
    ablation where the prover's values are summed as ordinary dense rewards, under which padding a trace with
    no-progress steps adds reward.

    Args:
        rewards: `(..., H)` per-step rewards (0 for padding steps at the end).

    Returns:
        `(..., H)` rewards to go.

    Example:
        >>> rewards_to_go(torch.tensor([0.5, 0.25, 1.0]))
        tensor([1.7500, 1.2500, 1.0000])
    """
    return rewards.flip(-1).cumsum(-1).flip(-1)


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


def _centered_products(x: Tensor, y: Tensor, weights: Tensor | None) -> Tensor:
    # Weighted (exact moments of listed steps) or unbiased sample (divisor M - 1) covariance over the last dim.
    if weights is None:
        m = x.shape[-1]
        if m < 2:
            raise ValueError(f"sampled next steps give an unbiased variance only with M >= 2, got M = {m}")
        return ((x - x.mean(-1, keepdim=True)) * (y - y.mean(-1, keepdim=True))).sum(-1) / (m - 1)
    w = weights / weights.sum(-1, keepdim=True)
    return (w * (x - (w * x).sum(-1, keepdim=True)) * (y - (w * y).sum(-1, keepdim=True))).sum(-1)


def theorem_terms(q_mu: Tensor, q_pi: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-state terms of the paper's Theorem 3.1 over the next steps `a_j` of one state `s`.

    Returns `(Var_π A^μ, Cov_π(A^μ, A^π), Var_π A^π)`: the prover's distinguishability, its alignment with the base
    policy (`E_π[A^μ A^π]`, since `E_π A^π = 0`) and the base policy's own distinguishability. Advantages differ from
    values by a per-state constant, so these are moments of `Q^μ(s, a_j)` and `Q^π(s, a_j)`.

    Args:
        q_mu: `(..., M)` prover values of M next steps of the same state.
        q_pi: `(..., M)` base-policy values of the same steps.
        weights: `(..., M)` π's probabilities of the listed steps (an enumerated policy: exact moments), or `None`
            when the M steps were sampled from π (unbiased sample moments, divisor M - 1, M >= 2).

    Returns:
        three `(...)` tensors.

    Example:
        >>> d, al, v = theorem_terms(torch.tensor([0.0, 0.75]), torch.tensor([0.0, 0.5]), torch.tensor([0.5, 0.5]))
        >>> float(d), float(al), float(v)
        (0.140625, 0.09375, 0.0625)
    """
    if q_mu.shape != q_pi.shape:
        raise ValueError(f"q_mu and q_pi must have the same shape, got {tuple(q_mu.shape)} and {tuple(q_pi.shape)}")
    if weights is not None and weights.shape != q_pi.shape:
        raise ValueError(f"weights must have the shape of q_pi {tuple(q_pi.shape)}, got {tuple(weights.shape)}")
    return (
        _centered_products(q_mu, q_mu, weights),
        _centered_products(q_mu, q_pi, weights),
        _centered_products(q_pi, q_pi, weights),
    )


def cross_fit_terms(q_mu_a: Tensor, q_mu_b: Tensor, q_pi_a: Tensor, q_pi_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`theorem_terms` of sampled next steps from two independent Monte-Carlo halves of the rollouts.

    With noisy value estimates, `Var_j Q̂` is `Var_j Q` plus the estimates' noise. Products of deviations of two
    independent unbiased halves (`a` and `b`) have no noise term in expectation, so the result is unbiased for the
    terms of the true values (and may come out slightly negative). Exact values: pass the same tensor as both halves.

    Args:
        q_mu_a, q_mu_b: `(..., M)` prover values of M sampled next steps, from halves a and b.
        q_pi_a, q_pi_b: `(..., M)` base-policy values of the same steps, from halves a and b.

    Returns:
        `(distinguishability, alignment, base distinguishability)`, each `(...)`.

    Example:
        >>> q = torch.tensor([0.0, 0.5, 1.0])
        >>> [float(t) for t in cross_fit_terms(q, q, q, q)]
        [0.25, 0.25, 0.25]
    """
    shape = q_pi_a.shape
    if any(t.shape != shape for t in (q_mu_a, q_mu_b, q_pi_b)):
        raise ValueError(
            "all four value tensors must have one shape, got "
            f"{[tuple(t.shape) for t in (q_mu_a, q_mu_b, q_pi_a, q_pi_b)]}"
        )
    d = _centered_products(q_mu_a, q_mu_b, None)
    al = 0.5 * (_centered_products(q_mu_a, q_pi_b, None) + _centered_products(q_mu_b, q_pi_a, None))
    return d, al, _centered_products(q_pi_a, q_pi_b, None)


def new_direction(d: Tensor, al: Tensor, v: Tensor) -> Tensor:
    """Distinguishability of the prover beyond the base policy's own direction: `D - Al² / V`.

    In the Fisher geometry of the policy (the inner product of two rewards' natural-gradient directions is
    `E_s Cov_{a~π}`), `D = |A^μ|²`, `V = |A^π|²`, `Al = <A^μ, A^π>`. Writing `A^μ = (Al/V) A^π + R` with
    `R ⊥ A^π`, this is `|R|²`: the part of the prover's signal that outcome-only RL (which follows `A^π`) cannot
    give. It is 0 for `μ = π` (Best-of-1). Where `V <= 0` (no outcome direction) it is `D`.

    Args:
        d, al, v: `(...)` state-averaged `theorem_terms` (E_s of each).

    Returns:
        `(...)` the new-direction distinguishability, never negative.

    Example:
        >>> float(new_direction(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(1.0)))
        1.0
    """
    safe_v = torch.where(v > 0, v, torch.ones_like(v))
    return torch.where(v > 0, d - al**2 / safe_v, d).clamp(min=0.0)


def _update_components(d: Tensor, al: Tensor, v: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    if alpha <= 0:
        raise ValueError(f"alpha (the weight of the process term) must be > 0, got {alpha}")
    safe_v = torch.where(v > 0, v, torch.ones_like(v))
    along = torch.where(v > 0, (v + alpha * al) / safe_v.sqrt(), torch.zeros_like(v))
    return along, alpha * new_direction(d, al, v).sqrt()


def prover_update_angle(d: Tensor, al: Tensor, v: Tensor, alpha: float) -> Tensor:
    """Angle φ (degrees) between the effective reward's update and outcome-only RL's update.

    The natural-gradient direction of `Q^π + α A^μ` is `A^π + α A^μ = (1 + α Al/V) A^π + α R` (see
    `new_direction`); `tan φ = α|R| / ((1 + α Al/V) |A^π|)`. φ = 0: nothing new (μ = π); φ -> 90°: the update is
    all new direction and gains nothing on `V^π` to first order; φ > 90°: the process term reverses the outcome
    direction (a misaligned prover).

    Args:
        d, al, v: `(...)` state-averaged `theorem_terms`. alpha: weight of the process term (> 0).

    Returns:
        `(...)` angles in [0, 180] degrees.

    Example:
        >>> round(float(prover_update_angle(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(1.0), alpha=2.0)), 2)
        33.69
    """
    along, new = _update_components(d, al, v, alpha)
    return torch.rad2deg(torch.atan2(new, along))


def prover_score(d: Tensor, al: Tensor, v: Tensor, alpha: float) -> Tensor:
    """Ranking score of a prover: `sin φ · cos φ` of the effective reward's update angle (`prover_update_angle`).

    Per unit step (a trust region), `cos φ` is the share that improves `V^π` now (exploitation, the theorem's
    alignment) and `sin φ` the share in a direction outcome-only RL cannot take (exploration, the theorem's
    distinguishability beyond `A^π`). The product is 0 for `μ = π` (K = 1: only the `A^π` direction, which merely
    rescales the step), tends to 0 for a prover whose signal is nearly all orthogonal to `A^π`, is negative for a
    prover that reverses the outcome direction, and peaks at 1/2 at φ = 45°. It is a heuristic built from the
    theorem's terms (docs/prover_selection.md), not a bound. 0 where `V <= 0`.

    Args:
        d, al, v: `(...)` state-averaged `theorem_terms` (E_s of each).
        alpha: weight of the process term in the effective reward `Q^π + α A^μ` (> 0).

    Returns:
        `(...)` scores in [-1/2, 1/2].

    Example:
        >>> float(prover_score(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0), alpha=1.0))  # μ = π
        0.0
        >>> round(float(prover_score(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(1.0), alpha=2.0)), 4)
        0.4615
    """
    along, new = _update_components(d, al, v, alpha)
    norm2 = along**2 + new**2
    return torch.where(norm2 > 0, along * new / torch.where(norm2 > 0, norm2, torch.ones_like(norm2)), 0.0 * norm2)


def tilted_choice_probs(q_mu: Tensor, scale: float) -> Tensor:
    """Which of M next steps drawn from π to keep, so that the kept step follows π tilted by the prover's values.

    For a softmax policy with its own logits at each state, natural policy gradient on a reward `r(s, a)` with step
    size η multiplies π by `exp(η r)` state by state; the process term `α A^μ` does not depend on π, so T steps of
    it give `π_T(a|s) ∝ π(a|s) exp(scale · A^μ(s, a))` with `scale = α η T`. `A^μ` and `Q^μ` differ by a per-state
    constant, which the normalisation removes. Choosing among M draws of π with these probabilities
    (sampling-importance resampling) samples `π_T` exactly as M → ∞ and a flatter version of it for finite M.

    Args:
        q_mu: `(..., M)` the prover's values `Q^μ(s, a_j)` of M steps drawn from π at one state.
        scale: total step `α η T` (>= 0; 0 keeps π).

    Returns:
        `(..., M)` choice probabilities (rows sum to 1).

    Example:
        >>> tilted_choice_probs(torch.tensor([0.0, 1.0]), 0.0).tolist()
        [0.5, 0.5]
        >>> round(float(tilted_choice_probs(torch.tensor([0.0, 1.0]), float(torch.tensor(3.0).log()))[1]), 4)
        0.75
    """
    if not scale >= 0:
        raise ValueError(f"tilted_choice_probs: scale must be >= 0, got {scale}")
    return torch.softmax(scale * q_mu.to(torch.float64), dim=-1)


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
    part only. PAV-RL's process term is each step's one-step advantage, never a return (only the ablation
    `rewards_to_go` passes returns here).

    Args:
        outcome_advantage: `(B,)` per-sequence outcome advantage (e.g. `leave_one_out_advantages`), or `(B, T)`
            per-token advantages (e.g. `gae`'s over the outcome and KL rewards).
        process_advantage: `(B, H)` per-step prover advantages (0 for padding steps).
        token_step: `(B, T)` long step index per completion token, -1 outside scored steps.
        alpha: weight of the process term; 0 returns the outcome advantage broadcast over tokens.
        completion_mask: optional `(B, T)`; advantages of masked-out tokens are set to 0.

    Returns:
        `(B, T)` advantages.
    """
    base = outcome_advantage if outcome_advantage.ndim == 2 else outcome_advantage[:, None]
    out = base + alpha * broadcast_step_values(process_advantage, token_step)
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


def grouped_pairwise_loss(logits: Tensor, labels: Tensor, mask: Tensor, groups: Tensor) -> Tensor:
    """Pairwise logistic (RankNet) loss over labeled positions of the same group, weighted by their label gap.

    Every pair `(i, j)` of labeled positions in one group (one problem) with `y_i > y_j` adds
    `(y_i - y_j) · log(1 + exp(-(l_i - l_j)))`; the sum is divided by the total weight. Only differences of scores
    within a group enter, so the loss cannot be lowered by learning which groups (problems) are easy: it asks for
    the within-problem ranking that search selects by. With binary outcomes it is the usual AUC surrogate over a
    problem's correct and wrong answers. At a perfect fit of calibrated logits it is not zero, so it is added to the
    pointwise loss with a weight, not used alone.

    Args:
        logits: `(B, R)` scores of `R` read positions per row.
        labels: `(B, R)` soft targets in [0, 1].
        mask: `(B, R)` bool, which positions carry a label.
        groups: `(B,)` int, the group of each row (rows of one prompt share it).

    Returns:
        `()` the loss (0 with gradient if no pair has different labels).

    Example:
        >>> logits = torch.tensor([[2.0], [0.0], [5.0]])
        >>> labels = torch.tensor([[1.0], [0.0], [0.0]])
        >>> groups = torch.tensor([0, 0, 1])  # row 2 is alone in its group: its high score costs nothing
        >>> round(float(grouped_pairwise_loss(logits, labels, torch.ones(3, 1, dtype=torch.bool), groups)), 4)
        0.1269
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half precision is too coarse for the differences
    flat_mask = mask.reshape(-1)
    scores = logits.to(dtype).reshape(-1)[flat_mask]
    targets = labels.to(dtype).reshape(-1)[flat_mask]
    owner = groups.reshape(-1, 1).expand_as(mask).reshape(-1)[flat_mask]
    weight = (targets[:, None] - targets[None, :]).clamp(min=0) * (owner[:, None] == owner[None, :])
    total = weight.sum()
    if total <= 0:
        return logits.sum() * 0.0
    pair_losses = torch.nn.functional.softplus(-(scores[:, None] - scores[None, :]))
    return (weight * pair_losses).sum() / total + logits.sum() * 0.0


# ---- PPO with a learned critic: the per-token reward stream, GAE, whitening, the two clipped losses ----------------
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logps: Tensor, ref_logps: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of `KL(π || π_ref)` from the log-probs of the sampled tokens (Schulman's k1/k2/k3).

    `k1 = log π - log π_ref` (unbiased, can be negative; the classic RLHF reward term), `k2 = ½ (log π - log π_ref)²`,
    `k3 = exp(log π_ref - log π) - (log π_ref - log π) - 1` (unbiased and never negative).

    Args:
        logps: `(B, T)` log-probs of the sampled tokens under the policy that sampled them.
        ref_logps: `(B, T)` their log-probs under the reference policy.
        estimator: `"k1"`, `"k2"` or `"k3"`.

    Returns:
        `(B, T)` per-token KL estimates.

    Example:
        >>> kl_penalty(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]]), "k1")
        tensor([[0.5000, 0.0000]])
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; use one of {KL_ESTIMATORS}")
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio


def step_end_mask(token_step: Tensor, completion_mask: Tensor) -> Tensor:
    """Which tokens close a scored step: the last token of each run of equal step indices >= 0.

    Args:
        token_step: `(B, T)` long step index per completion token, -1 outside scored steps.
        completion_mask: `(B, T)`; masked tokens never close a step.

    Returns:
        `(B, T)` bool.

    Example:
        >>> step_end_mask(torch.tensor([[0, 0, 1, 1, -1]]), torch.ones(1, 5)).tolist()
        [[False, True, False, True, False]]
    """
    valid = (token_step >= 0) & completion_mask.bool()
    following = torch.cat([token_step[:, 1:], token_step.new_full((token_step.shape[0], 1), -1)], dim=1)
    following_valid = torch.cat([valid[:, 1:], valid.new_zeros(valid.shape[0], 1)], dim=1)
    return valid & (~following_valid | (following != token_step))


def last_token_mask(completion_mask: Tensor) -> Tensor:
    """`(B, T)` bool: the last unmasked token of each row (none for an empty row). `completion_mask` is `(B, T)`,
    right-padded.

    Example:
        >>> last_token_mask(torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])).tolist()
        [[False, True, False], [False, False, True], [False, False, False]]
    """
    mask = completion_mask.bool()
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    return mask & (positions[None, :] == (lengths - 1)[:, None])


def ppo_reward_stream(
    outcome_rewards: Tensor,
    process_terms: Tensor,
    token_step: Tensor,
    completion_mask: Tensor,
    alpha: float,
    kl: Tensor | None = None,
    beta: float = 0.0,
) -> Tensor:
    """The classic RLHF per-token reward stream with PAV step rewards.

    `r_t = -β·KL_t` on every completion token, plus `α·process_{h}` on the last token of each scored step h, plus the
    outcome reward on the last token of the completion. With `α = 0` this is plain PPO's reward.

    Args:
        outcome_rewards: `(B,)` each completion's outcome reward.
        process_terms: `(B, H)` per-step process terms (prover advantages `Â^μ_h`), 0 for padding steps.
        token_step: `(B, T)` long step index of each completion token, -1 outside scored steps.
        completion_mask: `(B, T)`, right-padded.
        alpha: weight of the process terms.
        kl: `(B, T)` per-token KL estimates (`kl_penalty`), or `None` for no penalty.
        beta: KL coefficient.

    Returns:
        `(B, T)` rewards (0 on masked tokens).

    Example:
        >>> ppo_reward_stream(
        ...     torch.tensor([1.0]), torch.tensor([[0.5, -0.25]]), torch.tensor([[0, 0, 1, -1]]), torch.ones(1, 4), 2.0
        ... )
        tensor([[ 0.0000,  1.0000, -0.5000,  1.0000]])
    """
    mask = completion_mask.to(outcome_rewards.dtype)
    rewards = outcome_rewards[:, None] * last_token_mask(completion_mask).to(mask.dtype)
    if alpha != 0 and process_terms.shape[1] > 0:
        ends = step_end_mask(token_step, completion_mask).to(mask.dtype)
        rewards = rewards + alpha * broadcast_step_values(process_terms.to(mask.dtype), token_step) * ends
    if kl is not None and beta != 0:
        rewards = rewards - beta * kl.to(mask.dtype)
    return rewards * mask


def gae(
    rewards: Tensor, values: Tensor, completion_mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a per-token reward stream, and the critic's return targets.

    `δ_t = r_t + γ V_{t+1} - V_t` with `V = 0` after the last token (the episode ends there), and
    `A_t = δ_t + γλ A_{t+1}`; returns are `A_t + V_t`. With `γ = λ = 1` the advantage is the Monte-Carlo return
    minus the value (REINFORCE with a learned baseline).

    Args:
        rewards: `(B, T)` per-token rewards (`ppo_reward_stream`).
        values: `(B, T)` the critic's `V_t`, the value of the state before token t.
        completion_mask: `(B, T)`, right-padded.
        gamma: discount.
        lam: GAE's λ.

    Returns:
        `(advantages, returns)`, both `(B, T)`, 0 on masked tokens.

    Example:
        >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
        >>> adv, ret
        (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    if not 0 <= gamma <= 1 or not 0 <= lam <= 1:
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    mask = completion_mask.to(values.dtype)
    values = values * mask
    rewards = rewards.to(values.dtype) * mask
    advantages = torch.zeros_like(values)
    running = values.new_zeros(values.shape[0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else values.new_zeros(values.shape[0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`(sum, sum of squares, count)` of `x` over `mask`, each `()`: sum them across processes, then pass
    `(mean, var)` to `whiten` to whiten a batch split over processes as one.

    Example:
        >>> masked_moments(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]]))
        (tensor(4.), tensor(10.), tensor(2.))
    """
    m = mask.to(x.dtype)
    return (x * m).sum(), (x * x * m).sum(), m.sum()


def whiten(
    x: Tensor, mask: Tensor, shift_mean: bool = True, mean: Tensor | None = None, var: Tensor | None = None
) -> Tensor:
    """Normalise `x` to unit variance over `mask` (and zero mean when `shift_mean`), as PPO does to advantages.

    Args:
        x: `(B, T)`.
        mask: `(B, T)`.
        shift_mean: subtract the mean (else only divide by the std and keep the mean).
        mean, var: `()` statistics of the whole batch when it is split across processes (`masked_moments`);
            `None` computes them over this `x` (unbiased variance).

    Returns:
        `(B, T)`, 0 on masked positions.

    Example:
        >>> whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))
        tensor([[-0.7071,  0.7071,  0.0000]])
    """
    m = mask.to(x.dtype)
    if mean is None or var is None:
        s, ss, n = masked_moments(x, mask)
        if n < 2:
            raise ValueError(f"whiten needs at least 2 unmasked values, got {int(n)}")
        mean = s / n
        var = (ss - n * mean**2).clamp(min=0) / (n - 1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * m


def ppo_policy_loss(
    logps: Tensor, old_logps: Tensor, advantages: Tensor, clip_low: float, clip_high: float | None = None
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate per token: `max(-A·ρ, -A·clip(ρ, 1-ε_low, 1+ε_high))`, `ρ = exp(log π - log π_old)`.

    Args:
        logps, old_logps, advantages: `(B, T)`.
        clip_low: ε_low. clip_high: ε_high (`None`: ε_low).

    Returns:
        `(loss, clipped)`: `(B, T)` per-token losses, and `(B, T)` bool where the clipped branch is the active one.

    Example:
        >>> loss, clipped = ppo_policy_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), 0.2)
        >>> loss, clipped
        (tensor([[-2.]]), tensor([[False]]))
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped_loss = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    return torch.maximum(unclipped, clipped_loss), clipped_loss > unclipped


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None
) -> tuple[Tensor, Tensor]:
    """PPO's value loss per token: `½ max((V - R)², (V_clip - R)²)`, `V_clip = V_old + clip(V - V_old, ±clip)`.

    Args:
        values: `(B, T)` the critic's current predictions. old_values: `(B, T)` its predictions at rollout time.
        returns: `(B, T)` targets (`gae`'s returns).
        clip: the clip range, or `None` for the plain squared error.

    Returns:
        `(loss, clipped)`: `(B, T)` per-token losses, and `(B, T)` bool where the clipped branch is the larger.

    Example:
        >>> loss, _ = clipped_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), 0.2)
        >>> loss  # the update is judged from the clipped prediction 0.2
        tensor([[0.3200]])
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped
