"""The one typed configuration object that reaches every stage, loaded from YAML.

Each stage has its own section. A stage's cache key hashes only its section's
*semantic* fields: operational knobs (retries, time limits) never invalidate a cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

STAGES = (
    "data",
    "bootstrap",
    "collect",
    "distill",
    "train_grm",
    "annotate",
    "train_policy",
    "evaluate",
)

# Fields that change how a stage is run, not what it computes.
OPERATIONAL_FIELDS = frozenset({"retries", "retry_delay_seconds", "timeout_seconds"})

# The policy variants of stage 5: the method, its two ablations and two baselines.
# rlmec: L_RL + λ·L_IM with the GRM's token rewards; no_imitation: λ = 0; no_token_reward:
# instance-level rewards; rft: supervised on the correct samples and the rewrites;
# gold_sft: supervised on the gold solutions of the same problems, for as many steps.
VARIANTS = ("rlmec", "no_imitation", "no_token_reward", "rft", "gold_sft")
Variant = Literal[VARIANTS]  # type: ignore[valid-type]

# The top-level sections a stage reads besides its own: they are part of its cache key.
SHARED_SECTIONS: dict[str, tuple[str, ...]] = {
    "distill": ("verification",),
    "train_grm": ("verification",),
    "annotate": ("verification",),
}


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and field."""


class Section(BaseModel):
    # No NaN or infinity anywhere: a learning rate of .inf trains a model of NaNs.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StageSection(Section):
    retries: Annotated[int, Field(ge=0)] = 0
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 5.0
    timeout_seconds: Annotated[float | None, Field(gt=0)] = None

    def semantic(self) -> dict[str, Any]:
        """The fields that define what the stage computes (used for cache keys)."""
        return {
            k: v for k, v in self.model_dump(mode="json").items() if k not in OPERATIONAL_FIELDS
        }


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy and torch accept


class RunSection(Section):
    name: Annotated[str, Field(min_length=1)] = "rlmec"
    seed: Seed = 0


class TrackingSection(Section):
    # None: a sqlite store inside the workspace (``sqlite:///<workspace>/mlflow.db``).
    mlflow_tracking_uri: str | None = None
    experiment: str = "rlmec"


class SyntheticSection(Section):
    n_train: Annotated[int, Field(ge=1)] = 2000
    n_dev: Annotated[int, Field(ge=1)] = 200
    n_test: Annotated[int, Field(ge=1)] = 200
    min_steps: Annotated[int, Field(ge=1)] = 2
    max_steps: Annotated[int, Field(ge=1)] = 4
    max_operand: Annotated[int, Field(ge=2)] = 10
    max_value: Annotated[int, Field(ge=4)] = 100

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticSection:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must be <= max_steps")
        if self.max_value < 2 * self.max_operand:
            raise ValueError("max_value must be >= 2 * max_operand")
        return self


class EvalFile(Section):
    name: str
    path: str  # a relative path is resolved against the config file's folder
    format: Literal["gsm8k", "svamp", "qa"] | None = None
    limit: Annotated[int | None, Field(ge=1)] = None


class DataSection(StageSection):
    # None: use the synthetic task; otherwise train problems come from this file.
    train_file: EvalFile | None = None
    synthetic: SyntheticSection = SyntheticSection()
    eval_files: list[EvalFile] = []


class TrainingSection(StageSection):
    """How a model is fine-tuned; bootstrap, train_grm and train_policy all train this way."""

    epochs: Annotated[float, Field(gt=0)] = 3.0
    # When set, the number of optimizer steps, whatever ``epochs`` says.
    max_steps: Annotated[int | None, Field(ge=1)] = None
    learning_rate: Annotated[float, Field(gt=0)] = 2e-5
    batch_size: Annotated[int, Field(ge=1)] = 16  # per process
    # Micro-batches per optimizer step: the global batch is batch_size × this × processes.
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = 1
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    adam_beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999
    max_length: Annotated[int, Field(ge=8)] = 1024  # longer examples lose their tail
    save_steps: Annotated[int, Field(ge=1)] = 50
    save_total_limit: Annotated[int | None, Field(ge=1)] = 2  # checkpoints kept; None: all
    # Steps per logged point of the loss curves, and per progress line off a terminal.
    logging_steps: Annotated[int, Field(ge=1)] = 10


class BootstrapSection(TrainingSection):
    # A local Hugging Face model directory; when set, bootstrap trains nothing.
    model_path: str | None = None
    # Defaults: the tiny offline policy (about 0.5M parameters; 20–80% dev accuracy).
    vocab_size: Annotated[int, Field(ge=64)] = 1024
    hidden_size: Annotated[int, Field(ge=8)] = 96
    num_layers: Annotated[int, Field(ge=1)] = 3
    num_heads: Annotated[int, Field(ge=1)] = 4
    intermediate_size: Annotated[int, Field(ge=8)] = 384
    max_position_embeddings: Annotated[int, Field(ge=32)] = 512
    epochs: Annotated[float, Field(gt=0)] = 5.0
    learning_rate: Annotated[float, Field(gt=0)] = 3e-3
    adam_beta2: Annotated[float, Field(gt=0, lt=1)] = 0.98  # short memory: faster at a high LR
    max_length: Annotated[int, Field(ge=8)] = 512
    save_steps: Annotated[int, Field(ge=1)] = 200
    eval_batch_size: Annotated[int, Field(ge=1)] = 200
    eval_max_new_tokens: Annotated[int, Field(ge=1)] = 160

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BootstrapSection:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        return self


