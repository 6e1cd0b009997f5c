"""Keeping collective forward passes aligned across processes (ZeRO-3), and splitting work by process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

__all__ = ["Lockstep", "is_zero3", "outside_zero3_init", "process_shard", "process_state"]

T = TypeVar("T")


class Lockstep:
    """Makes every process run the same number of forward passes through a sharded model.

    Under DeepSpeed ZeRO-3 each forward pass gathers parameters from every process, so a process that runs fewer
    passes than another leaves it waiting forever. Before each batch of work the processes agree on the largest
    number of passes any of them needs (`agree`); the ones with less work run dummy passes to match. A process that
    has no more work calls `drain` and keeps matching the others' passes until every process has drained.

    With one process (or without `torch.distributed`) agreement is free: no dummy passes, no communication.

    Args:
        device: the device of the agreement tensor (the model's device; NCCL needs a CUDA tensor).

    Example:
        >>> lockstep = Lockstep(torch.device("cpu"))
        >>> lockstep.agree(3)  # one process: its own count
        3
        >>> lockstep.drain(lambda: None)  # nothing to wait for
        0
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    @property
    def world_size(self) -> int:
        dist = torch.distributed
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _max(self, passes: int, active: bool) -> tuple[int, bool]:
        if self.world_size == 1:
            return passes, active
        t = torch.tensor([passes, int(active)], dtype=torch.long, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t[0]), bool(t[1])

    def agree(self, passes: int) -> int:
        """The number of forward passes every process runs this round (at least `passes`)."""
        if passes < 0:
            raise ValueError(f"Lockstep.agree: passes must be >= 0, got {passes}")
        return self._max(passes, True)[0]

    def drain(self, dummy_pass: Callable[[], None]) -> int:
        """Match the other processes' rounds with `dummy_pass` until all have drained; return the dummy passes run."""
        ran = 0
        while True:
            passes, any_active = self._max(0, False)
            if not any_active:
                return ran
            for _ in range(passes):
                dummy_pass()
            ran += passes


def process_state():
    """accelerate's `PartialState`, on the CPU when no CUDA device is visible.

    Without `cpu=True` accelerate forms no process group among CPU processes, and every one of them acts as main.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_zero3(accelerator) -> bool:
    """True when `accelerator` runs DeepSpeed ZeRO stage 3 (models sharded: their forward passes are collective)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


@contextlib.contextmanager
def outside_zero3_init():
    """Inside, `from_pretrained` loads whole models even where a ZeRO-3 config is registered (a Trainer under
    DeepSpeed ZeRO-3 registers one; transformers then loads every model inside `deepspeed.zero.Init`, which partitions
    its weights). The registration is restored on exit, so a DeepSpeed engine built afterwards shards the model."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # read only: transformers has no public getter for the object
    registered = ref() if ref is not None else None
    if registered is None or not registered.is_zero3():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(registered)


def process_shard(items: Sequence[T], process_index: int, num_processes: int) -> tuple[list[int], list[T]]:
    """This process's contiguous share of `items` and their global indices (shares differ in size by at most 1).

    Example:
        >>> process_shard(["a", "b", "c", "d", "e"], 1, 2)
        ([2, 3, 4], ['c', 'd', 'e'])
    """
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index {process_index} outside [0, {num_processes})")
    n = len(items)
    start = process_index * n // num_processes
    stop = (process_index + 1) * n // num_processes
    return list(range(start, stop)), list(items[start:stop])
