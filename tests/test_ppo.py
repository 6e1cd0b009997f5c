"""PAV-PPO: the math against hand-computed and enumerable values, the reward stream inside the trainer, the critic
against exact values, PEFT, two processes, and a subclass's reward combination."""

import importlib.util
import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from trl_pav.tasks import ArithmeticTask, PlantedTask
from trl_pav.testing import markov_causal_lm, tiny_causal_lm
from trl_pav.trainers import PAVPPOConfig, PAVPPOTrainer, grader_reward
from trl_pav.values import (
    clipped_value_loss,
    gae,
    kl_penalty,
    masked_moments,
    ppo_policy_loss,
    ppo_reward_stream,
    step_end_mask,
    whiten,
)

ROOT = Path(__file__).resolve().parents[1]
TASK = ArithmeticTask()


class TableScorer:
    """Fixed values per step list (a stand-in verifier with known outputs)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, steps):
        return [self.table[tuple(s)] for s in steps]


# ---- the math ----------------------------------------------------------------------------------------------------
def test_gae_hand_computed():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 0: d2 = 1 - 0.7 = 0.3; d1 = 0.9*0.7 - 0.6 = 0.03; d0 = 0.9*0.6 - 0.5 = 0.04; gl = 0.72.
    a2 = 0.3
    a1 = 0.03 + 0.72 * a2
    a0 = 0.04 + 0.72 * a1
    # Row 1 ends after two tokens (the masked reward and value are ignored): d1 = 2 - 1, d0 = 0.5 + 0.9 - 1.
    b1 = 1.0
    b0 = 0.4 + 0.72 * b1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.7], [b0 + 1.0, b1 + 1.0, 0.0]]))
    with pytest.raises(ValueError, match="gamma and lam"):
        gae(rewards, values, mask, gamma=1.5)


def test_gae_with_unit_gamma_lambda_is_the_monte_carlo_return():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 7, generator=gen)
    lengths = torch.tensor([7, 1, 4, 0, 6])
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    mc = torch.zeros(5, 7)  # return-to-go by explicit sums
    for b in range(5):
        for t in range(int(lengths[b])):
            mc[b, t] = rewards[b, t : int(lengths[b])].sum()
    adv, ret = gae(rewards, torch.zeros(5, 7), mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, mc, atol=1e-6) and torch.allclose(ret, mc, atol=1e-6)
    values = torch.randn(5, 7, generator=gen)  # with a baseline: the advantage is the return minus the value
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, (mc - values) * mask, atol=1e-5) and torch.allclose(ret, mc, atol=1e-5)


def test_kl_estimators_are_unbiased_by_enumeration():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    exact = float((p * (p / q).log()).sum())
    logp, logq = p.log()[None], q.log()[None]  # every outcome, weighted by its probability under p
    for estimator in ("k1", "k3"):
        assert float((p * kl_penalty(logp, logq, estimator)[0]).sum()) == pytest.approx(exact, abs=1e-6)
    assert (kl_penalty(logp, logq, "k3") >= 0).all() and (kl_penalty(logp, logq, "k1") < 0).any()
    assert torch.allclose(kl_penalty(logp, logq, "k2"), 0.5 * (logp - logq) ** 2)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logp, logq, "k4")


def test_whiten_with_moments_summed_over_parts_equals_whole():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 8.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 8.0])
    whole = whiten(x, mask)
    assert torch.allclose(whole[mask.bool()], (values - values.mean()) / values.std(), atol=1e-6)
    assert whole[1, 2] == 0
    s, ss, n = (a + b for a, b in zip(masked_moments(x[:1], mask[:1]), masked_moments(x[1:], mask[1:])))
    mean, var = s / n, (ss - n * (s / n) ** 2) / (n - 1)
    parts = torch.cat([whiten(x[:1], mask[:1], mean=mean, var=var), whiten(x[1:], mask[1:], mean=mean, var=var)])
    assert torch.allclose(parts, whole, atol=1e-6)
    kept = whiten(x, mask, shift_mean=False)
    assert torch.allclose(kept[mask.bool()], values / values.std() - values.mean() / values.std() + values.mean())


def test_clipped_losses_hand_computed():
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    logps = torch.log(torch.tensor([[1.5, 0.9, 0.5]]))
    loss, clipped = ppo_policy_loss(logps, torch.zeros(1, 3), adv, 0.2)
    # ratio 1.5 > 1.2 with A > 0: clipped at 1.2; 0.9 inside; 0.5 < 0.8 with A < 0: clipped at 0.8 (-(-1)*0.8).
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.9, 0.8]])) and clipped.tolist() == [[True, False, True]]
    values, old, ret = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    loss, clipped = clipped_value_loss(values, old, ret, 0.2)
    assert torch.allclose(loss, torch.tensor([[0.5 * 0.8**2, 0.5 * 0.1**2]])) and clipped.tolist() == [[True, False]]
    assert torch.allclose(clipped_value_loss(values, old, ret, None)[0], torch.tensor([[0.0, 0.5 * 0.01]]))


def test_reward_stream_hand_computed():
    token_step = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 0, -1, -1, -1, -1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    assert step_end_mask(token_step, mask).tolist() == [
        [False, True, False, False, True, True],
        [False, True, False, False, False, False],
    ]
    process = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, 0.0]])
    outcome = torch.tensor([1.0, 0.0])
    kl = torch.full((2, 6), 0.5)
    r = ppo_reward_stream(outcome, process, token_step, mask, alpha=2.0, kl=kl, beta=0.1)
    expected = torch.tensor(
        [
            [-0.05, -0.05 + 0.2, -0.05, -0.05, -0.05 - 0.4, -0.05 + 0.6 + 1.0],
            [-0.05, -0.05 + 1.0, -0.05, 0.0, 0.0, 0.0],
        ]
    )
    assert torch.allclose(r, expected)
    plain = ppo_reward_stream(outcome, process, token_step, mask, alpha=0.0, kl=kl, beta=0.1)
    assert torch.allclose(plain, torch.tensor([[-0.05] * 5 + [0.95], [-0.05] * 3 + [0.0] * 3]))


# ---- the trainer -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = TASK.tokenizer()
    path = tmp_path_factory.mktemp("policy")
    tiny_causal_lm(tok, seed=0, hidden_size=32).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def ppo_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "ppo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=24,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        temperature=1.0,
        gradient_checkpointing=False,
        bf16=False,
        seed=0,
    )
    return PAVPPOConfig(**{**base, **kw})


def dataset(n=8):
    probs = TASK.sample_problems(n, seed=0)
    return Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})


def hand_batch(trainer, rows, finished, prompt="Q:1+1?\n"):
    """A scored-generation dict for fixed completion texts (as `_generate_and_score_completions` builds it)."""
    tok = trainer.processing_class
    ids = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * f for r, f in zip(rows, finished)]
    width = max(len(x) for x in ids) + 2
    prompt_ids = torch.tensor([tok(prompt)["input_ids"]] * len(rows))
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids]),
        "completion_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
    }


def test_reward_stream_inside_the_trainer(policy_dir, tmp_path):
    """Step rewards land on each step's last token (terminal step on EOS), KL on every token, outcome on the last;
    with alpha = 0 only the KL terms and the outcome remain; advantages are GAE over that stream."""
    scorer = TableScorer({("1+1=2", "#### 2"): [0.5, 0.75, 1.0], ("2*3=7",): [0.4, 0.0]})
    args = ppo_args(
        tmp_path,
        pav_alpha=2.0,
        prover_k=1,
        beta=0.1,
        whiten_advantages=False,
        gamma=0.9,
        lam=0.8,
        process_credit="reward",
    )
    trainer = PAVPPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=scorer,
        args=args,
        train_dataset=dataset(),
        processing_class=TASK.tokenizer(),
    )
    rows, finished = ["1+1=2\n#### 2", "2*3=7\n#", "2*"], [1, 0, 0]
    batch = hand_batch(trainer, rows, finished)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._logps_and_values(trainer.model, input_ids, attention, batch["completion_ids"].size(1))
    mask = batch["completion_mask"].float()

    def score(alpha):
        trainer.args.pav_alpha = alpha
        trainer._last_rewards = torch.tensor([[1.0], [0.0], [0.0]])  # graded outcomes of the three rows
        out = dict(batch, ref_per_token_logps=logps - 0.3)  # k1 KL of exactly 0.3 on every token
        return trainer._score_with_critic([{"prompt": "Q:1+1?\n"}] * 3, out)

    out = score(2.0)
    kl = -0.1 * 0.3
    # Row 0: steps "1+1=2" (tokens 0-4) and "\n#### 2" (5-11) each gain 0.25; the EOS (12) is the terminal step
    # (outcome 1 - Q 1 = 0) and carries the outcome 1.
    r0 = [kl] * 13
    r0[4] += 2 * 0.25
    r0[11] += 2 * 0.25
    r0[12] += 1.0
    r1 = [kl] * 7  # "2*3=7" loses 0.4 at token 4; the truncated "\n#" is no step; outcome 0 on its last token
    r1[4] += 2 * -0.4
    r2 = [kl] * 2
    width = mask.shape[1]
    expected = torch.tensor([r + [0.0] * (width - len(r)) for r in (r0, r1, r2)])
    assert torch.allclose(out["rewards"], expected, atol=1e-5)
    adv, ret = gae(expected, out["old_values"], mask, 0.9, 0.8)
    assert torch.allclose(out["advantages"], adv, atol=1e-5) and torch.allclose(out["returns"], ret, atol=1e-5)
    assert torch.allclose(out["old_per_token_logps"], logps)
    assert (out["old_values"] == 0).all()  # the critic's head starts at zero

    plain = score(0.0)
    outcome_only = torch.zeros_like(expected)
    outcome_only[0, 12] = 1.0
    assert torch.allclose(plain["rewards"], (kl + outcome_only) * mask, atol=1e-5)

    # The paper's credit: GAE over KL + outcome only, then each step's term on all of that step's tokens.
    trainer.args.process_credit = "advantage"
    out = score(2.0)
    assert torch.allclose(out["rewards"], plain["rewards"], atol=1e-6)
    step_terms = torch.zeros_like(expected)
    step_terms[0, :12] = 2 * 0.25  # steps 1 and 2 of row 0; the EOS's terminal term is 1 - 1 = 0
    step_terms[1, :5] = 2 * -0.4
    base, ret = gae(plain["rewards"], out["old_values"], mask, 0.9, 0.8)
    assert torch.allclose(out["advantages"], base + step_terms, atol=1e-5)
    assert torch.allclose(out["returns"], ret, atol=1e-5)  # the critic learns the KL + outcome stream


def test_step_rewards_in_a_unit_discount_return_telescope():
    """Why `process_credit="advantage"` is the default: paid as rewards and summed with gamma = lam = 1, the step
    terms from step h on add up to f(outcome) - f(Q_{h-1}), the same for every action at step h."""
    q = torch.tensor([0.2, 0.5, 0.1, 0.6])  # root and three steps; the trace then fails (terminal value 0)
    process = torch.diff(torch.cat([q, torch.zeros(1)]))[None]  # four one-step advantages (last: terminal)
    token_step = torch.tensor([[0, 1, 2, 3]])
    rewards = ppo_reward_stream(torch.zeros(1), process, token_step, torch.ones(1, 4), alpha=1.0)
    adv, _ = gae(rewards, torch.zeros(1, 4), torch.ones(1, 4), 1.0, 1.0)
    assert torch.allclose(adv[0], -q, atol=1e-6)  # -Q_{h-1}: a function of the state before step h only


def test_alpha_zero_is_plain_ppo_on_real_rollouts(policy_dir, tmp_path):
    """Real sampling: with alpha = 0 (no verifier) each completion's reward stream is -beta * (log pi - log pi_ref)
    on every token plus its graded outcome on the last token, with both log-probs recomputed here."""
    tok = TASK.tokenizer()
    args = ppo_args(tmp_path, pav_alpha=0.0, beta=0.2, whiten_advantages=False)
    data = dataset()
    trainer = PAVPPOTrainer(
        policy_dir, [grader_reward(TASK.grader)], args=args, train_dataset=data, processing_class=tok
    )
    assert trainer.verifier is None
    with torch.no_grad():  # move the policy away from the reference so the KL terms are not zero
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.model.train()
    rows = [data[0]] * 4
    out = trainer._generate_and_score_completions(rows)
    input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T, mask = out["completion_ids"].size(1), out["completion_mask"].float()

    def token_logps(model):
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, -T - 1 : -1]
        return logits.log_softmax(-1).gather(-1, out["completion_ids"][..., None])[..., 0]

    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    policy.load_state_dict({k: v for k, v in trainer.model.state_dict().items() if not k.startswith("pav_critic.")})
    reference = AutoModelForCausalLM.from_pretrained(policy_dir)
    kl = token_logps(policy) - token_logps(reference)
    texts = tok.batch_decode(out["completion_ids"], skip_special_tokens=True)
    outcomes = torch.tensor([TASK.grader.grade(t, r["gold"]) for t, r in zip(texts, rows)])
    last = torch.zeros_like(mask)
    last[torch.arange(4), mask.sum(1).long() - 1] = 1.0
    expected = (-0.2 * kl + outcomes[:, None] * last) * mask
    assert kl.abs().max() > 1e-3
    assert torch.allclose(out["rewards"], expected, atol=1e-4)


def test_critic_converges_to_exact_values_of_a_frozen_policy(tmp_path):
    """Planted task (2 symbols, length 3, planted "b b"), policy frozen (learning rate 0): a Llama built as a Markov
    chain that writes iid symbols (a: 0.6, b: 0.4) separated by spaces. Its values are exact by enumeration; the
    critic's value before each token must reach the success probability of the steps so far, Q^pi.

    Tolerance: mean absolute error 0.04, largest 0.12 over the 40 (sequence, token) values. The critic regresses
    Bernoulli outcomes from 6,400 rollouts with a decaying learning rate; the constant predictor (0.256) is off by
    0.22 on average, so the test fails for a critic that does not separate prefixes."""
    task = PlantedTask(vocab_size=2, length=3, planted=(1, 1))
    tok = task.tokenizer()
    probs = {"a": 0.6, "b": 0.4}
    policy_dir, critic_dir = tmp_path / "policy", tmp_path / "critic"
    markov_causal_lm(tok, {">": probs, " ": probs, "a": {" ": 1.0}, "b": {" ": 1.0}}).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    tiny_causal_lm(tok, seed=1, hidden_size=32).save_pretrained(critic_dir)
    args = ppo_args(
        tmp_path,
        per_device_train_batch_size=64,
        num_generations=8,
        max_completion_length=5,  # "x x x": three symbols, then truncated
        max_steps=100,
        logging_steps=50,
        learning_rate=0.0,
        critic_learning_rate=1e-2,
        beta=0.0,
        pav_alpha=0.0,
        gamma=1.0,
        lam=1.0,
        cliprange_value=None,
        vf_coef=1.0,
        num_iterations=1,
        critic_model_name_or_path=str(critic_dir),
    )
    data = Dataset.from_dict({"prompt": [task.prompt] * 6400, "gold": [""] * 6400})
    trainer = PAVPPOTrainer(
        str(policy_dir), [grader_reward(task.grader)], args=args, train_dataset=data, processing_class=tok
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.startswith("pav_critic.")}
    trainer.train()
    after = {k: v for k, v in trainer.model.state_dict().items() if not k.startswith("pav_critic.")}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the policy is frozen

    def exact(prefix):
        total = 0.0
        for rest in itertools.product("ab", repeat=3 - len(prefix)):
            weight = math.prod(probs[s] for s in rest)
            total += weight * task.grader.grade(" ".join([*prefix, *rest]))
        return total

    critic = trainer._critic().eval()
    errors = []
    for seq in itertools.product("ab", repeat=3):
        ids = tok(">" + " ".join(seq), return_tensors="pt")["input_ids"]  # <s> > s1 ' ' s2 ' ' s3
        with torch.no_grad():
            values = critic(input_ids=ids).logits[0, 1:6, 0]  # V before each of the 5 completion tokens
        targets = [exact(seq[:0]), exact(seq[:1]), exact(seq[:1]), exact(seq[:2]), exact(seq[:2])]
        errors += [abs(float(v) - q) for v, q in zip(values, targets)]
    assert exact(()) == pytest.approx(0.256) and exact(("b", "b")) == 1.0
    assert sum(errors) / len(errors) < 0.04 and max(errors) < 0.12, (sum(errors) / len(errors), max(errors))


def test_peft_policy_with_shared_value_head(policy_dir, tmp_path):
    from peft import LoraConfig
    from safetensors.torch import load_file

    scorer = TableScorer({})
    scorer.score = lambda prompts, steps: [[0.5] + [0.6] * len(s) for s in steps]
    # Step rewards in the return give the value head nonzero targets even though the random policy never succeeds.
    args = ppo_args(tmp_path, critic_backbone="shared", pav_alpha=1.0, beta=0.1, process_credit="reward")
    trainer = PAVPPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=scorer,
        args=args,
        train_dataset=dataset(),
        processing_class=TASK.tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    named = dict(trainer.model.named_parameters())
    lora = {k: v.clone() for k, v in named.items() if "lora_B" in k}
    base = {k: v.clone() for k, v in named.items() if "base_layer" in k}
    assert lora and base and named["pav_critic.score.weight"].requires_grad
    trainer.train()
    named = dict(trainer.model.named_parameters())
    assert named["pav_critic.score.weight"].abs().sum() > 0  # the head (zero at start) learned
    assert any(not torch.equal(lora[k], named[k]) for k in lora)  # the adapter learned
    assert all(torch.equal(base[k], named[k]) for k in base)  # the base model did not
    trainer.save_model(str(tmp_path / "saved"))
    head = load_file(str(tmp_path / "saved" / "critic" / "value_head.safetensors"))
    assert torch.equal(head["score.weight"], named["pav_critic.score.weight"].detach())
    assert (tmp_path / "saved" / "adapter_model.safetensors").exists()


def test_separate_critic_saved_next_to_the_policy(policy_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    args = ppo_args(tmp_path, pav_alpha=0.0, critic_learning_rate=5e-2)
    trainer = PAVPPOTrainer(
        policy_dir, [grader_reward(TASK.grader)], args=args, train_dataset=dataset(), processing_class=TASK.tokenizer()
    )
    trainer.train()
    groups = trainer.optimizer.param_groups
    assert sorted({g["initial_lr"] for g in groups}) == [1e-2, 5e-2]  # the critic's own learning rate
    trainer.save_model(str(tmp_path / "saved"))
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    critic = AutoModelForTokenClassification.from_pretrained(tmp_path / "saved" / "critic", num_labels=1)
    state = trainer.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in policy.state_dict().items())
    assert all(torch.equal(v, state[f"pav_critic.{k}"]) for k, v in critic.state_dict().items())


def test_config_checks_and_paper_preset(tmp_path):
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo_args(tmp_path, kl_estimator="k9")
    with pytest.raises(ValueError, match="critic_backbone"):
        ppo_args(tmp_path, critic_backbone="tied")
    with pytest.raises(ValueError, match="process_credit"):
        ppo_args(tmp_path, process_credit="return")
    with pytest.raises(ValueError, match="gamma and lam"):
        ppo_args(tmp_path, lam=1.2)
    with pytest.raises(ValueError, match="vespo"):
        ppo_args(tmp_path, loss_type="vespo")
    cfg = PAVPPOConfig.paper_preset(output_dir=str(tmp_path), use_cpu=True, report_to="none", pav_alpha=3.0)
    assert (cfg.gamma, cfg.lam, cfg.num_iterations, cfg.beta, cfg.cliprange_value) == (1.0, 1.0, 1, 0.001, None)
    assert cfg.steps_per_generation == cfg.gradient_accumulation_steps and cfg.pav_alpha == 3.0


def test_needs_a_verifier_when_alpha_is_not_zero(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a verifier"):
        PAVPPOTrainer(
            policy_dir,
            [grader_reward(TASK.grader)],
            args=ppo_args(tmp_path, pav_alpha=1.0),
            train_dataset=dataset(),
            processing_class=TASK.tokenizer(),
        )


def test_subclass_overrides_the_reward_combination(policy_dir, tmp_path):
    """The example in examples/ppo_custom_rewards.py spreads each step's process term over its tokens."""
    spec = importlib.util.spec_from_file_location("ppo_custom_rewards", ROOT / "examples" / "ppo_custom_rewards.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    scorer = TableScorer({("1+1=2", "#### 2"): [0.5, 0.75, 1.0]})
    args = ppo_args(tmp_path, pav_alpha=2.0, prover_k=1, beta=0.0, terminal_value="verifier", process_credit="reward")
    trainer = example.SpreadStepRewardPPOTrainer(
        policy_dir,
        [grader_reward(TASK.grader)],
        verifier=scorer,
        args=args,
        train_dataset=dataset(),
        processing_class=TASK.tokenizer(),
    )
    out = dict(hand_batch(trainer, ["1+1=2\n#### 2"], [1]))
    trainer._last_rewards = torch.tensor([[1.0]])
    rewards = trainer._score_with_critic([{"prompt": "Q:1+1?\n"}], out)["rewards"][0]
    # 0.25 over 5 tokens, then 0.25 over 7 tokens, each times alpha = 2; the EOS carries the outcome.
    expected = [0.5 / 5] * 5 + [0.5 / 7] * 7 + [1.0] + [0.0] * (len(rewards) - 13)
    assert torch.allclose(rewards, torch.tensor(expected), atol=1e-6)


MULTI = textwrap.dedent(
    """
    import os, sys, torch
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset
    from trl_pav.tasks import ArithmeticTask
    from trl_pav.trainers import PAVPPOConfig, PAVPPOTrainer, grader_reward

    out, policy_dir = sys.argv[1], sys.argv[2]
    task = ArithmeticTask()
    tok = task.tokenizer()
    probs = task.sample_problems(4, seed=0)
    gold = {p.prompt: p.gold for p in probs}

    def completions(prompt):  # four fixed rollouts per prompt: right, wrong, right with a step, unfinished
        g = int(gold[prompt])
        return [(f"#### {g}", 1), (f"1+1=2\\n#### {g + 1}", 1), (f"2*2=4\\n#### {g}", 1), ("3+3=6\\n1", 0)]

    def rollout(prompts, trainer):  # deterministic "generation", so one and two processes see the same batch
        seen, completion_ids = {}, []
        for p in prompts:
            k = seen.get(p, 0)
            seen[p] = k + 1
            text, eos = completions(p)[k % 4]
            completion_ids.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * eos)
        prompt_ids = [tok(p)["input_ids"] for p in prompts]
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                "logprobs": [[0.0] * len(c) for c in completion_ids]}

    class LengthScorer:
        def score(self, prompts, steps):
            return [[0.5] + [min(1.0, len(s) / 8) for s in row] for row in steps]

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    args = PAVPPOConfig(
        output_dir=out, per_device_train_batch_size=8 // processes, num_generations=4, max_completion_length=16,
        max_steps=2, num_iterations=2, steps_per_generation=1, learning_rate=1e-2, beta=0.1, pav_alpha=2.0,
        prover_k=1, report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True,
        gradient_checkpointing=False, seed=0, logging_steps=1,
    )
    data = Dataset.from_dict({"prompt": [p.prompt for p in probs], "gold": [p.gold for p in probs]})
    trainer = PAVPPOTrainer(policy_dir, [grader_reward(task.grader)], verifier=LengthScorer(), args=args,
                            train_dataset=data, processing_class=tok, rollout_func=rollout)
    trainer.train()
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"params": state, "processes": trainer.accelerator.num_processes}, os.path.join(out, "params.pt"))
    """
)


def test_two_processes_equal_one(policy_dir, tmp_path):
    """The same (deterministic) rollouts on two CPU processes and on one give the same policy and critic: rewards
    are gathered, advantages whitened with global moments, and the loss normalised by the global token count."""
    script = tmp_path / "multi.py"
    script.write_text(MULTI)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    config = ROOT / "recipes" / "accelerate_configs" / "cpu_2proc.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    launcher += ["--main_process_port", "29541"]
    subprocess.run([*launcher, str(script), str(tmp_path / "two"), policy_dir], env=env, check=True, timeout=600)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), policy_dir], env=env, check=True, timeout=600)
    two = torch.load(tmp_path / "two" / "params.pt")
    one = torch.load(tmp_path / "one" / "params.pt")
    assert (two["processes"], one["processes"]) == (2, 1)
    two, one = two["params"], one["params"]
    initial = AutoModelForCausalLM.from_pretrained(policy_dir).state_dict()
    assert two.keys() == one.keys() and any(k.startswith("pav_critic.") for k in one)
    assert any(not torch.equal(one[k], initial[k]) for k in initial)  # training moved the policy
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


