"""`PAVPPOTrainer`: PPO with a learned critic over a per-token reward stream of KL terms, PAV step rewards and the
outcome reward."""

from __future__ import annotations

import dataclasses
import functools
import os
import textwrap
import types
from typing import ClassVar

import torch
from torch import nn
from transformers import AutoModelForTokenClassification
from transformers.utils import logging
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import FusedCausalLMOutput, disable_dropout_in_model

from ..modeling import StepScorer
from ..values import clipped_value_loss, gae, kl_penalty, masked_moments, ppo_policy_loss, ppo_reward_stream, whiten
from .pav_ppo_config import PAVPPOConfig
from .pav_rl import PAVRLMixin, ProcessTerms

__all__ = ["CRITIC_ATTRIBUTE", "PAVPPOTrainer", "ValueHead", "load_critic_state"]

logger = logging.get_logger(__name__)

CRITIC_ATTRIBUTE = "pav_critic"
"""Name under which the critic is registered inside the trained model (so one optimizer and one DeepSpeed engine
hold policy and critic)."""
CRITIC_FOLDER = "critic"


@dataclasses.dataclass
class PolicyValueOutput(FusedCausalLMOutput):
    """TRL's fused-LM-head output plus the critic's `(B, T)` values (a registered model output, so DDP can
    flatten and rebuild it)."""

    critic_values: torch.Tensor | None = None


