import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from trl_pav import best_of_k
from trl_pav.generation import Generation
from trl_pav.labeling import LabelingConfigMismatch, MCLabelConfig, MCLabeler, load_labels
from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy, PlantedProverPolicy, PlantedTask


def binom_two_sided_p(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial p-value (sum of outcomes no more likely than k)."""
    if p in (0.0, 1.0):
        return 1.0 if k == n * p else 0.0
    pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-9)))


def quiet(**kw):
    return MCLabelConfig(show_progress=False, **kw)


def test_planted_labels_match_exact_dp():
    """Labels from the procedural prover lie within the Monte-Carlo interval of the exact DP values."""
    task = PlantedTask(vocab_size=4, length=6, planted=(1, 2, 1))
    gamma, n_mc = 2.0, 40
    labeler = MCLabeler(PlantedProverPolicy(task, gamma), task.grader, quiet(n_cov=4, n_mc=n_mc, strategy="all"))
    ds = labeler.label(task.problems_dataset(40))
    pvals = []
    for row in ds:
        exact = task.exact_values(gamma, row["completions"])
        assert row["root_value"] * n_mc == pytest.approx(round(row["root_value"] * n_mc))
        pvals.append(binom_two_sided_p(round(row["root_value"] * n_mc), n_mc, exact[0]))
        for h, (label, count) in enumerate(zip(row["labels"], row["label_rollouts"]), start=1):
            if count == 0:  # the whole trace: its own exact grade
                assert h == len(row["completions"]) and label == task.grader.grade(" ".join(row["completions"]))
                continue
            assert count == n_mc
            pvals.append(binom_two_sided_p(round(label * n_mc), n_mc, exact[h]))
    assert len(pvals) > 150
    # At a 99% bound about 1% of honest estimates fall outside; allow 3%, and nothing wildly off.
    outside = sum(p < 0.01 for p in pvals) / len(pvals)
    assert outside <= 0.03, outside
    assert min(pvals) > 1e-6


def test_arithmetic_labels_match_analytic_values():
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate=0.15)
    n_mc = 30
    ds = MCLabeler(policy, task.grader, quiet(n_cov=3, n_mc=n_mc, strategy="all")).label(
        task.problems_dataset(30, seed=5)
    )
    pvals = []
    for row in ds:
        for h, (label, count) in enumerate(zip(row["labels"], row["label_rollouts"]), start=1):
            exact = policy.exact_value(row["prompt"], row["completions"][:h])
            if count:
                pvals.append(binom_two_sided_p(round(label * n_mc), n_mc, exact))
            else:
                assert label == exact  # the complete trace
    assert sum(p < 0.01 for p in pvals) / len(pvals) <= 0.03 and min(pvals) > 1e-6


def test_bok_labels_are_the_transform_without_extra_rollouts(tmp_path):
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, error_rate=0.2)
    problems = task.problems_dataset(12, seed=1)
    runs = {}
    for k in (1, 4):
        labeler = MCLabeler(policy, task.grader, quiet(n_cov=2, n_mc=8, prover_k=k, strategy="all"))
        ds = labeler.label(problems, tmp_path / f"k{k}")
        runs[k] = (ds, load_labels(tmp_path / f"k{k}")[1])
    (d1, m1), (d4, m4) = runs[1], runs[4]
    assert d1["labels"] == d4["labels"]
    assert m1["rollouts"] == m4["rollouts"] and m1["generated_tokens"] == m4["generated_tokens"]
    for row in d4:
        # Unbiased Best-of-4 from the success counts (pass@k), exact grades through the transform.
        for label, c, n, got in zip(row["labels"], row["label_successes"], row["label_rollouts"], row["prover_labels"]):
            if n:
                assert label == c / n
                assert got == pytest.approx(1 - math.comb(n - c, 4) / math.comb(n, 4))
            else:
                assert got == best_of_k(torch.tensor(label, dtype=torch.float64), 4).item()
        assert row["prover"] == "bo4" and row["target"] == "q_pi"
    assert d1[0]["prover_labels"] == d1[0]["labels"]


def test_first_pit_finds_true_first_error_with_fewer_rollouts():
    task = ArithmeticTask(min_ops=3, max_ops=4)
    policy = NoisyArithmeticPolicy(task, error_rate=0.25)
    problems = task.problems_dataset(40, seed=2)
    results = {}
    for strategy in ("first_pit", "all"):
        labeler = MCLabeler(policy, task.grader, quiet(n_cov=4, n_mc=8, strategy=strategy))
        results[strategy] = (labeler.label(problems), labeler.last_metadata)
    ds, meta = results["first_pit"]
    failing = [r for r in ds if r["seed_outcome"] == 0.0]
    assert len(failing) > 30
    hits = sum(r["first_pit"] == task.first_error(r["expression"], r["completions"]) for r in failing)
    rate = hits / len(failing)
    print(
        f"first-pit located the true first error in {rate:.1%} of {len(failing)} failing traces; rollouts "
        f"{meta['rollouts']} vs {results['all'][1]['rollouts']} labeling every prefix"
    )
    assert rate >= 0.85
    assert meta["rollouts"] < results["all"][1]["rollouts"]
    # Steps after the pit that were never measured carry no label (masked: the paper leaves them out of training);
    # binary-search probes there keep their measurement, and the finished trace's last step its exact grade.
    for r in failing:
        pit, n_steps = r["first_pit"], len(r["completions"])
        assert r["labels"][pit] == 0.0
        assert all(lab is not None for lab in r["labels"][:pit])
        for h in range(pit + 1, n_steps):
            measured = r["label_rollouts"][h] > 0 or (h == n_steps - 1 and r["seed_finished"])
            assert (r["labels"][h] is not None) == measured
        assert any(lab is None for lab in r["labels"]) or n_steps - pit <= 2 + math.ceil(math.log2(n_steps))
        probes_after = sum(c > 0 for c in r["label_rollouts"][pit + 1 :])
        assert probes_after <= math.ceil(math.log2(n_steps))
    assert sum(lab is None for r in failing for lab in r["labels"]) > 10


def test_pit_confirmation_reduces_false_pits():
    """With n_mc = 4 a prefix of true value (1-p)^r often shows 0/4; confirming a candidate pit with more rollouts
    makes the pit the true first error more often, checked against the exact checker."""
    task = ArithmeticTask(min_ops=4, max_ops=5)
    policy = NoisyArithmeticPolicy(task, error_rate=0.35)
    problems = task.problems_dataset(60, seed=3)
    rates, rollouts = {}, {}
    for confirm in (0, 12):
        labeler = MCLabeler(policy, task.grader, quiet(n_cov=4, n_mc=4, pit_confirm_rollouts=confirm))
        ds = labeler.label(problems)
        failing = [r for r in ds if r["seed_outcome"] == 0.0]
        hits = sum(r["first_pit"] == task.first_error(r["expression"], r["completions"]) for r in failing)
        rates[confirm], rollouts[confirm] = hits / len(failing), labeler.last_metadata["rollouts"]
        for r in failing:  # a confirmed pit pooled its rollouts
            pit = r["first_pit"]
            if pit >= 0 and r["label_rollouts"][pit]:
                assert r["label_rollouts"][pit] == 4 + confirm
    # The false-pit share at least halves (a 0/4 probe happens with probability (1-Q)^4, 0/16 with (1-Q)^16).
    assert 1 - rates[12] <= 0.5 * (1 - rates[0]) and rates[0] < 0.95, rates
    assert rollouts[12] > rollouts[0]


def test_truncated_seed_traces_drop_their_trailing_piece():
    """A seed trace cut at the token limit keeps only its complete steps, and its last complete step is measured
    (not labeled with the failed outcome)."""

    class Cut:
        name, step_format = "cut", ArithmeticTask().step_format

        def __init__(self):
            self.inner = NoisyArithmeticPolicy(ArithmeticTask(), error_rate=0.0)

        def generate(self, requests, stop_at_step=False):
            out = self.inner.generate(requests, stop_at_step)
            for req, g in zip(requests, out):
                if not req.steps and g.steps:  # seed traces: cut inside the last step
                    g.steps = [*g.steps[:-1], g.steps[-1][:3]]
                    g.finished, g.truncated = False, True
            return out

    task = ArithmeticTask()
    ds = MCLabeler(Cut(), task.grader, quiet(n_cov=1, n_mc=4)).label(task.problems_dataset(6, seed=4))
    for row in ds:
        full = task.step_format.split(task.step_format.join(row["completions"]))
        assert all(task.step_labels(row["expression"], full))  # no partial piece left
        assert not row["completions"][-1].startswith("####")
        assert row["labels"][-1] == 1.0 and row["label_rollouts"][-1] == 4  # measured: error rate 0


def test_bad_inputs():
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, 0.1)
    with pytest.raises(ValueError, match="n_mc must be >= 1"):
        MCLabelConfig(n_mc=0)
    with pytest.raises(ValueError, match="unknown prover 'oracle'"):
        MCLabelConfig(prover="oracle")
    with pytest.raises(ValueError, match="needs a prover_policy"):
        MCLabeler(policy, task.grader, quiet(prover="policy"))
    labeler = MCLabeler(policy, task.grader, quiet(n_cov=1, n_mc=2))
    with pytest.raises(ValueError, match="problems list is empty"):
        labeler.label([])
    with pytest.raises(ValueError, match="problem 1: no gold answer"):
        labeler.label([{"prompt": "Q:1+2?\n", "gold": "3"}, {"prompt": "Q:1+2?\n"}])
    with pytest.raises(ValueError, match="problem 0: field 'prompt' must be a non-empty string"):
        labeler.label([{"prompt": "", "gold": "3"}])

    class Silent:
        name, step_format = "silent", task.step_format

        def generate(self, requests, stop_at_step=False):
            return []

    with pytest.raises(RuntimeError, match="policy 'silent' returned nothing for 1 requests"):
        MCLabeler(Silent(), task.grader, quiet(n_cov=1, n_mc=1)).label([{"prompt": "Q:1+2?\n", "gold": "3"}])

    class Empty(Silent):
        name = "empty"

        def generate(self, requests, stop_at_step=False):
            return [Generation(steps=[], finished=True) for _ in requests]

    with pytest.raises(RuntimeError, match="produced no steps in any of 2 seed traces"):
        MCLabeler(Empty(), task.grader, quiet(n_cov=2, n_mc=1)).label([{"prompt": "Q:1+2?\n", "gold": "3"}])


SCRIPT = textwrap.dedent(
    """
    import sys
    from trl_pav.labeling import MCLabelConfig, MCLabeler
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
    task = ArithmeticTask(min_ops=3, max_ops=4)
    cfg = MCLabelConfig(n_cov=4, n_mc=16, shard_size=2, seed=7, show_progress=False, strategy=sys.argv[2])
    MCLabeler(NoisyArithmeticPolicy(task, 0.2), task.grader, cfg).label(task.problems_dataset(120, seed=3), sys.argv[1])
    """
)


def test_kill_and_resume_gives_identical_dataset(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "first_pit"], env=env)
    shard_dir = killed / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_dir.glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shard_dir.glob("shard-*.json")))
    assert 3 <= done_before < 60, "the run must be killed mid-way"
    assert not (killed / "dataset").exists()
    subprocess.run([sys.executable, str(script), str(killed), "first_pit"], env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, str(script), str(clean), "first_pit"], env=env, check=True)
    resumed_ds, resumed_meta = load_labels(killed)
    clean_ds, clean_meta = load_labels(clean)
    assert resumed_ds.to_list() == clean_ds.to_list()
    assert resumed_meta["shards_found_finished"] == done_before
    assert resumed_meta["rollouts"] == clean_meta["rollouts"]
    # A changed configuration refuses to mix with the old shards.
    result = subprocess.run([sys.executable, str(script), str(killed), "all"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "LabelingConfigMismatch" in result.stderr
    assert json.loads((killed / "manifest.json").read_text())["config"]["strategy"] == "first_pit"


def test_overwrite_discards_old_shards(tmp_path):
    task = ArithmeticTask()
    policy = NoisyArithmeticPolicy(task, 0.2)
    problems = task.problems_dataset(4, seed=0)
    MCLabeler(policy, task.grader, quiet(n_cov=1, n_mc=2)).label(problems, tmp_path)
    with pytest.raises(LabelingConfigMismatch, match="different labeling run"):
        MCLabeler(policy, task.grader, quiet(n_cov=1, n_mc=3)).label(problems, tmp_path)
    ds = MCLabeler(policy, task.grader, quiet(n_cov=1, n_mc=3, overwrite=True)).label(problems, tmp_path)
    assert load_labels(tmp_path)[1]["config"]["n_mc"] == 3 and len(ds) == 4


MULTI = textwrap.dedent(
    """
    import sys
    from trl_pav.labeling import MCLabelConfig, MCLabeler
    from trl_pav.tasks import ArithmeticTask, NoisyArithmeticPolicy
    task = ArithmeticTask()
    cfg = MCLabelConfig(n_cov=2, n_mc=6, shard_size=3, seed=5, show_progress=False)
    MCLabeler(NoisyArithmeticPolicy(task, 0.2), task.grader, cfg).label(task.problems_dataset(20, seed=8), sys.argv[1])
    """
)


def test_two_processes_under_accelerate_equal_one(tmp_path):
    script = tmp_path / "multi.py"
    script.write_text(MULTI)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
    ]
    subprocess.run([*launcher, str(script), str(tmp_path / "two")], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, check=True, timeout=300)
    two, two_meta = load_labels(tmp_path / "two")
    one, one_meta = load_labels(tmp_path / "one")
    assert two_meta["num_processes"] == 2 and one_meta["num_processes"] == 1
    assert two.to_list() == one.to_list()
    assert two_meta["rollouts"] == one_meta["rollouts"]


class _ConstantGrader:
    def __init__(self, value):
        self.value = value

    def grade(self, completion, gold):
        return self.value


@pytest.mark.parametrize(("grade", "success"), [(0.9, 1.0), (0.5, 1.0), (0.4, 0.0)])
def test_soft_grades_count_as_successes_by_one_threshold(grade, success):
    """Labels, the root value, the seed outcome and the online scorer all read a grade >= 0.5 as a success."""
    from trl_pav import MCStepScorer

    task = ArithmeticTask()
    policy, problems = NoisyArithmeticPolicy(task, 0.3), task.problems_dataset(2)
    config = MCLabelConfig(n_cov=1, n_mc=4, strategy="all", show_progress=False)
    row = MCLabeler(policy, _ConstantGrader(grade), config).label(problems)[0]
    assert row["labels"] == [success] * len(row["labels"])
    assert row["root_value"] == success and row["seed_outcome"] == success
    scorer = MCStepScorer(policy, _ConstantGrader(grade), n_rollouts=4)
    assert scorer.score([problems[0]["prompt"]], [["x"]], golds=[problems[0]["gold"]]) == [[success, success]]


@pytest.mark.parametrize("grade", [float("nan"), 1.5, -0.1])
def test_a_grade_outside_0_1_stops_labeling_when_it_comes_back(grade):
    task = ArithmeticTask()
    config = MCLabelConfig(n_cov=1, n_mc=4, strategy="all", show_progress=False)
    with pytest.raises(ValueError, match=r"the grader returned .* for completion 0 \('.*'\): grades must be finite"):
        MCLabeler(NoisyArithmeticPolicy(task, 0.3), _ConstantGrader(grade), config).label(task.problems_dataset(2))
