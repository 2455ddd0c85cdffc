"""LoRA fine-tuning through ``peft``: adapters are trained, a merged model comes out.

``wrap_lora`` freezes the model and injects the adapters into its linear layers (in place:
the caller's model object holds them); the Trainer then trains and checkpoints only the
adapters, so a resumed run loads them back from ``checkpoint-<step>``. ``merge_lora`` folds
them into the weights (``merge_and_unload``) and leaves the caller's object a plain model
again, which ``save_pretrained`` writes and ``AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from rlmec_core.config import LoraSection


def lora_config(lora: LoraSection) -> LoraConfig:
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )


def wrap_lora(model: PreTrainedModel, lora: LoraSection) -> PeftModel:
    """``model`` with trainable LoRA adapters (float32, whatever the base's dtype) and every
    base weight frozen."""
    return get_peft_model(model, lora_config(lora), autocast_adapter_dtype=True)


def is_lora(model: Any) -> bool:
    return isinstance(model, PeftModel)


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights; the base model object, trainable again."""
    merged = model.merge_and_unload()
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged


def lora_dtype(precision_dtype: torch.dtype, lora: LoraSection | None) -> torch.dtype:
    """The dtype to load a model in for training: float32 master weights for full
    fine-tuning (mixed precision autocasts the forward), the compute dtype for LoRA, whose
    frozen base weights need no float32 copy (half the memory in bf16/fp16)."""
    return precision_dtype if lora is not None else torch.float32


def lora_summary(lora: LoraSection | None, base: str) -> dict[str, Any]:
    """What lineage records about a LoRA-trained model: the adapters' settings and the base
    it was merged into (a parent artifact id or a model folder). Empty without LoRA."""
    if lora is None:
        return {}
    return {"lora": lora.model_dump(mode="json"), "base": base}