class ValueHead(nn.Module):
    """A linear value head `(B, L, hidden) -> (B, L)` read from the policy's last hidden state (shared backbone).

    Example:
        >>> head = ValueHead(8)
        >>> head(torch.ones(2, 3, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.score(hidden_states.to(self.score.weight.dtype)).squeeze(-1)


class PAVPPOTrainer(PAVRLMixin, GRPOTrainer):
    """PPO with a learned critic, dense per-step PAV rewards and the outcome reward under a KL penalty.

    Reward stream per completion token t (`ppo_reward_stream`, overridable through `combine_rewards`):
    `r_t = -β·KL_t`, plus the outcome reward on the last token. Advantages are GAE(γ, λ) over that stream with the
    critic's values. The step terms `α·Â^μ_h` (the frozen verifier's one-step Best-of-K prover advantages, with the
    same step location and terminal-step rule as `PAVGRPOTrainer`) enter per `process_credit`: `"advantage"` (default,
    the paper's) adds them to the advantages of step h's tokens (`combine_advantages`, as in the GRPO/RLOO variants);
    `"reward"` (the classic RLHF layout) pays them on the last token of step h in the reward stream
    (`combine_rewards`), before GAE. Advantages are then optionally whitened; the loss is PPO's clipped surrogate
    plus `vf_coef` times the clipped value loss, for `num_iterations` epochs over `steps_per_generation` mini-batches
    per generation batch.

    Why on `GRPOTrainer`: TRL 1.16 has no PPO, and GRPO's machinery is what PPO needs around its loss: generation
    (HF, vLLM server/colocate), reward functions, the reference model (a copy, or the disabled adapter under PEFT),
    DeepSpeed/FSDP preparation, buffering of a generation batch into shuffled mini-batches reused for several
    epochs, metrics and the model card. This class replaces only the scoring (values, reward stream, GAE) and the
    loss. The critic (a separate token-classification model, or a `ValueHead` on the policy's backbone) is
    registered as a submodule (`CRITIC_ATTRIBUTE`) of the trained model, like TRL's former policy-and-value wrapper:
    one optimizer (the critic in its own parameter group) and one DeepSpeed engine hold both, so ZeRO-2/3 work as for
    the other trainers. `save_model` writes the policy where it always goes and the critic under `critic/`.

    With `pav_alpha=0` and no verifier it is plain PPO (KL terms and outcome only).

    Args:
        model: the policy (path, or model), as for `GRPOTrainer`.
        reward_funcs: outcome reward(s), e.g. `grader_reward(grader)`.
        verifier: a `PAVVerifier`, a folder/Hub id, or any `StepScorer`; defaults to
            `args.verifier_model_name_or_path`. May be absent only when `pav_alpha == 0`.
        critic: optional module to use as the separate critic: called as `critic(input_ids=, attention_mask=)` and
            returning `.logits` of shape `(B, L, 1)` (e.g. `AutoModelForTokenClassification(num_labels=1)`).
            Default: built from `args.critic_model_name_or_path` or the policy.
        args: a `PAVPPOConfig`.
        **kwargs: everything else `GRPOTrainer` takes (datasets, processing class, `peft_config`, callbacks...).

    Example:
        >>> from trl_pav.trainers import PAVPPOConfig, PAVPPOTrainer, grader_reward  # doctest: +SKIP
        >>> trainer = PAVPPOTrainer(policy_dir, [grader_reward(grader)], verifier=pav_dir,  # doctest: +SKIP
        ...     args=PAVPPOConfig(output_dir="out", pav_alpha=3.0), train_dataset=problems)
        >>> trainer.train()  # doctest: +SKIP
    """

    _tag_names: ClassVar[list[str]] = ["trl", "trl_pav", "ppo", "pav"]
    _name = "PAV-PPO"
    _paper: ClassVar[dict[str, str]] = {
        "title": "Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning",
        "id": "2410.08146",
        "citation": textwrap.dedent(
            """\
            @article{setlur2024rewarding,
                title        = {{Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning}},
                author       = {Amrith Setlur and Chirag Nagpal and Adam Fisch and Xinyang Geng and Jacob Eisenstein
                                and Rishabh Agarwal and Alekh Agarwal and Jonathan Berant and Aviral Kumar},
                year         = 2024,
                eprint       = {arXiv:2410.08146},
            }"""
        ),
    }

    def __init__(
        self,
        model,
        reward_funcs=None,
        verifier: StepScorer | str | None = None,
        args: PAVPPOConfig | None = None,
        critic: nn.Module | None = None,
        **kwargs,
    ):
        if args is None:
            raise ValueError("PAVPPOTrainer needs args=PAVPPOConfig(...)")
        if not isinstance(args, PAVPPOConfig):
            raise TypeError(f"args must be a PAVPPOConfig, got {type(args).__name__}")
        if critic is not None and args.critic_backbone == "shared":
            raise ValueError("critic= is a separate critic; with critic_backbone='shared' the head is built here")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        if verifier is None and args.verifier_model_name_or_path is None:
            if args.pav_alpha != 0:
                raise ValueError(
                    "a PAV trainer needs a verifier: pass verifier= or set verifier_model_name_or_path "
                    "(or pav_alpha=0 for outcome-only PPO)"
                )
            self.verifier = None
            self._last_rewards = None
        else:
            self._init_pav(verifier)
        self._attach_critic(critic)

    # ---- the critic ------------------------------------------------------------------------------------------------
    def _policy_causal_lm(self, model: nn.Module | None = None) -> nn.Module:
        """The policy's causal LM (inside PEFT's wrapper when there is one)."""
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _attach_critic(self, critic: nn.Module | None) -> None:
        args = self.args
        policy = self._policy_causal_lm()
        if args.critic_backbone == "shared":
            critic = ValueHead(policy.config.get_text_config().hidden_size)
        elif critic is None:
            source = args.critic_model_name_or_path or policy.config._name_or_path
            if not source:
                raise ValueError(
                    "the separate critic is initialised from the policy's folder, but the policy has no "
                    "_name_or_path: pass a saved policy path, critic_model_name_or_path, or critic="
                )
            critic = AutoModelForTokenClassification.from_pretrained(source, num_labels=1)
            head = getattr(critic, "score", None) or getattr(critic, "classifier", None)
            if not isinstance(head, nn.Linear):
                raise ValueError(f"critic {source!r}: no linear token-classification head (score / classifier)")
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
            if args.gradient_checkpointing:
                critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        # A regression target averaged over samples needs no dropout (token classifiers default to 0.1 on the head).
        disable_dropout_in_model(critic)
        critic.requires_grad_(True)
        critic.to(device=next(policy.parameters()).device)
        self.model.add_module(CRITIC_ATTRIBUTE, critic)
        self._route_critic_through_forward(critic)
        if self.use_vllm:
            self._exclude_critic_from_vllm_sync()

    def _exclude_critic_from_vllm_sync(self) -> None:
        """vLLM holds the policy only: drop the critic's parameters from the weight sync (same order on all ranks)."""
        generation = self.vllm_generation
        iterate = generation._iter_named_params

        def policy_params():
            for name, param in iterate():
                if CRITIC_ATTRIBUTE not in name:
                    yield name, param

        generation._iter_named_params = policy_params

    def _critic(self, model: nn.Module | None = None) -> nn.Module:
        return getattr(self.accelerator.unwrap_model(model if model is not None else self.model), CRITIC_ATTRIBUTE)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the critic's parameters in their own groups at `critic_learning_rate`."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        lr = self.args.critic_learning_rate
        if lr is None:
            return optimizer
        critic_ids = {id(p) for p in self._critic().parameters()}
        groups = []
        for group in optimizer.param_groups:
            rest = {k: v for k, v in group.items() if k != "params"}
            policy_params = [p for p in group["params"] if id(p) not in critic_ids]
            critic_params = [p for p in group["params"] if id(p) in critic_ids]
            if policy_params:
                groups.append({**rest, "params": policy_params})
            if critic_params:
                groups.append({**rest, "params": critic_params, "lr": lr, "initial_lr": lr})
        optimizer.param_groups = groups
        return optimizer

    def _route_critic_through_forward(self, critic: nn.Module) -> None:
        """Let the policy's forward also run the critic (`model(..., pav_values=True)`), so that the critic is used
        inside the forward of whatever wraps the model (DDP, DeepSpeed, FSDP), which those wrappers require."""
        policy = self._policy_causal_lm()
        forward = policy.forward  # TRL's fused-LM-head forward
        shared = self.args.critic_backbone == "shared"

        @functools.wraps(type(policy).forward)  # `generate` validates its kwargs against this signature
        def forward_with_values(module, *args, pav_values: bool = False, **kwargs):
            if not pav_values:
                return forward(*args, **kwargs)
            logits_to_keep = kwargs.pop("pav_logits_to_keep")
            if shared:
                captured = []
                hook = module.base_model.register_forward_hook(
                    lambda _m, _i, out: captured.append(out.last_hidden_state)
                )
                try:
                    out = forward(*args, **kwargs)
                finally:
                    hook.remove()
                values = critic(captured[-1][:, -logits_to_keep - 1 : -1])
            else:
                out = forward(*args, **kwargs)
                scores = critic(input_ids=kwargs["input_ids"], attention_mask=kwargs["attention_mask"]).logits
                values = scores[:, -logits_to_keep - 1 : -1, 0]
            return PolicyValueOutput(
                **{f.name: getattr(out, f.name) for f in dataclasses.fields(out)}, critic_values=values
            )

        policy.forward = types.MethodType(forward_with_values, policy)

    def _logps_and_values(
        self, model, input_ids, attention_mask, logits_to_keep: int, compute_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """`(B, T)` log-probs of the completion tokens, entropies (or None) and the critic's values `V_t` (the value
        of the state before token t), in one call of `model` (the wrapped policy; text-only inputs)."""
        labels = input_ids.masked_fill(attention_mask == 0, -100)  # only completion tokens are scored
        labels[:, :-logits_to_keep] = -100
        with self.accelerator.autocast():
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                fused_lm_head=True,
                pav_values=True,
                pav_logits_to_keep=logits_to_keep,
            )
        logps = out.log_probs[:, -logits_to_keep:]
        entropies = out.entropy[:, -logits_to_keep:] if compute_entropy else None
        return logps, entropies, out.critic_values.float()

    # ---- scoring: reward stream, GAE --------------------------------------------------------------------------------
    def combine_rewards(
        self,
        outcome_rewards: torch.Tensor,
        process_terms: torch.Tensor,
        token_step: torch.Tensor,
        completion_mask: torch.Tensor,
        kl: torch.Tensor | None,
    ) -> torch.Tensor:
        """The per-token reward stream. Override to change how step rewards enter it (with
        `process_credit="reward"`; with `"advantage"` this receives no steps and `combine_advantages` adds them).

        Args:
            outcome_rewards: `(B,)` each completion's outcome reward (weighted sum of the reward functions).
            process_terms: `(B, H)` per-step process terms (prover advantages, or `Q^μ` in the ablation), clipped /
                normalised per the config; 0 for padding steps.
            token_step: `(B, T)` step index of each completion token, -1 outside scored steps.
            completion_mask: `(B, T)`.
            kl: `(B, T)` per-token KL estimates, or `None` when `beta == 0`.

        Returns:
            `(B, T)` rewards: `-β·KL_t + α·process_h·[t ends step h] + outcome·[t is last]`.
        """
        return ppo_reward_stream(
            outcome_rewards, process_terms, token_step, completion_mask, self.args.pav_alpha, kl, self.beta
        )

    def _local_outcome_rewards(self, n: int, device) -> torch.Tensor:
        """`(n,)` this process's outcome rewards: weighted sum of the reward functions (0 where none scored)."""
        rewards = self._last_rewards
        weights = self.reward_weights.to(rewards.device)
        unscorable = torch.isnan(rewards).all(dim=1)
        total = (torch.nan_to_num(rewards, nan=0.0) * weights).sum(1).masked_fill(unscorable, 0.0)
        start = self.accelerator.process_index * n
        return total[start : start + n].to(device=device, dtype=torch.float32)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        return self._score_with_critic(inputs, output)

    def _score_with_critic(self, inputs: list[dict], output: dict) -> dict:
        """Add the PPO fields to a scored generation batch: old log-probs and values, the reward stream, GAE
        advantages (replacing GRPO's) and returns."""
        device = output["completion_ids"].device
        mode = "train" if self.model.training else "eval"
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
        input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, values = self._logps_and_values(self.model, input_ids, attention_mask, completion_ids.size(1))
        values = values * mask
        kl = None
        if self.beta != 0.0:
            kl = kl_penalty(logps, output["ref_per_token_logps"], self.args.kl_estimator) * mask
        outcome = self._local_outcome_rewards(len(completion_ids), device)
        if self.verifier is not None:
            terms = self._pav_process_terms(inputs, output)
        else:
            n, t = completion_ids.shape
            empty = torch.zeros(n, 0, device=device)
            token_step = torch.full((n, t), -1, dtype=torch.long, device=device)
            terms = ProcessTerms(empty, empty.bool(), token_step, [[] for _ in range(n)], token_step.tolist())
        if self.args.process_credit == "reward":  # step terms in the reward stream, propagated by GAE
            rewards = self.combine_rewards(outcome, terms.process, terms.token_step, mask, kl) * mask
            advantages, returns = gae(rewards, values, mask, self.args.gamma, self.args.lam)
        else:  # the paper's: GAE over KL + outcome, then each step's term on that step's tokens only
            no_steps = terms.process[:, :0]
            rewards = self.combine_rewards(outcome, no_steps, terms.token_step, mask, kl) * mask
            advantages, returns = gae(rewards, values, mask, self.args.gamma, self.args.lam)
            advantages = self.combine_advantages(advantages, terms.process, terms.token_step, mask)
        if self.args.whiten_advantages:
            s, ss, n = self.accelerator.reduce(torch.stack(masked_moments(advantages, mask)), reduction="sum")
            if n >= 2:
                mean = s / n
                var = (ss - n * mean**2).clamp(min=0) / (n - 1)
                advantages = whiten(advantages, mask, mean=mean, var=var)
        output.update(
            old_per_token_logps=logps,
            old_values=values,
            rewards=rewards,
            returns=returns,
            advantages=advantages,
        )
        self._log_ppo(mode, mask, rewards, values, returns, kl, outcome)
        if self.verifier is not None:
            self._log_pav(advantages[:, 0], terms.process, terms.step_mask, mask, terms.steps, terms.owners)
        return output

    def _log_ppo(self, mode, mask, rewards, values, returns, kl, outcome) -> None:
        m = mask.float()
        totals = torch.stack(
            [
                (values * m).sum(),
                (returns * m).sum(),
                ((returns - values) ** 2 * m).sum(),
                (returns**2 * m).sum(),
                (kl * m).sum() if kl is not None else m.sum() * 0,
                m.sum(),
                (rewards * m).sum(),
                outcome.sum(),
                torch.tensor(float(len(outcome)), device=m.device),
            ]
        )
        v_sum, r_sum, err_sum, r_sq, kl_sum, n, reward_sum, outcome_sum, rows = self.accelerator.reduce(
            totals, reduction="sum"
        ).tolist()
        n, rows = max(n, 1.0), max(rows, 1.0)
        returns_var = r_sq / n - (r_sum / n) ** 2
        metrics = self._metrics[mode]
        metrics["ppo/value_mean"].append(v_sum / n)
        metrics["ppo/returns_mean"].append(r_sum / n)
        metrics["ppo/value_error"].append(err_sum / n)
        metrics["ppo/explained_variance"].append(1 - (err_sum / n) / returns_var if returns_var > 1e-12 else 0.0)
        metrics["ppo/kl_per_completion"].append(kl_sum / rows)
        metrics["ppo/reward_per_completion"].append(reward_sum / rows)
        metrics["ppo/non_score_reward_per_completion"].append(-self.beta * kl_sum / rows)
        metrics["ppo/outcome_reward"].append(outcome_sum / rows)

    # ---- the loss ----------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logps, entropies, values = self._logps_and_values(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        mask = completion_mask * inputs["tool_mask"] if "tool_mask" in inputs else completion_mask
        mask = mask.to(logps.dtype)
        pg, pg_clipped = ppo_policy_loss(
            logps, inputs["old_per_token_logps"], inputs["advantages"], self.epsilon_low, self.epsilon_high
        )
        if "importance_sampling_ratio" in inputs:  # vLLM sampled the tokens: correct for its mismatch
            pg = pg * inputs["importance_sampling_ratio"]
        vf, vf_clipped = clipped_value_loss(values, inputs["old_values"], inputs["returns"], self.args.cliprange_value)
        mode = "train" if self.model.training else "eval"
        # As GRPO's "dapo": `num_items_in_batch` counts the generation batch's tokens on all processes, so the
        # gradient of one optimizer step is the token mean over everything it saw, whatever the process count.
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        policy_loss = (pg * mask).sum() / normalizer
        value_loss = (vf * mask).sum() / normalizer
        loss = policy_loss + self.args.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = 0.5 * (logps - inputs["old_per_token_logps"]) ** 2
            stats = torch.stack(
                [
                    policy_loss.detach() * normalizer,
                    value_loss.detach() * normalizer,
                    (pg_clipped.float() * mask).sum(),
                    (vf_clipped.float() * mask).sum(),
                    (entropies * mask).sum(),
                    (approx_kl * mask).sum(),
                    mask.sum(),
                ]
            )
            pl, vl, pclip, vclip, ent, akl, n = self.accelerator.reduce(stats, reduction="sum").tolist()
        n = max(n, 1.0)
        metrics = self._metrics[mode]
        metrics["ppo/policy_loss"].append(pl / n)
        metrics["ppo/value_loss"].append(vl / n)
        metrics["ppo/policy_clip_fraction"].append(pclip / n)
        metrics["ppo/value_clip_fraction"].append(vclip / n)
        metrics["ppo/approx_kl"].append(akl / n)
        metrics["entropy"].append(ent / n)
        return loss

    # ---- saving ------------------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The policy as `GRPOTrainer` saves it (without the critic's tensors), the critic under `critic/`."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        prefix = f"{CRITIC_ATTRIBUTE}."
        critic_state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        policy_state = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        super()._save(output_dir, state_dict=policy_state)
        if not self.args.should_save:
            return
        critic = self._critic()
        folder = os.path.join(output_dir, CRITIC_FOLDER)
        os.makedirs(folder, exist_ok=True)
        if hasattr(critic, "save_pretrained"):
            critic.save_pretrained(folder, state_dict=critic_state)
        else:
            from safetensors.torch import save_file

            save_file(
                {k: v.contiguous() for k, v in critic_state.items()}, os.path.join(folder, "value_head.safetensors")
            )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        folder = os.path.join(resume_from_checkpoint, CRITIC_FOLDER)
        if not os.path.isdir(folder):
            logger.warning(f"no critic in {resume_from_checkpoint}: the critic starts from its initialisation")
            return
        self._critic(model).load_state_dict(load_critic_state(folder))


def load_critic_state(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The critic's tensors saved by `PAVPPOTrainer` in `folder` (`<output_dir>/critic`)."""
    from safetensors.torch import load_file

    for name in ("model.safetensors", "value_head.safetensors"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return load_file(path)
    raise FileNotFoundError(f"no critic weights (model.safetensors or value_head.safetensors) in {folder}")
