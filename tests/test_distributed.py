"""Lockstep verifier passes across processes: what a ZeRO-3-sharded verifier needs, checked on two CPU processes
with a model whose every forward pass is a collective (as ZeRO-3's parameter gathering is)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import torch

from trl_pav import Lockstep, PAVMetadata, PAVVerifier
from trl_pav.distributed import process_shard
from trl_pav.testing import char_tokenizer, tiny_token_classifier

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from accelerate import PartialState
    from trl_pav import Lockstep, PAVMetadata, PAVVerifier
    from trl_pav.testing import char_tokenizer, tiny_token_classifier

    state = PartialState(cpu=True)
    rank = state.process_index
    torch.manual_seed(0)
    tok = char_tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), batch_size=2)
    if sys.argv[2] == "lockstep":
        verifier.lockstep = Lockstep("cpu")
    passes = []

    def collective(module, args):  # every pass meets the other process, as a ZeRO-3 parameter gather does
        t = torch.ones(1)
        dist.all_reduce(t)
        passes.append(int(t.item()))

    verifier.model.register_forward_pre_hook(collective)
    traces = [["1+2=3"], ["3*4=12", "#### 12"], ["5-1=4"], ["2+2=4", "#### 4"], ["9-3=6"]]
    # Unequal work: rank 0 scores 5 traces (3 passes) in one call, then 1 more; rank 1 scores 1 trace once.
    calls = [traces, traces[:1]] if rank == 0 else [traces[1:2]]
    scores = [verifier.score(["Q:x?\\n"] * len(c), c) for c in calls]
    drained = verifier.drain()
    json.dump({"passes": len(passes), "drained": drained, "scores": scores}, open(f"{sys.argv[1]}/{rank}.json", "w"))
    """
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lockstep_gives_every_process_the_same_passes(tmp_path):
    script = tmp_path / "lockstep.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
    subprocess.run([*cmd, str(_port()), str(script), str(tmp_path), "lockstep"], env=env, check=True, timeout=300)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    # Rank 0 needs 3 + 1 passes, rank 1 needs 1: both run 4 (rank 1: 2 padding passes in its call, 1 while draining).
    assert r0["passes"] == r1["passes"] == 4 and r0["drained"] == 0 and r1["drained"] == 1
    # Padding passes change nothing: scores equal those of one process scoring alone.
    torch.manual_seed(0)
    tok = char_tokenizer()
    alone = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), batch_size=2)
    traces = [["1+2=3"], ["3*4=12", "#### 12"], ["5-1=4"], ["2+2=4", "#### 4"], ["9-3=6"]]
    expected = alone.score(["Q:x?\n"] * 5, traces)
    torch.testing.assert_close(r0["scores"][0], expected)
    torch.testing.assert_close(r1["scores"][0], expected[1:2])


def test_single_process_lockstep_is_free():
    tok = char_tokenizer()
    verifier = PAVVerifier(tiny_token_classifier(tok), tok, PAVMetadata(), batch_size=1, lockstep=Lockstep())
    calls = []
    verifier.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    verifier.score(["Q:x?\n"] * 3, [["1+2=3"]] * 3)
    assert len(calls) == 3 and verifier.drain() == 0 and len(calls) == 3


def test_process_shard_covers_every_item_once():
    items = list(range(11))
    for world in (1, 2, 3, 4):
        shards = [process_shard(items, r, world) for r in range(world)]
        assert [i for ids, _ in shards for i in ids] == items
        assert max(len(ids) for ids, _ in shards) - min(len(ids) for ids, _ in shards) <= 1
