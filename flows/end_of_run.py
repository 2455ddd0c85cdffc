"""What a run's evaluation table shows, said after it: the last lines of `rlmec run`.

One run of a profile cannot show the method's effect (that takes `rlmec ablate`, with paired
CIs), and the smoke-scale profiles cannot show it at all. So after the table, a shipped
profile gets its documented figure and the command that reproduces it, and any other config
the reminder of how an effect is measured. A config named like a shipped profile but changed
is told that the documented figure does not apply to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlmec_core.config import ConfigError, PipelineConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

_SMALL = (
    "configs/small.yaml's study: RLMEC +6.6 points [+4.3, +8.9] over the initial policy on "
    "its 1,200-problem test split, gold_sft, rft and no_token_reward within a point of it "
    "(3 seeds; docs/results.md §7c, measured at commit e1eab92; today's commit gives other "
    "numbers, rlmec, gold_sft and rft still within a point of each other). `rlmec ablate --config configs/small.yaml --seeds 3` "
    "re-measures it."
)
_SMOLLM = (
    "The real-model profile: configs/smollm.yaml on SmolLM2-135M-Instruct (README, 'A real "
    "pretrained model'; `rlmec fetch-model` first)."
)

DOCUMENTED: dict[str, tuple[str, ...]] = {
    "tiny": (
        "This is the smoke-scale profile (configs/tiny.yaml): it shows that every stage runs; "
        "at 400 collected problems no variant moves its policy (docs/results.md §4).",
        "Where the method's effect is shown: " + _SMALL,
    ),
    "micro": (
        "configs/micro.yaml is a seconds-long check that every stage runs; it measures nothing.",
        "Where the method's effect is shown: " + _SMALL,
    ),
    "small": ("One run's table cannot tell the variants apart; " + _SMALL,),
    "smollm-micro": (
        "configs/smollm-micro.yaml is the CI check of the real-model path; it measures nothing.",
        _SMOLLM,
    ),
    "smollm": (
        "One run of configs/smollm.yaml on SmolLM2-135M-Instruct: README ('A real pretrained "
        "model') and docs/results.md §8 give this run's measured figures.",
        "Its comparison with the baselines is not measured yet; `rlmec ablate --config "
        "configs/smollm-ablation.yaml` runs it (a converged bootstrap, 1,000 test problems).",
    ),
    "smollm-ablation": (
        "configs/smollm-ablation.yaml is the study of RLMEC against its baselines on "
        "SmolLM2-135M-Instruct: `rlmec tune`, then `rlmec ablate` on it (docs/results.md §8e).",
    ),
}

GENERIC = (
    "One run's table does not measure the method's effect: `rlmec ablate --config <this "
    "config>` compares RLMEC with its baselines, with paired CIs.",
)


def end_of_run_lines(config: PipelineConfig, configs: Path = CONFIGS) -> tuple[str, ...]:
    """The lines `rlmec run` prints after its evaluation table for ``config``."""
    name = config.run.name
    shipped = configs / f"{name}.yaml"
    if name not in DOCUMENTED or not shipped.is_file():
        return GENERIC
    try:
        reference = load_config(shipped)
    except ConfigError:
        return GENERIC
    if _located(config) != _located(reference):
        return (
            f"This config is named {name!r} but differs from configs/{name}.yaml: what that "
            "profile's documentation says does not apply to it.",
            *GENERIC,
        )
    return DOCUMENTED[name]


def _located(config: PipelineConfig) -> Any:
    """What the config computes, every file location absolute: a copy that names the same
    files by other relative paths, or tracks to another MLflow store, is the same profile."""

    def resolve(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(key, v) for v in value]
        if isinstance(value, str) and (key.endswith("path") or key == "init_from"):
            return str(config.resolve_path(value))
        return value

    return resolve("", config.model_dump(mode="json", exclude={"tracking"}))
