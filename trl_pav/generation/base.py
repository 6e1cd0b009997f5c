"""The policy protocol: anything that continues a partial trace, one sampled continuation per request.

Every request carries its own seed, and backends draw each sample from that seed alone (not from a global random
stream), so a result does not depend on how requests are batched, sharded, resumed or split across processes.

A `GenerationGroup` asks for `n` samples continuing one prefix under one seed (the labeler's `n_mc` rollouts of a
prefix). Sample r of a group depends on (group seed, r) alone. A policy with a `generate_groups` method (vLLM: one
`SamplingParams(n=n, seed=seed)` request per group, one prefill) answers groups itself; every other policy is sent
the group as `n` single requests seeded `member_seed(seed, r)` (`generate_groups` below), so procedural and HF
policies need no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ..steps import StepFormat

__all__ = [
    "Generation",
    "GenerationGroup",
    "GenerationRequest",
    "GroupPolicy",
    "Policy",
    "continue_trace",
    "describe",
    "generate_groups",
    "group_generations",
    "group_samples",
    "gumbel_noise",
    "member_seed",
    "mix_seed",
    "policy_fingerprint",
    "sample_requests",
    "weights_hash",
]

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class GenerationRequest:
    """Continue `prompt` + the steps taken so far.

    Attributes:
        prompt: the rendered prompt text (a chat template already applied).
        steps: the steps taken so far (possibly none).
        seed: the seed of this one sample (an int in [0, 2**32)).
    """

    prompt: str
    steps: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Generation:
    """One sampled continuation.

    Attributes:
        steps: the new steps (one when generation stopped at a step boundary; none if nothing usable came out).
        finished: whether the trace ended (end-of-sequence reached, or a policy-specific end).
        num_tokens: tokens generated for this continuation (the compute it cost).
        truncated: whether generation hit the token limit before finishing.
    """

    steps: list[str] = field(default_factory=list)
    finished: bool = False
    num_tokens: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class GenerationGroup:
    """`n` samples continuing `prompt` + `steps`, all drawn under one seed.

    Sample r (for r in `first .. first + n - 1`) depends on `(seed, r)` alone, so a later group with
    `first = n` adds new samples to the first ones (pit confirmation) and results do not depend on how groups are
    batched. How r is mixed into the seed is the backend's: `member_seed(seed, r)` when the group is sent as single
    requests (`GenerationGroup.requests`), `seed + r` on vLLM (its convention for the children of
    `SamplingParams(n, seed)`).

    Attributes:
        prompt: the rendered prompt text (a chat template already applied).
        steps: the steps taken so far (possibly none).
        seed: the seed of the group (an int in [0, 2**32)).
        n: how many samples (>= 1).
        first: index of the group's first sample.

    Example:
        >>> g = GenerationGroup("Q:1+1?\\n", seed=7, n=2)
        >>> [r.seed for r in g.requests()] == [member_seed(7, 0), member_seed(7, 1)]
        True
    """

    prompt: str
    steps: tuple[str, ...] = ()
    seed: int = 0
    n: int = 1
    first: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"GenerationGroup: n must be an int >= 1, got {self.n!r}")
        if not isinstance(self.first, int) or self.first < 0:
            raise ValueError(f"GenerationGroup: first must be an int >= 0, got {self.first!r}")

    def requests(self) -> list[GenerationRequest]:
        """The group as `n` single requests, sample r seeded `member_seed(seed, r)`."""
        return [
            GenerationRequest(self.prompt, tuple(self.steps), member_seed(self.seed, r))
            for r in range(self.first, self.first + self.n)
        ]


@runtime_checkable
class Policy(Protocol):
    """A policy that continues partial traces. HF models, vLLM engines and procedural task policies implement it."""

    name: str
    step_format: StepFormat

    def generate(self, requests: Sequence[GenerationRequest], stop_at_step: bool = False) -> list[Generation]:
        """One continuation per request: the next step only (`stop_at_step=True`) or the rest of the trace."""
        ...


@runtime_checkable
class GroupPolicy(Policy, Protocol):
    """A policy that samples a whole `GenerationGroup` as one request (shared prefill), e.g. `VLLMPolicy`."""

    def generate_groups(self, groups: Sequence[GenerationGroup], stop_at_step: bool = False) -> list[list[Generation]]:
        """`group.n` continuations per group, in sample order."""
        ...


def generate_groups(
    policy: Policy, groups: Sequence[GenerationGroup], stop_at_step: bool = False
) -> list[list[Generation]]:
    """`group.n` continuations of every group: through `policy.generate_groups` when the policy has it, else as
    `n` single requests per group (`GenerationGroup.requests`) in one `generate` call.

    Raises:
        RuntimeError: if the policy returns the wrong number or kind of results (naming the policy and the group).

    Example:
        >>> from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
        >>> task = ArithmeticTask()
        >>> out = generate_groups(NoisyArithmeticPolicy(task, 0.1), [GenerationGroup("Q:2*3+4?\\n", seed=1, n=3)])
        >>> [len(g) for g in out], out[0][0].steps
        ([3], ['2*3=6', '6+4=10', '#### 10'])
    """
    if not groups:
        return []
    native = getattr(policy, "generate_groups", None)
    name = getattr(policy, "name", type(policy).__name__)
    if callable(native):
        out = native(list(groups), stop_at_step)
        if out is None or len(out) != len(groups):
            raise RuntimeError(f"policy {name!r} returned {0 if out is None else len(out)} groups for {len(groups)}")
        for k, (group, gens) in enumerate(zip(groups, out)):
            if len(gens) != group.n or not all(isinstance(g, Generation) for g in gens):
                raise RuntimeError(
                    f"policy {name!r} returned {len(gens)} results for group {k} of {group.n} samples "
                    f"(types {sorted({type(g).__name__ for g in gens})})"
                )
        return [list(gens) for gens in out]
    flat = [req for group in groups for req in group.requests()]
    gens = policy.generate(flat, stop_at_step)
    if gens is None or len(gens) != len(flat) or not all(isinstance(g, Generation) for g in gens):
        got = "nothing" if not gens else f"{len(gens)} results of types {sorted({type(g).__name__ for g in gens})}"
        raise RuntimeError(f"policy {name!r} returned {got} for {len(flat)} requests")
    out, pos = [], 0
    for group in groups:
        out.append(list(gens[pos : pos + group.n]))
        pos += group.n
    return out


def continue_trace(prompt: str, steps: Sequence[str], step_format: StepFormat) -> str:
    """The text a policy continues from: the prompt, the steps joined, and a separator when there are steps.

    Example:
        >>> continue_trace("Q:2*3+1?\\n", ["2*3=6"], StepFormat())
        'Q:2*3+1?\\n2*3=6\\n'
    """
    return prompt + (step_format.join(steps) + step_format.separator if steps else "")


def sample_requests(
    prompts: Sequence[str], n: int, seed: int, stream: int = 0, prompt_ids: Sequence[int] | None = None
) -> list[GenerationRequest]:
    """`n` from-scratch requests per prompt, seeded by (seed, prompt id, stream + sample index), grouped by prompt.

    Prompt ids default to positions; pass stable ids to get the same samples whatever the batch.
    """
    if n < 1:
        raise ValueError(f"need at least one sample per prompt, got {n}")
    ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} prompt ids")
    return [
        GenerationRequest(p, seed=mix_seed(seed, ids[i], stream + j)) for i, p in enumerate(prompts) for j in range(n)
    ]


def group_generations(generations: Sequence[Generation], n: int) -> list[list[Generation]]:
    """`n` consecutive generations per prompt (the layout `sample_requests` produces), finish flags kept.

    Example:
        >>> gens = [Generation(["1+1=2", "#### 2"], finished=True), Generation(["1+1=3"], truncated=True)]
        >>> [[g.finished for g in group] for group in group_generations(gens, 1)]
        [[True], [False]]
    """
    if n < 1 or len(generations) % n:
        raise ValueError(f"cannot group {len(generations)} generations into groups of {n}")
    return [list(generations[k : k + n]) for k in range(0, len(generations), n)]


def group_samples(generations: Sequence[Generation], n: int) -> list[list[list[str]]]:
    """Steps of `n` consecutive generations per prompt (the layout `sample_requests` produces).

    This drops whether each trace finished; selection among candidates needs that, so search uses
    `group_generations`.
    """
    return [[g.steps for g in group] for group in group_generations(generations, n)]


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer finaliser computed in int64 with constants < 2**31, so products never overflow.
    x = x & _MASK32
    x = (x ^ (x >> 16)) * 0x7FEB352D & _MASK32
    x = (x ^ (x >> 15)) * 0x2C1B3C6D & _MASK32
    return x ^ (x >> 16)


def _hash32_int(x: int) -> int:
    # `_hash32` on a Python int (bit for bit the same): scalar tensors cost a millisecond per seed.
    x &= _MASK32
    x = (x ^ (x >> 16)) * 0x7FEB352D & _MASK32
    x = (x ^ (x >> 15)) * 0x2C1B3C6D & _MASK32
    return x ^ (x >> 16)


def mix_seed(*parts: int) -> int:
    """Combine integers (a base seed, a problem index, a stage, a sample index) into one 32-bit seed.

    Example:
        >>> mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    h = 0x9E3779B9
    for p in parts:
        h = _hash32_int(h ^ _hash32_int(int(p)))
    return h


