"""The config's fields by type, for tests that try bad values on every one of them."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel

from rlmec_core.config import PipelineConfig


def float_fields(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Every float field of the config (dotted path), nested sections and the chat
    teacher's included: the fields a non-finite number could reach."""
    found = []
    for name, field in model.model_fields.items():
        kinds = [field.annotation, *get_args(field.annotation)]
        sections = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        for section in sections:
            found += float_fields(section, f"{prefix}{name}.")
        if not sections and "float" in str(field.annotation):
            found.append(f"{prefix}{name}")
    return sorted(set(found))