class CollectSection(StageSection):
    k: Annotated[int, Field(ge=1)] = 5
    temperature: Annotated[float, Field(ge=0)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_new_tokens: Annotated[int, Field(ge=1)] = 512
    batch_size: Annotated[int, Field(ge=1)] = 64
    max_problems: Annotated[int | None, Field(ge=1)] = None


class ArithmeticTeacherSection(Section):
    kind: Literal["arithmetic"] = "arithmetic"


class ChatTeacherSection(Section):
    kind: Literal["chat"] = "chat"
    base_url: str
    model: str
    # The *name* of the environment variable that holds the key; the key itself never
    # appears in a config, a log, MLflow or an artifact. None: the endpoint needs no key.
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0)] = 5
    concurrency: Annotated[int, Field(ge=1)] = 4
    max_tokens: Annotated[int, Field(ge=1)] = 1024


class DistillSection(StageSection):
    teacher: Annotated[
        ArithmeticTeacherSection | ChatTeacherSection, Field(discriminator="kind")
    ] = ArithmeticTeacherSection()


class VerificationSection(Section):
    """The step checker (``rlmec_core.verification``) on samples and rewrites.

    ``steps``: ``grounded`` also requires every number to be stated by the question or
    computed (for tasks that state every number, like the synthetic one); ``equations``
    only that every equation holds; ``auto``: grounded for synthetic problems, equations
    for other numeric ones; ``off``: answers alone decide. Where the checker applies, a
    sample with the gold answer but a step that fails counts as incorrect and goes to the
    teacher, and a teacher or GRM rewrite is kept only if every step checks.
    ``teacher_judges_correct``: where no checker applies (QA, a chat teacher's domain),
    also send the samples with the gold answer to the teacher, which may name an error.
    """

    steps: Literal["auto", "equations", "grounded", "off"] = "auto"
    teacher_judges_correct: bool = False


class TrainGrmSection(TrainingSection):
    learning_rate: Annotated[float, Field(gt=0)] = 2e-5
    heldout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    save_steps: Annotated[int, Field(ge=1)] = 50
    eval_batch_size: Annotated[int, Field(ge=1)] = 32
    max_new_tokens: Annotated[int, Field(ge=1)] = 512


class AnnotateSection(StageSection):
    batch_size: Annotated[int, Field(ge=1)] = 32
    max_new_tokens: Annotated[int, Field(ge=1)] = 512


class TrainPolicySection(TrainingSection):
    variant: Variant = "rlmec"
    learning_rate: Annotated[float, Field(gt=0)] = 5e-6
    batch_size: Annotated[int, Field(ge=1)] = 8
    # Learning rates chosen on dev for single variants (`rlmec tune` prints them); a
    # variant not listed trains at ``learning_rate``.
    variant_learning_rates: dict[Variant, Annotated[float, Field(gt=0)]] = {}
    epsilon: Annotated[float, Field(gt=0, lt=1)] = 0.3
    imitation_coef: Annotated[float, Field(ge=0)] = 1.0
    # The training seed, separate from run.seed so an ablation over seeds reuses every
    # upstream artifact.
    seed: Seed = 0

    def for_variant(self, variant: str, seed: int | None = None) -> TrainPolicySection:
        """This section for one variant (and seed), at the variant's own learning rate."""
        return self.model_copy(
            update={
                "variant": variant,
                "seed": self.seed if seed is None else seed,
                "learning_rate": self.variant_learning_rates.get(variant, self.learning_rate),
            }
        )

    def semantic(self) -> dict[str, Any]:
        # Only the variant's own learning rate shapes what it computes.
        fields = super().semantic()
        fields.pop("variant_learning_rates")
        fields["learning_rate"] = self.variant_learning_rates.get(self.variant, self.learning_rate)
        return fields


class EvaluateSection(StageSection):
    batch_size: Annotated[int, Field(ge=1)] = 64
    max_new_tokens: Annotated[int, Field(ge=1)] = 512
    # test: the synthetic test split and the held-out files (final numbers); dev: the dev
    # split alone (choices such as learning rates, made by `rlmec tune`).
    split: Literal["test", "dev"] = "test"


class PipelineConfig(Section):
    run: RunSection = RunSection()
    tracking: TrackingSection = TrackingSection()
    verification: VerificationSection = VerificationSection()
    data: DataSection = DataSection()
    bootstrap: BootstrapSection = BootstrapSection()
    collect: CollectSection = CollectSection()
    distill: DistillSection = DistillSection()
    train_grm: TrainGrmSection = TrainGrmSection()
    annotate: AnnotateSection = AnnotateSection()
    train_policy: TrainPolicySection = TrainPolicySection()
    evaluate: EvaluateSection = EvaluateSection()

    # The folder relative data paths are resolved against (the config file's folder).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self._base_dir / candidate).resolve()

    def stage(self, name: str) -> StageSection:
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        return getattr(self, name)

    def stage_hash(self, name: str) -> str:
        """Hash of what a stage computes: its section's semantic fields, the shared
        sections it reads and the run seed."""
        payload = {
            "stage": name,
            "seed": self.run.seed,
            "section": self.stage(name).semantic(),
            **{
                shared: getattr(self, shared).model_dump(mode="json")
                for shared in SHARED_SECTIONS.get(name, ())
            },
        }
        return _hash_json(payload)

    def config_hash(self) -> str:
        return _hash_json(self.model_dump(mode="json"))


def _hash_json(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path) -> PipelineConfig:
    """Load and validate a YAML config; errors name the file and each field's path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    config._base_dir = path.resolve().parent
    return config