@pytest.mark.parametrize("config", ["rl_ppo.yaml", "rl_ppo_paper.yaml"])
def test_rl_recipe_runs_ppo_from_the_shipped_configs(policy_dir, tmp_path, config):
    """`--algorithm ppo` through the stage script with a shipped YAML (one process; outcome-only, so no verifier)."""
    import yaml

    from trl_pav.scripts import rl
    from trl_pav.scripts.common import run_recipe

    settings = yaml.safe_load((ROOT / "recipes" / "configs" / "arithmetic" / config).read_text())
    assert settings["algorithm"] == "ppo"
    settings.pop("verifier_model_name_or_path")
    settings.update(pav_alpha=0.0, model_name_or_path=policy_dir, output_dir=str(tmp_path / "rl"), num_problems=8)
    (tmp_path / config).write_text(yaml.safe_dump(settings))
    argv = ["--config", str(tmp_path / config), "--max_steps", "1", "--per_device_train_batch_size", "4"]
    argv += ["--num_generations", "4", "--max_completion_length", "12"]
    result = run_recipe(rl, argv)
    assert result["algorithm"] == "ppo" and result["outcome_only"] and result["global_step"] == 1
    assert (tmp_path / "rl" / "critic" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="unknown RL algorithm"):
        rl.make_parser(["--algorithm", "ppo2"])


