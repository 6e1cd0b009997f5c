"""select_prover and the Theorem 3.1 terms, against values computed by hand on an enumerable two-step policy and
against exact DP values on the planted task."""

import json
import random

import pytest
import torch

from trl_pav.cli import main
from trl_pav.generation import Generation
from trl_pav.prover_selection import ProverCandidate, ProverSelectionConfig, measure_provers, select_prover
from trl_pav.steps import StepFormat
from trl_pav.tasks import PlantedOracleScorer, PlantedProverPolicy, PlantedTask
from trl_pav.values import best_of_k, new_direction, prover_score, prover_update_angle, theorem_terms

# Two-step policy: step 1 is "a" or "b" (1/2 each); step 2 is "win" with probability 0.5 after "a", 0.1 after "b".
WIN = {"a": 0.5, "b": 0.1}


class TwoStepPolicy:
    name = "two-step"
    step_format = StepFormat(" ")

    def __init__(self, win=WIN):
        self.win = win

    def generate(self, requests, stop_at_step=False):
        out = []
        for req in requests:
            rng = random.Random(req.seed)
            steps = list(req.steps)
            new = []
            while len(steps) + len(new) < 2 and not (stop_at_step and new):
                if not steps and not new:
                    new.append(rng.choice("ab"))
                else:
                    first = (steps + new)[0]
                    new.append("win" if rng.random() < self.win[first] else "lose")
            out.append(Generation(steps=new, finished=len(steps) + len(new) == 2, num_tokens=len(new)))
        return out

    def score(self, prompts, steps):
        def value(s):
            if not s:
                return sum(self.win.values()) / 2
            return self.win[s[0]] if len(s) == 1 else float(s[1] == "win")

        return [[value(s[:h]) for h in range(len(s) + 1)] for s in steps]


class WinGrader:
    def grade(self, completion, gold=""):
        return float(completion.split()[-1] == "win")


