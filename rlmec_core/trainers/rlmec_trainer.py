"""Policy training on annotated samples (stage 5): the RLMEC objective and its ablations.

Each batch goes through the policy twice: prompt + ``y`` for the clipped token-level policy
gradient ``L_RL``, prompt + ``ŷ`` for the weighted imitation loss ``L_IM``. Both use the
memory-lean log-probs of :mod:`rlmec_core.logprobs`, so no float32 copy of the full-vocabulary
logits is ever built. The Trainer does devices, distribution, checkpoints and scheduling.

Variants (the paper's baselines and ablations):

* ``rlmec``: ``L_RL + λ · L_IM`` with the GRM's token rewards;
* ``no_imitation``: ``λ = 0``; ``ŷ`` is never run through the policy;
* ``no_token_reward``: every token of ``y`` gets the instance-level reward (+0.5 / -0.1);
* ``rft``: supervised training on the correct samples' ``y`` and the rewrites ``ŷ`` of the
  wrong ones (mean token NLL, every token weight 1);
* ``gold_sft``: supervised training on the gold solutions of the same problems, for as many
  optimizer steps as the other variants take over the RL rows (the compute-matched baseline
  that tells whether the samples, rewards and rewrites add anything over more SFT).

Every variant trains from the initial policy, which is also the baseline of every table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from rlmec_core.config import RL_NORMALIZERS, VARIANTS, RlNormalizer, TrainPolicySection, Variant
from rlmec_core.logprobs import pack_response
from rlmec_core.loss_settings import DEFAULT_EPSILON, DEFAULT_IMITATION_COEF, check_loss_settings
from rlmec_core.losses import rlmec_loss_terms
from rlmec_core.progress import use_progress_callbacks
from rlmec_core.prompt_format import PLAIN, PromptStyle
from rlmec_core.rewards import instance_rewards
from rlmec_core.trainers.guards import NonFiniteGuard
from rlmec_core.trainers.lean import LeanLogprobsMixin
from rlmec_core.trainers.lora import is_lora, merge_lora, wrap_lora
from rlmec_core.trainers.sft import (
    ListDataset,
    last_complete_checkpoint,
    refuse_sharded_weights,
    training_arguments,
)

logger = logging.getLogger(__name__)

Objective = Literal["rlmec", "sft"]

# Terms averaged over the micro-batches of one logging step, per objective.
LOGGED_TERMS: dict[str, tuple[str, ...]] = {
    "rlmec": ("l_rl", "l_im", "clip_fraction", "mean_ratio"),
    "sft": ("nll",),
}


# ----------------------------------------------------------------------------- rows


def _row_list(row: Mapping[str, Any], key: str, where: str) -> list:
    # Lists from `datasets`, but numpy arrays and tensors (other dataset formats) work too.
    value = row.get(key)
    if value is None or isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        raise ValueError(f"{where}: field {key!r} must be a list, got {type(value).__name__}")
    return list(value)


def _check_rl_row(row: Mapping[str, Any], index: int, *, targets: bool) -> str:
    where = f"RL row {index} ({row.get('sample_id', '?')})"
    prompt = _row_list(row, "prompt_ids", where)
    response = _row_list(row, "response_ids", where)
    if not prompt:
        raise ValueError(f"{where}: prompt_ids is empty; the first response token needs a prefix")
    if not response:
        raise ValueError(f"{where}: response_ids is empty")
    for key in ("rewards", "ref_logprobs"):
        n = len(_row_list(row, key, where))
        if n != len(response):
            raise ValueError(f"{where}: {key} has {n} entries for {len(response)} response_ids")
    if not isinstance(row.get("correct"), bool):
        raise ValueError(f"{where}: field 'correct' must be a bool")
    if targets:
        target = _row_list(row, "target_ids", where)
        n = len(_row_list(row, "target_weights", where))
        if not target:
            raise ValueError(f"{where}: target_ids is empty")
        if n != len(target):
            raise ValueError(
                f"{where}: target_weights has {n} entries for {len(target)} target_ids"
            )
    return where


def policy_rows(
    rows: Iterable[Mapping[str, Any]], variant: Variant
) -> list[dict[str, list[int] | list[float]]]:
    """The training rows one variant sees, built from stage 4's RL rows (``RL_FEATURES``).

    RL variants keep ``prompt_ids``, ``response_ids``, ``rewards``, ``ref_logprobs`` and (unless
    ``no_imitation``) ``target_ids``/``target_weights``; ``no_token_reward`` swaps the rewards for
    the instance-level ones. ``rft`` keeps ``prompt_ids`` and, as ``target_ids`` with weight 1
    everywhere, ``y`` for a correct sample and ``ŷ`` for a wrong one.
    """
    if variant not in VARIANTS or variant == "gold_sft":
        raise ValueError(f"no RL rows for variant {variant!r}; RL row variants: {RL_VARIANTS}")
    out: list[dict[str, list[int] | list[float]]] = []
    for i, row in enumerate(rows):
        targets_used = variant in ("rlmec", "no_token_reward", "rft")
        _check_rl_row(row, i, targets=targets_used)
        prompt = [int(t) for t in row["prompt_ids"]]
        if variant == "rft":
            # ŷ = y for a correct sample, so the rewrite field would do too; y is the source.
            text = row["response_ids"] if row["correct"] else row["target_ids"]
            ids = [int(t) for t in text]
            out.append(
                {"prompt_ids": prompt, "target_ids": ids, "target_weights": [1.0] * len(ids)}
            )
            continue
        response = [int(t) for t in row["response_ids"]]
        if variant == "no_token_reward":
            rewards = instance_rewards(len(response), row["correct"]).tolist()
        else:
            rewards = [float(r) for r in row["rewards"]]
        item: dict[str, list[int] | list[float]] = {
            "prompt_ids": prompt,
            "response_ids": response,
            "rewards": rewards,
            "ref_logprobs": [float(v) for v in row["ref_logprobs"]],
        }
        if targets_used:
            item["target_ids"] = [int(t) for t in row["target_ids"]]
            item["target_weights"] = [float(w) for w in row["target_weights"]]
        out.append(item)
    return out


RL_VARIANTS = tuple(v for v in VARIANTS if v != "gold_sft")


def gold_sft_rows(
    tokenizer: PreTrainedTokenizerBase,
    problems: Iterable[Mapping[str, Any]],
    problem_ids: Iterable[str],
    style: PromptStyle | None = None,
) -> list[dict[str, list[int] | list[float]]]:
    """The ``gold_sft`` rows: each of ``problem_ids``' gold solution after its policy prompt
    (in ``style``), tokenised as every other target (prompt and solution apart, then the
    style's end token), weight 1.

    ``problems`` are data records (``id``, ``question``, ``gold_solution``); every id in
    ``problem_ids`` must be among them.
    """
    from rlmec_core.policy_prompt import format_policy_prompt
    from rlmec_core.response_tokens import split_tokenize  # the one tokenisation of targets

    by_id = {p["id"]: p for p in problems}
    wanted = sorted(set(problem_ids))
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ValueError(f"gold_sft: problem {missing[0]!r} is not in the training problems")
    out: list[dict[str, list[int] | list[float]]] = []
    for problem_id in wanted:
        problem = by_id[problem_id]
        style = style or PLAIN
        prompt, target = split_tokenize(
            tokenizer,
            format_policy_prompt(problem["question"], style),
            problem["gold_solution"],
            eos_id=style.response_end(tokenizer),
        )
        out.append(
            {"prompt_ids": prompt, "target_ids": target, "target_weights": [1.0] * len(target)}
        )
    return out


def optimizer_steps(n_rows: int, cfg: TrainPolicySection, world_size: int) -> int:
    """The optimizer steps the Trainer takes over ``n_rows`` rows with ``cfg`` (its rule:
    batches per process, then accumulation, rounded up per epoch and over epochs)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    batches = math.ceil(n_rows / (cfg.batch_size * world_size))
    per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    return math.ceil(cfg.epochs * per_epoch)


# ------------------------------------------------------------------------- collator


def _pad_sequences(
    prompts: list[list[int]], continuations: list[list[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+continuation ids, attention mask and continuation mask."""
    width = max(len(p) + len(c) for p, c in zip(prompts, continuations, strict=True))
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    marked = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        n = len(p) + len(c)
        ids[b, :n] = torch.tensor(p + c, dtype=torch.long)
        attention[b, :n] = 1
        marked[b, len(p) : n] = 1
    return ids, attention, marked


def _pad_values(values: list[list[float]]) -> torch.Tensor:
    """``[B, T]`` float32, row ``b``'s values first then zeros: the layout of ``pack_response``."""
    out = torch.zeros((len(values), max(len(v) for v in values)), dtype=torch.float32)
    for b, v in enumerate(values):
        out[b, : len(v)] = torch.tensor(v, dtype=torch.float32)
    return out


class RlmecCollator:
    """Pads prompt + ``y`` and prompt + ``ŷ`` batches and their per-token lists (0 on padding).

    Output keys: ``input_ids``, ``attention_mask``, ``response_mask``, ``rewards``,
    ``ref_logprobs`` (when rows carry ``response_ids``) and ``target_input_ids``,
    ``target_attention_mask``, ``target_mask``, ``target_weights`` (when rows carry
    ``target_ids``). Per-token tensors are ``[B, T]`` with each row's values first.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("RlmecCollator: empty batch")
        prompts = [list(r["prompt_ids"]) for r in rows]
        batch: dict[str, torch.Tensor] = {}
        if "response_ids" in rows[0]:
            ids, attention, mask = _pad_sequences(
                prompts, [list(r["response_ids"]) for r in rows], self.pad_token_id
            )
            batch.update(input_ids=ids, attention_mask=attention, response_mask=mask)
            batch["rewards"] = _pad_values([r["rewards"] for r in rows])
            batch["ref_logprobs"] = _pad_values([r["ref_logprobs"] for r in rows])
        if "target_ids" in rows[0]:
            ids, attention, mask = _pad_sequences(
                prompts, [list(r["target_ids"]) for r in rows], self.pad_token_id
            )
            batch.update(target_input_ids=ids, target_attention_mask=attention, target_mask=mask)
            batch["target_weights"] = _pad_values([r["target_weights"] for r in rows])
        if "response_ids" not in rows[0] and "target_ids" in rows[0]:
            # The Trainer counts tokens and FLOPs from "input_ids"; give it the only sequence.
            batch["input_ids"] = batch["target_input_ids"]
        if not batch:
            raise ValueError("RlmecCollator: rows carry neither response_ids nor target_ids")
        return batch


# -------------------------------------------------------------------------- trainer


class RlmecTrainer(LeanLogprobsMixin, Trainer):
    """A ``Trainer`` whose loss is the RLMEC objective (or, for ``rft``, the token-mean NLL).

    ``objective="rlmec"``: ``L_RL + imitation_coef · L_IM`` (``ŷ`` is skipped when the
    coefficient is 0). ``objective="sft"``: ``L_IM`` alone with the rows' weights. The terms
    are averaged over the micro-batches of each logging step (and over processes) and logged
    next to the Trainer's ``loss``.
    """

    # The loss is a per-micro-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        objective: Objective = "rlmec",
        epsilon: float = DEFAULT_EPSILON,
        imitation_coef: float = DEFAULT_IMITATION_COEF,
        rl_normalizer: RlNormalizer = "reward_tokens",
        **kwargs: Any,
    ) -> None:
        if objective not in LOGGED_TERMS:
            raise ValueError(f"objective must be 'rlmec' or 'sft', got {objective!r}")
        check_loss_settings(epsilon, imitation_coef)  # before any training, not at step 1
        if rl_normalizer not in RL_NORMALIZERS:
            raise ValueError(
                f"rl_normalizer must be one of {RL_NORMALIZERS}, got {rl_normalizer!r}"
            )
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.epsilon = epsilon
        self.imitation_coef = imitation_coef
        self.rl_normalizer = rl_normalizer
        # Detached tensors, so logging costs no device sync per micro-batch.
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0

    def _logprobs(
        self, model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return pack_response(self.token_logprobs(model, ids, attention, mask), mask)

    def _target_logprobs(
        self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Log-probs of the imitation targets ``ŷ`` (packed like the responses')."""
        ids, mask = inputs["target_input_ids"], inputs["target_mask"]
        return self._logprobs(model, ids, inputs["target_attention_mask"], mask)

    def loss_terms(
        self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The loss and its parts for one collated batch (two forward passes at most)."""
        if self.objective == "sft":
            logp = self._target_logprobs(model, inputs)
            weights = inputs["target_weights"]
            active = weights != 0
            nll = torch.where(active, -weights * logp, torch.zeros_like(logp)).sum()
            nll = nll / active.sum().clamp(min=1)
            return {"loss": nll, "nll": nll}

        logp = self._logprobs(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"]
        )
        target_logp = target_weights = None
        if self.imitation_coef != 0:
            target_logp = self._target_logprobs(model, inputs)
            target_weights = inputs["target_weights"]
        return rlmec_loss_terms(
            logp,
            inputs["ref_logprobs"],
            inputs["rewards"],
            target_logp,
            target_weights,
            epsilon=self.epsilon,
            imitation_coef=self.imitation_coef,
            n_response_tokens=(
                inputs["response_mask"].sum() if self.rl_normalizer == "response_tokens" else None
            ),
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # The lean log-prob path calls the decoder and the head directly, not the forward
        # the Accelerator wraps in autocast: mixed precision is applied here instead.
        with self.accelerator.autocast():
            terms = self.loss_terms(model, inputs)
        if model.training:
            for name in LOGGED_TERMS[self.objective]:
                value = terms[name].detach().double()
                self._term_sums[name] = self._term_sums.get(name, 0) + value
            self._term_count += 1
        if return_outputs:
            return terms["loss"], {k: v.detach() for k, v in terms.items()}
        return terms["loss"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # The Trainer logs "loss" once per logging step on every process, so reducing here is
        # a collective every rank reaches; its end-of-run summary has no "loss" and is left be.
        if "loss" in logs and self._term_count:
            names = LOGGED_TERMS[self.objective]
            count = torch.tensor(float(self._term_count), dtype=torch.float64)
            sums = torch.stack([self._term_sums[n].to(self.args.device) for n in names])
            sums = torch.cat([sums, count.to(self.args.device).unsqueeze(0)])
            sums = self.accelerator.reduce(sums, reduction="sum")
            for i, name in enumerate(names):
                logs[name] = float(sums[i] / sums[-1])
            self._term_sums, self._term_count = {}, 0
        super().log(logs, start_time)


# ---------------------------------------------------------------------------- entry


def build_policy_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Iterable[Mapping[str, Any]],
    output_dir: str | Path,
    cfg: TrainPolicySection,
    *,
    gold: list[dict[str, list[int] | list[float]]] | None = None,
) -> RlmecTrainer:
    """The configured trainer for ``cfg.variant`` on stage 4's RL rows.

    ``gold_sft`` trains on ``gold`` (``gold_sft_rows``) instead, for as many optimizer steps
    as the RL variants take over ``rows``.
    """
    variant = cfg.variant
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; load it with rlmec_core.modeling.load_policy")
    rows = list(rows)
    if not rows:
        raise ValueError(f"train_policy: no rows to train variant {variant!r} on")
    args = training_arguments(cfg, output_dir, seed=cfg.seed)
    if variant == "gold_sft":
        if not gold:
            raise ValueError("gold_sft: no gold rows (gold_sft_rows of the RL rows' problems)")
        steps = optimizer_steps(len(rows), cfg, args.world_size)
        args = training_arguments(cfg, output_dir, seed=cfg.seed, max_steps=steps)
        train_rows, objective, coef = gold, "sft", 1.0
    elif variant == "rft":
        train_rows, objective, coef = policy_rows(rows, variant), "sft", 1.0
    else:
        coef = 0.0 if variant == "no_imitation" else cfg.imitation_coef
        train_rows, objective = policy_rows(rows, variant), "rlmec"
    trainer = RlmecTrainer(
        model=wrap_lora(model, cfg.lora) if cfg.lora is not None else model,
        args=args,
        train_dataset=ListDataset(train_rows),
        data_collator=RlmecCollator(tokenizer.pad_token_id),
        objective=objective,
        epsilon=cfg.epsilon,
        imitation_coef=coef,
        rl_normalizer=cfg.rl_normalizer,
    )
    use_progress_callbacks(trainer)
    trainer.add_callback(NonFiniteGuard())  # a diverged run fails, commits nothing
    return trainer


def _histories(log_history: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list]:
    return {
        name: [(int(e["step"]), float(e[name])) for e in log_history if name in e and "step" in e]
        for name in names
    }


def train_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Iterable[Mapping[str, Any]],
    output_dir: str | Path,
    cfg: TrainPolicySection,
    *,
    gold: list[dict[str, list[int] | list[float]]] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on stage 4's RL rows with ``cfg.variant``'s objective.

    Checkpoints go to ``output_dir/checkpoint-<step>``; with ``resume`` the last one is picked
    up, so an interrupted run continues at its saved step (and a finished one does no more).
    The caller saves the final model; with ``cfg.lora`` the adapters are trained, then
    merged into ``model``. ``gold``: the ``gold_sft`` rows (that variant only).

    Returns ``variant``, ``train_loss``, ``final_loss``, ``steps``, ``runtime_s``, ``n_rows``,
    ``trainable_params``, ``resumed_from``, ``loss_history`` (list of ``(step, loss)``) and
    ``term_histories``
    (``l_rl``, ``l_im``, ``clip_fraction``, ``mean_ratio``; ``nll`` for ``rft``/``gold_sft``).
    """
    output_dir = Path(output_dir)
    trainer = build_policy_trainer(model, tokenizer, rows, output_dir, cfg, gold=gold)
    refuse_sharded_weights(trainer)
    last = last_complete_checkpoint(output_dir) if resume else None
    if last:
        logger.info("train_policy: resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if is_lora(trainer.model):
        merge_lora(trainer.model)  # into ``model``'s own weights: the caller saves ``model``
    model.eval()

    log_history = trainer.state.log_history
    history = _histories(log_history, ["loss"])["loss"]
    return {
        "variant": cfg.variant,
        "train_loss": float(result.training_loss),
        "final_loss": history[-1][1] if history else float("nan"),
        "steps": int(trainer.state.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
        "n_rows": len(trainer.train_dataset),
        "learning_rate": cfg.learning_rate,
        "epsilon": cfg.epsilon,
        "imitation_coef": trainer.imitation_coef,
        "rl_normalizer": trainer.rl_normalizer,
        "trainable_params": int(n_trainable),
        "resumed_from": last,
        "loss_history": history,
        "term_histories": _histories(log_history, LOGGED_TERMS[trainer.objective]),
    }
