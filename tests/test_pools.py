"""Disjoint problem pools: no problem is in two pools, pools are deterministic, sized as asked, and the demo's
stages draw from such pools (the SFT problems included)."""

import itertools
import json
import random
from dataclasses import dataclass

import pytest

from trl_pav.demo import DemoConfig
from trl_pav.demo.arithmetic import demo_pools, demo_task, saved_pools, task_kwargs
from trl_pav.evaluation import ProblemPools
from trl_pav.tasks import ArithmeticTask, PlantedTask, train_base_policy


@dataclass(frozen=True)
class Item:
    prompt: str


@dataclass
class TinyTask:
    """An enumerable task: `size` distinct problems, drawn uniformly with repetition."""

    size: int

    def sample_problems(self, n: int, seed: int = 0) -> list[Item]:
        rng = random.Random(seed)
        return [Item(f"q{rng.randrange(self.size)}") for _ in range(n)]


def assert_disjoint(pools: ProblemPools, key=lambda p: p.prompt) -> None:
    for a, b in itertools.combinations(pools, 2):
        shared = {key(p) for p in pools[a]} & {key(p) for p in pools[b]}
        assert not shared, (a, b, sorted(shared)[:5])


def test_pools_are_disjoint_sized_and_distinct_on_an_enumerable_task():
    sizes = {"a": 30, "b": 50, "c": 20}
    pools = ProblemPools(TinyTask(120), sizes, seed=3)
    assert {n: len(pools[n]) for n in pools} == sizes
    assert_disjoint(pools)
    for name in pools:  # no repeats where not asked for
        assert len({p.prompt for p in pools[name]}) == sizes[name]
        assert pools.keys_of(name) == {p.prompt for p in pools[name]}


def test_a_repeats_pool_keeps_repetitions_but_none_of_the_other_pools_problems():
    pools = ProblemPools(TinyTask(40), {"eval": 10, "train": 500}, seed=0, repeats={"train"})
    train = [p.prompt for p in pools["train"]]
    assert len(train) == 500 and len(set(train)) < 500  # a training stream with repetitions
    assert set(train) == pools.keys_of("train") and not set(train) & pools.keys_of("eval")
    assert len(set(train)) == 30  # every problem the eval pool left over is trained on


def test_pools_are_deterministic_in_the_seed_and_do_not_depend_on_later_pools():
    task = TinyTask(10_000)
    a = ProblemPools(task, {"x": 40, "y": 60}, seed=7)
    assert a["x"] == ProblemPools(task, {"x": 40, "y": 60}, seed=7)["x"]
    assert a["y"] == ProblemPools(task, {"x": 40, "y": 60}, seed=7)["y"]
    assert a["x"] != ProblemPools(task, {"x": 40, "y": 60}, seed=8)["x"]
    longer = ProblemPools(task, {"x": 40, "y": 600, "z": 5}, seed=7)
    assert longer["x"] == a["x"] and longer["y"][:60] == a["y"]
    # The spec of a pool (what cache keys hold) changes exactly when the pool can.
    assert longer.spec("x") == a.spec("x") and longer.spec("y") != a.spec("y")
    assert ProblemPools.from_spec(task, longer.spec())["z"] == longer["z"]


def test_arithmetic_pools_are_disjoint_by_expression():
    task = ArithmeticTask()
    pools = ProblemPools(
        task, {"eval": 300, "label": 500, "sft": 20_000}, seed=0, key=lambda p: p.expression, repeats={"sft"}
    )
    assert [len(pools[n]) for n in pools] == [300, 500, 20_000]
    assert_disjoint(pools, key=lambda p: p.expression)
    # Prompts are a function of expressions, so the pools are disjoint by prompt too.
    assert_disjoint(pools)


def test_too_small_a_problem_space_is_a_clear_error():
    task = ArithmeticTask(max_operand=1, min_ops=1, max_ops=1)  # 1+1, 1-1, 1*1
    assert len(ProblemPools(task, {"a": 3}, key=lambda p: p.expression)["a"]) == 3
    with pytest.raises(ValueError, match=r"pool 'b' got 1 of 2 problems.*3 distinct problems"):
        ProblemPools(task, {"a": 2, "b": 2}, key=lambda p: p.expression, max_misses=2000)
    # A repeats pool still needs a problem no other pool holds.
    with pytest.raises(ValueError, match="pool 'train' got 0 of 5"):
        ProblemPools(task, {"a": 3, "train": 5}, key=lambda p: p.expression, repeats={"train"}, max_misses=2000)


def test_bad_pool_arguments_are_rejected():
    with pytest.raises(ValueError, match="size >= 0"):
        ProblemPools(TinyTask(10), {"a": -1})
    with pytest.raises(ValueError, match="unknown pools"):
        ProblemPools(TinyTask(10), {"a": 1}, repeats={"b"})
    with pytest.raises(KeyError, match="unknown pools"):
        ProblemPools(TinyTask(10), {"a": 1}).spec("b")
    with pytest.raises(ValueError, match="version"):
        ProblemPools.from_spec(TinyTask(10), {"version": 0, "seed": 0, "pools": []})


@pytest.mark.parametrize(
    "cfg",
    [DemoConfig(), DemoConfig.quick(), DemoConfig(realistic_task="arithmetic")],
    ids=["default", "quick", "arithmetic"],
)
def test_the_demo_stages_draw_disjoint_pools_including_the_sft_problems(cfg):
    pools = demo_pools(cfg)
    expected = {
        "policy_eval": 400,
        "step_eval": 200,
        "verifier_validation": 256,
        "preflight": 64,
        "search": cfg.search_problems,
        "label": cfg.label_problems,
        "rl_eval": cfg.rl_eval_problems,
        "rl_train": cfg.rl_train_problems,
        "sft": 64 * cfg.policy_steps,  # one problem per SFT sequence (batch 64)
    }
    assert {n: len(pools[n]) for n in pools} == expected
    keys = {n: {p.expression for p in pools[n]} for n in pools}
    for a, b in itertools.combinations(keys, 2):
        assert not keys[a] & keys[b], (a, b)
    # The evaluation pools, dealt before the SFT stream, keep the task's share of its smaller problems (1/2):
    # two operators of arithmetic's 2-3, two terms of the demo rewriting task's 2-3.
    if cfg.realistic_task == "rewrite":
        small = sum(p.expression.count("+") == 1 for p in pools["policy_eval"]) / 400
    else:
        small = sum(sum(c in "+-*" for c in p.expression) == 2 for p in pools["policy_eval"]) / 400
    assert 0.4 < small < 0.6


def test_saved_pools_rebuild_the_run_pools(tmp_path):
    cfg = DemoConfig.quick()
    pools = demo_pools(cfg)
    task = demo_task(DemoConfig.quick())
    spec = {**pools.spec(), "task": task.name, "task_kwargs": task_kwargs(task)}
    (tmp_path / "pools.json").write_text(json.dumps(spec))
    again = saved_pools(tmp_path)
    assert all(again[n] == pools[n] for n in pools)
    with pytest.raises(FileNotFoundError, match="re-run"):
        saved_pools(tmp_path / "missing")


def test_train_base_policy_takes_problems_only_for_arithmetic(tmp_path):
    with pytest.raises(ValueError, match="arithmetic"):
        train_base_policy(PlantedTask(), tmp_path, problems=ArithmeticTask().sample_problems(2))
    with pytest.raises(ValueError, match="empty"):
        train_base_policy(ArithmeticTask(), tmp_path, problems=[])
