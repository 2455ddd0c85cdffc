"""The lean log-prob path inside a ``Trainer``: the output head only where a token is trained.

A causal LM's own forward projects every position onto the vocabulary; for a prompt of a
few hundred tokens and a short response (the GRM's verdicts, a policy's answer) most of
those ``[batch, length, vocab]`` float32 logits are thrown away by the loss, yet they cost
the head's matmul, a log-softmax and their backward. ``rlmec_core.logprobs`` applies the
head at the wanted positions only; this mixin gives every trainer of the project that path,
and the model's own forward where a wrapper or a sharded model must be called whole.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, Trainer

from rlmec_core.logprobs import HeadMode, sequence_logprobs
from rlmec_core.trainers.lora import is_lora

IGNORE_INDEX = -100  # label value the causal-LM loss skips


class LeanLogprobsMixin:
    """For ``Trainer`` subclasses: ``self.token_logprobs(model, ...)`` (float32 ``[B, L]``)."""

    def _head(self: Trainer, model: torch.nn.Module) -> HeadMode:
        # The lean path calls the decoder and the output head directly; a wrapper (DDP,
        # DataParallel, DeepSpeed) or sharded model must go through its own forward instead,
        # which still keeps logits in the model dtype and reduces them chunk by chunk.
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return "logits"
        return "auto" if isinstance(model, PreTrainedModel) else "logits"

    def _lean_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # LoRA's adapters live inside the base model's layers: its lean path trains them too.
        return model.get_base_model() if is_lora(model) else model

    def token_logprobs(
        self,
        model: torch.nn.Module,
        ids: torch.Tensor,
        attention: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """``log π(ids[b, t] | ids[b, <t])`` where ``mask[b, t]``, else 0 (``[B, L]``)."""
        model = self._lean_model(model)
        return sequence_logprobs(model, ids, attention, mask, head=self._head(model))


class LeanCausalLMTrainer(LeanLogprobsMixin, Trainer):
    """A ``Trainer`` for (prompt, response) rows with ``labels`` (-100 where untrained): the
    causal-LM loss of the model's own forward, computed on the lean path.

    Normalised as the model's loss is: summed over the trained tokens and divided by the
    Trainer's ``num_items_in_batch`` when it counts them, else their mean. A wrapped or
    sharded model (several processes) goes through the Trainer's own ``compute_loss``.
    """

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if return_outputs or self._head(self._lean_model(model)) != "auto":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        mask = labels != IGNORE_INDEX
        # The lean path calls the decoder and the head directly, not the forward the
        # Accelerator wraps in autocast: mixed precision is applied here instead.
        with self.accelerator.autocast():
            logp = self.token_logprobs(model, inputs["input_ids"], inputs["attention_mask"], mask)
        total = -logp.sum()
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # One process here (a distributed model is wrapped, so it took the branch above).
            return total / num_items_in_batch
        return total / mask.sum().clamp(min=1)