def exact_terms(k):
    """E_s of the terms over the states the policy visits: the root, then "a" or "b" (1/2 each)."""
    root = theorem_terms(
        best_of_k(torch.tensor([0.5, 0.1], dtype=torch.float64), k),
        torch.tensor([0.5, 0.1], dtype=torch.float64),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    leaf = [0.5 * (q * (1 - q)) for q in WIN.values()]  # after step 1 the next step ends the trace: Q in {0, 1}
    return [0.5 * (float(r) + sum(leaf)) for r in root]


def test_theorem_terms_by_hand():
    # Root of the two-step policy under Bo2: Q^π = (0.5, 0.1), Q^μ = (0.75, 0.19), π = (1/2, 1/2).
    d, al, v = theorem_terms(torch.tensor([0.75, 0.19]), torch.tensor([0.5, 0.1]), torch.tensor([0.5, 0.5]))
    assert float(d) == pytest.approx(0.25 * 0.56**2)
    assert float(al) == pytest.approx(0.25 * 0.56 * 0.4)
    assert float(v) == pytest.approx(0.25 * 0.4**2)
    # Sampled steps: the unbiased sample moments (divisor M - 1).
    d, al, v = theorem_terms(torch.tensor([0.75, 0.19, 0.19]), torch.tensor([0.5, 0.1, 0.1]))
    assert float(v) == pytest.approx(((0.5 - 0.7 / 3) ** 2 + 2 * (0.1 - 0.7 / 3) ** 2) / 2)
    assert exact_terms(1) == pytest.approx([0.105, 0.105, 0.105])
    assert exact_terms(2) == pytest.approx([0.5 * (0.0784 + 0.17), 0.5 * (0.056 + 0.17), 0.105])


def test_score_k1_is_useless_and_a_reversing_prover_is_harmful():
    d = al = v = torch.tensor(0.3)
    assert float(new_direction(d, al, v)) == 0.0 and float(prover_score(d, al, v, 3.0)) == 0.0
    assert float(prover_update_angle(d, al, v, 3.0)) == 0.0
    # A^μ = -A^π with α = 2: the effective update is -A^π, the opposite of outcome-only RL.
    assert float(prover_update_angle(v, -v, v, 2.0)) == pytest.approx(180.0)
    assert float(prover_score(torch.tensor(2.0), torch.tensor(-1.0), torch.tensor(1.0), 2.0)) < 0
    with pytest.raises(ValueError, match="alpha"):
        prover_score(d, al, v, 0.0)


def test_two_step_policy_matches_hand_computed_terms():
    """Exact Q^π: every estimate's 95% bootstrap interval (over 400 traces) holds the hand-computed value."""
    policy = TwoStepPolicy()
    rows = select_prover(
        policy, ["?"] * 400, WinGrader(), [1, 2], ProverSelectionConfig(num_bootstrap=400), scorer=policy
    )
    by = {r.name: r for r in rows}
    for k in (1, 2):
        d, al, v = exact_terms(k)
        r = by[f"Bo{k}"]
        assert r.distinguishability_interval[0] <= d <= r.distinguishability_interval[1]
        assert r.alignment_interval[0] <= al <= r.alignment_interval[1]
    assert by["Bo1"].score == 0.0 and by["Bo1"].new_direction == 0.0 and rows[-1].name == "Bo1"
    d, al, v = (torch.tensor(x) for x in exact_terms(2))
    assert by["Bo2"].score_interval[0] <= float(prover_score(d, al, v, 1.0)) <= by["Bo2"].score_interval[1]


def test_monte_carlo_values_agree_with_exact_ones():
    """Same traces and next steps (same seeds); Q^π from 16 rollouts (two halves) instead of the exact scorer. The
    exact-value estimates lie inside the Monte-Carlo run's intervals, and K = 1 stays exactly useless."""
    policy = TwoStepPolicy()
    cfg = ProverSelectionConfig(num_bootstrap=400, n_rollouts=16)
    exact = {r.name: r for r in select_prover(policy, ["?"] * 300, WinGrader(), [1, 4], cfg, scorer=policy)}
    sel = measure_provers(policy, ["?"] * 300, WinGrader(), [1, 4], cfg)
    mc = {r.name: r for r in sel.ranking}
    assert sel.q_pi_source == "monte_carlo" and sel.rollouts > 0
    for name in ("Bo1", "Bo4"):
        for term in ("distinguishability", "alignment"):
            lo, hi = getattr(mc[name], f"{term}_interval")
            assert lo <= getattr(exact[name], term) <= hi, (name, term)
    assert mc["Bo1"].score == 0.0
    assert mc["Bo4"].base_distinguishability == pytest.approx(exact["Bo4"].base_distinguishability, rel=0.25)


def test_planted_gamma_sweep_ranks_the_extremes_below_the_middle():
    """Base: the γ = 5 procedural policy (the paper's SFT data), exact DP values, α = 3 (RL). The top prover is the
    middle of the log-spaced sweep (γ = 30); the weakest (γ = 1, uniform) and the strongest (γ = 1000, 10^4) score
    below it with separated 95% intervals, and beyond the peak the score falls as γ grows; μ = π scores 0.

    Measured (128 traces, 1,280 states): γ=30 0.497 [0.48, 0.50], 100 0.451, 1000 0.357 [0.30, 0.41], 10^4 0.344,
    γ=1 0.317 [0.12, 0.37], 10 0.267, 3 0.150, 5 (= π) 0."""
    task = PlantedTask()
    gammas = [1.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0, 10000.0]
    cands = [ProverCandidate(f"g{g:g}", scorer=PlantedOracleScorer(task, g)) for g in gammas]
    rows = select_prover(
        PlantedProverPolicy(task, 5.0),
        [task.prompt] * 128,
        task.grader,
        cands,
        ProverSelectionConfig(alpha=3.0, num_bootstrap=300),
        scorer=PlantedOracleScorer(task, 5.0),
    )
    by = {r.name: r for r in rows}
    assert rows[0].name == "g30"
    for extreme in ("g1", "g1000", "g10000"):
        assert by[extreme].score_interval[1] < by["g30"].score_interval[0], extreme
    assert by["g30"].score > by["g100"].score > by["g1000"].score > by["g10000"].score
    assert rows[-1].name == "g5" and rows[-1].score == pytest.approx(0.0, abs=1e-9)


def test_planted_k_sweep_k1_last_and_interior_best():
    task = PlantedTask()
    ks = [1, 2, 4, 8, 16, 32, 256]
    rows = select_prover(
        PlantedProverPolicy(task, 5.0),
        [task.prompt] * 64,
        task.grader,
        ks,
        ProverSelectionConfig(alpha=3.0, num_bootstrap=200),
        scorer=PlantedOracleScorer(task, 5.0),
    )
    assert rows[-1].name == "Bo1" and rows[-1].score == 0.0
    assert rows[0].name not in ("Bo2", "Bo256")


def test_bad_inputs_raise_clear_errors():
    policy = TwoStepPolicy()
    with pytest.raises(ValueError, match=r"'Bo8'.*K = 8.*4 rollouts per half"):
        select_prover(policy, ["?"] * 4, WinGrader(), [8], ProverSelectionConfig(n_rollouts=8))
    with pytest.raises(ValueError, match="distinct"):
        select_prover(policy, ["?"], WinGrader(), [2, ProverCandidate("Bo2", k=3)], scorer=policy)
    with pytest.raises(ValueError, match="next_steps must be >= 2"):
        ProverSelectionConfig(next_steps=1)
    with pytest.raises(ValueError, match="exactly one of k, scorer and policy"):
        ProverCandidate("x", k=2, scorer=policy)
    with pytest.raises(ValueError, match="do not vary"):  # a policy that always wins: no outcome direction
        never = TwoStepPolicy({"a": 1.0, "b": 1.0})
        select_prover(never, ["?"] * 8, WinGrader(), [2], scorer=never)


def run(capsys, argv):
    main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_on_the_planted_task(capsys):
    out = run(
        capsys,
        [
            *("select-prover", "--task", "planted", "--num_problems", "32", "--ks", "1", "8", "--gammas", "30"),
            *("--num_bootstrap", "50", "--alpha", "3"),
        ],
    )
    assert out["q_pi_source"] == "exact" and out["num_traces"] == 32
    assert [r["name"] for r in out["ranking"]][-1] == "Bo1" and out["best"] in ("Bo8", "gamma30")
    assert {"distinguishability_interval", "alignment_interval", "score", "prob_best"} <= set(out["ranking"][0])


def test_cli_takes_another_planted_task(capsys):
    options = '{"vocab_size": 4, "length": 6, "planted": [0, 0, 1]}'
    argv = ["select-prover", "--task", "planted", "--task_options", options, "--num_problems", "16"]
    out = run(capsys, [*argv, "--ks", "1", "4", "--gammas", "10", "--num_bootstrap", "20"])
    assert out["q_pi_source"] == "exact" and out["num_traces"] == 16
    from trl_pav.tasks import get_task

    with pytest.raises(ValueError, match=r"task 'planted' has no setting \['size'\]"):
        get_task("planted", '{"size": 4}')
    with pytest.raises(ValueError, match="task_options is not JSON"):
        get_task("planted", "{planted: 1}")
    with pytest.raises(ValueError, match="must be a JSON object"):
        get_task("planted", "[1, 2]")
    with pytest.raises(ValueError, match="no setting \\['step_format'\\]"):
        get_task("planted", '{"step_format": " "}')


def test_cli_on_arithmetic_procedural_policy(capsys):
    out = run(capsys, ["select-prover", "--task", "arithmetic", "--num_problems", "24", "--ks", "1", "4"])
    assert out["policy"].startswith("noisy-arithmetic") and out["ranking"][-1]["name"] == "Bo1"


def test_cli_on_an_hf_policy_folder(tmp_path, capsys):
    """A real Llama (a Markov chain writing iid symbols a/b) on a 2-symbol planted task: Q^π from rollouts."""
    from trl_pav.testing import markov_causal_lm

    task = PlantedTask(vocab_size=2, length=3, planted=(1, 1))
    tok = task.tokenizer()
    probs = {"a": 0.6, "b": 0.4}
    folder = tmp_path / "policy"
    markov_causal_lm(tok, {">": probs, " ": probs, "a": {" ": 1.0}, "b": {" ": 1.0}}).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(SystemExit, match="needs policy_model_name_or_path"):
        main(["select-prover", "--dataset_name", str(tmp_path / "x.jsonl"), "--num_problems", "2"])
    # The default planted task (15 symbols, length 10) cannot be solved by an a/b policy: a clear error.
    with pytest.raises(SystemExit, match="do not vary"):
        main(
            [
                *("select-prover", "--task", "planted", "--policy_model_name_or_path", str(folder)),
                *(
                    "--num_problems",
                    "2",
                    "--ks",
                    "1",
                    "--max_new_tokens",
                    "19",
                    "--n_rollouts",
                    "2",
                    "--next_steps",
                    "2",
                ),
            ]
        )


def test_cli_lookahead_on_an_hf_policy(tmp_path, capsys):
    """A real Llama (a Markov chain over a/b that stops after each symbol with probability 0.2) on a 2-symbol planted
    task, through the command line: the same JSON shape as the theorem's ranking."""
    from trl_pav.testing import markov_causal_lm

    task = PlantedTask(vocab_size=2, length=4, planted=(1, 1, 1))
    tok = task.tokenizer()
    probs = {"a": 0.7, "b": 0.3}
    after = {" ": 0.8, tok.eos_token: 0.2}
    folder = tmp_path / "policy"
    markov_causal_lm(tok, {">": probs, " ": probs, "a": after, "b": after}).save_pretrained(folder)
    tok.save_pretrained(folder)
    options = '{"vocab_size": 2, "length": 4, "planted": [1, 1, 1]}'
    argv = [
        *("select-prover", "--task", "planted", "--task_options", options, "--policy_model_name_or_path"),
        *(str(folder), "--num_problems", "200", "--ks", "1", "--gammas", "1", "50", "--max_new_tokens", "12"),
        *("--num_bootstrap", "100", "--n_rollouts", "4", "--method", "lookahead", "--lookahead_step_sizes", "5", "50"),
    ]
    out = run(capsys, argv)
    assert out["method"] == "lookahead" and out["num_traces"] == 200 and out["step_sizes"] == [5.0, 50.0]
    assert {r["name"] for r in out["ranking"]} == {"Bo1", "gamma1", "gamma50"}
    assert out["ranking"][0]["score_interval"][0] > 0  # tilting toward `b` steps beats the policy itself
    assert out["rollouts"] > 0  # Bo1 is valued by the policy's rollouts
    with pytest.raises(SystemExit):
        main([*argv, "--method", "bound"])


def test_run_select_prover_refuses_an_unknown_method():
    from trl_pav.prover_selection import SelectProverArguments, run_select_prover

    with pytest.raises(ValueError, match="method must be 'theorem' or 'lookahead', got 'bound'"):
        run_select_prover(SelectProverArguments(task="planted", method="bound"), ProverSelectionConfig())