def test_run_planted_ppo_returns_a_success_curve(tmp_path):
    """The demo's entry point: both arms run and return (iteration, success) points from iteration 0."""
    from trl_pav.experiments import run_planted_ppo

    task = PlantedTask()
    tok = task.tokenizer()
    tiny_causal_lm(tok, seed=0, hidden_size=32).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    for gamma in (10.0, None):
        curve = run_planted_ppo(
            tmp_path / "policy", tmp_path, gamma, steps=2, eval_every=1, eval_samples=8, batch_size=8, num_generations=4
        )
        assert [step for step, _ in curve] == [0, 1, 2] and all(0.0 <= acc <= 1.0 for _, acc in curve)
    assert not any(p.name.startswith("ppo-") for p in tmp_path.iterdir())  # scratch folders removed


def test_resume_restores_the_critic(policy_dir, tmp_path):
    from trl_pav.trainers.pav_ppo_trainer import load_critic_state

    def length_reward(prompts, completions, **kwargs):  # nonzero returns, so the critic moves
        return [len(c) / 24 for c in completions]

    def trainer(max_steps):
        args = ppo_args(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=1, pav_alpha=0.0)
        return PAVPPOTrainer(
            policy_dir, [length_reward], args=args, train_dataset=dataset(), processing_class=TASK.tokenizer()
        )

    trainer(2).train()
    saved = load_critic_state(tmp_path / "ppo" / "checkpoint-2" / "critic")
    resumed = trainer(1)
    assert all((v == 0).all() for k, v in resumed._critic().state_dict().items() if k.startswith("score."))
    resumed._load_from_checkpoint(str(tmp_path / "ppo" / "checkpoint-2"))
    state = resumed._critic().state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if k.startswith("score."))  # the trained head, not zeros