def member_seed(group_seed: int, r: int) -> int:
    """The seed of sample r of a group seeded `group_seed` when the group is sent as single requests.

    It continues `mix_seed`'s fold, so `member_seed(mix_seed(*parts), r) == mix_seed(*parts, r)`: a labeler that
    seeded rollout r of a prefix `mix_seed(run, problem, stage, prefix, r)` draws the same samples from groups.

    Example:
        >>> member_seed(mix_seed(0, 3, 2), 5) == mix_seed(0, 3, 2, 5)
        True
    """
    return _hash32_int(int(group_seed) ^ _hash32_int(int(r)))


def gumbel_noise(seeds: torch.Tensor, step: int, vocab_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Counter-based Gumbel noise: row b depends only on `(seeds[b], step)`, never on the batch around it.

    `argmax(logits / T + gumbel_noise(...))` is an exact sample from `softmax(logits / T)`.

    Args:
        seeds: `(B,)` int64 per-row seeds.
        step: index of the token being generated (0 for the first new token).
        vocab_size: V.

    Returns:
        `(B, V)` float32 Gumbel(0, 1) samples.
    """
    device = device or seeds.device
    row = _hash32(seeds.to(device=device, dtype=torch.int64) ^ _hash32(torch.tensor(step + 1, device=device)))
    cols = torch.arange(vocab_size, device=device, dtype=torch.int64)
    h = _hash32(row[:, None] * 0x01000193 ^ _hash32(cols + 0x5BD1E995)[None, :])
    u = (h.to(torch.float64) + 0.5) / 2.0**32
    return (-torch.log(-torch.log(u))).to(torch.float32)


def weights_hash(model: torch.nn.Module) -> str:
    """A content hash of a model's parameters and buffers (names, dtypes, shapes and bytes).

    Two models hash alike exactly when their state dicts are equal, wherever the model was loaded from.

    Example:
        >>> a = torch.nn.Linear(2, 1)
        >>> weights_hash(a) == weights_hash(a), len(weights_hash(a))
        (True, 32)
    """
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def describe(obj) -> dict:
    """The settings of an object that can change what it produces: its class and public scalar attributes (with
    dataclasses described, and tuples, lists and string-keyed dicts of such values kept).

    Used for graders and procedural policies in labeling fingerprints (a repr would hold a memory address).

    Example:
        >>> describe(StepFormat("\\n\\n"))["separator"]
        '\\n\\n'
    """
    import dataclasses

    out: dict = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    fields = (
        {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.repr}
        if dataclasses.is_dataclass(obj)
        else {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        if hasattr(obj, "__dict__")
        else {}
    )
    for k, v in fields.items():
        value = _describe_value(v)
        if value is not _SKIP:
            out[k] = value
    return out


_SKIP = object()


def _describe_value(v):
    """A setting as JSON-ready data: scalars as they are, dataclasses described, tuples and lists of those as lists
    (a planted string), string-keyed dicts of them as dicts (error rates); anything else (models, tensors,
    callables) is skipped."""
    import dataclasses

    if isinstance(v, (int, float, str, bool, type(None))):
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return describe(v)
    if isinstance(v, (tuple, list)):
        items = [_describe_value(x) for x in v]
        return _SKIP if any(x is _SKIP for x in items) else items
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        entries = {k: _describe_value(x) for k, x in v.items()}
        return _SKIP if any(x is _SKIP for x in entries.values()) else entries
    return _SKIP


def policy_fingerprint(policy: Policy) -> dict:
    """Everything about a policy that changes its samples: its `fingerprint()` when it has one (HF and vLLM
    policies: sampling settings plus a hash of the weights), else `describe(policy)`."""
    own = getattr(policy, "fingerprint", None)
    return dict(own()) if callable(own) else describe(policy)
