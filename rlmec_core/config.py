"""The one typed configuration object that reaches every stage, loaded from YAML.

Each stage has its own section. A stage's cache key hashes only its section's
*semantic* fields: operational knobs (retries, time limits) never invalidate a cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from rlmec_core.config_yaml import YamlInputError, clip, load_yaml
from rlmec_core.errors import InputError
from rlmec_core.loss_settings import (
    DEFAULT_EPSILON,
    DEFAULT_IMITATION_COEF,
    EPSILON_BOUNDS,
    MIN_IMITATION_COEF,
)

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
# gradient_checkpointing trades compute for memory; the gradients are the same.
OPERATIONAL_FIELDS = frozenset(
    {"retries", "retry_delay_seconds", "timeout_seconds", "gradient_checkpointing"}
)

# The policy variants of stage 5: the method, its two ablations and two baselines
# (train_policy.variant says which is which).
VARIANTS = ("rlmec", "no_imitation", "no_token_reward", "rft", "gold_sft")
Variant = Literal[VARIANTS]  # type: ignore[valid-type]
RL_NORMALIZERS = ("reward_tokens", "response_tokens")
RlNormalizer = Literal[RL_NORMALIZERS]  # type: ignore[valid-type]
# How the GRM names a sample's first error step (train_grm.error_step).
ERROR_STEP_SOURCES = ("generated", "likelihood")
ErrorStepSource = Literal[ERROR_STEP_SOURCES]  # type: ignore[valid-type]


class ConfigError(InputError, ValueError):
    """A configuration file that cannot be used; the message names the file and field."""


class Section(BaseModel):
    # No NaN or infinity anywhere: a learning rate of .inf trains a model of NaNs.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StageSection(Section):
    retries: int = Field(0, ge=0, le=100, description="Times a failed stage is run again.")
    # Bounded: Prefect cannot schedule a retry days away (an OverflowError, not a wait).
    retry_delay_seconds: float = Field(
        5.0, ge=0, le=86_400, description="Seconds between a failure and the next try."
    )
    timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=31_536_000,  # a year
        description="Seconds the stage may run before it is stopped; None: no limit.",
    )

    def semantic(self) -> dict[str, Any]:
        """The fields that define what the stage computes (used for cache keys)."""
        return {
            k: v for k, v in self.model_dump(mode="json").items() if k not in OPERATIONAL_FIELDS
        }


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy and torch accept


class RunSection(Section):
    """The run's name and seed."""

    name: str = Field(
        "rlmec", min_length=1, description="The run's name; MLflow's run names start with it."
    )
    seed: Seed = Field(0, description="The seed of every stage that has none of its own.")


# What MLflow can track to: a database (``sqlite:///…``, ``postgresql+psycopg2://…``), a
# tracking server, Databricks, or a local folder (``file:`` or a plain path).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")


class TrackingSection(Section):
    """Where MLflow tracks the runs to."""

    mlflow_tracking_uri: str | None = Field(
        None,
        min_length=1,
        description=(
            "Where MLflow tracks to: a database, a tracking server, Databricks or a folder. "
            "None: a sqlite store inside the workspace (``sqlite:///<workspace>/mlflow.db``)."
        ),
    )
    experiment: str = Field(
        "rlmec", min_length=1, max_length=500, description="The MLflow experiment's name."
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        scheme = uri.split("://", 1)[0].split("+", 1)[0] if uri and "://" in uri else ""
        if uri and scheme not in (*TRACKING_SCHEMES, "") and not scheme.startswith("databricks"):
            raise ValueError(
                f"unsupported scheme {clip(scheme, 40)!r}; use one of "
                f"{', '.join(TRACKING_SCHEMES)}, databricks, or a folder"
            )
        return uri


class SyntheticSection(Section):
    """The synthetic arithmetic task (``rlmec_core.data.synthetic``)."""

    n_train: int = Field(2000, ge=1, description="Problems in the train split.")
    n_dev: int = Field(200, ge=1, description="Problems in the dev split.")
    n_test: int = Field(200, ge=1, description="Problems in the test split.")
    min_steps: int = Field(2, ge=1, description="The fewest steps a problem's solution takes.")
    max_steps: int = Field(4, ge=1, description="The most steps a problem's solution takes.")
    max_operand: int = Field(10, ge=2, description="The largest number a step operates with.")
    max_value: int = Field(100, ge=4, description="The largest intermediate result.")

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticSection:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must be <= max_steps")
        if self.max_value < 2 * self.max_operand:
            raise ValueError("max_value must be >= 2 * max_operand")
        return self


# An eval set's name names its file in the data artifact and its column in the tables:
# a plain identifier, never one of the splits' names.
_EVAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_EVAL_NAMES = frozenset(
    {"train", "dev", "test", "synthetic", "synthetic_train", "synthetic_dev", "synthetic_test"}
)


class EvalFile(Section):
    name: str = Field(description="The set's name: its file in the data artifact, its column.")
    path: str = Field(
        min_length=1, description="The file; a relative path is against the config's folder."
    )
    format: Literal["gsm8k", "svamp", "qa"] | None = Field(
        None, description="The file's format; None: told by its fields."
    )
    limit: int | None = Field(None, ge=1, description="The first this many rows; None: all.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _EVAL_NAME.fullmatch(name):
            raise ValueError(
                "must be a letter then up to 63 letters, digits, '_' or '-' (it names a file)"
            )
        if name.lower() in RESERVED_EVAL_NAMES:
            raise ValueError(f"{name!r} is reserved for the synthetic splits; choose another")
        return name


class DataSection(StageSection):
    """Stage data: the train, dev and test problems and the held-out sets."""

    train_file: EvalFile | None = Field(
        None, description="Where train problems come from; None: the synthetic task."
    )
    synthetic: SyntheticSection = Field(
        SyntheticSection(), description="The synthetic task: its splits and their problems."
    )
    eval_files: list[EvalFile] = Field(
        [], description="Held-out sets evaluated beside the synthetic test split."
    )

    @field_validator("eval_files")
    @classmethod
    def _unique_names(cls, files: list[EvalFile]) -> list[EvalFile]:
        seen: dict[str, int] = {}
        for index, item in enumerate(files):
            first = seen.setdefault(item.name.lower(), index)  # one file on any file system
            if first != index:
                raise ValueError(
                    f"items {first} and {index} are both named {item.name!r}; names must differ"
                )
        return files


# auto: bf16 on a GPU that supports it, else fp32 (``rlmec_core.precision``).
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class PromptsSection(Section):
    """How prompts are shown to the models (``rlmec_core.prompt_format``)."""

    format: Literal["auto", "plain", "chat"] = Field(
        "auto",
        description=(
            "``chat`` wraps the policy's and the GRM's prompts in the tokenizer's chat template "
            "(one user message, then the assistant turn), ``plain`` uses the bare text prompts, "
            "``auto`` is chat when the tokenizer has a chat template."
        ),
    )


class LoraSection(Section):
    """LoRA adapters (``peft``) instead of full fine-tuning; merged into the saved model."""

    r: int = Field(16, ge=1, description="The adapters' rank.")
    alpha: float = Field(32.0, gt=0, description="The adapters' scale numerator (alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[Annotated[str, Field(min_length=1)]] | Literal["all-linear"] = Field(
        "all-linear",
        description=(
            'Module names (e.g. [q_proj, v_proj]) or "all-linear": every linear layer but the head.'
        ),
    )


class LauncherSection(Section):
    """How a training stage runs: in the task's process or under ``accelerate launch``."""

    kind: Literal["local", "accelerate"] = Field(
        "local",
        description="``local``: in the task's process; ``accelerate``: ``accelerate launch``.",
    )
    num_processes: int = Field(
        1, ge=1, description="Processes under accelerate; ``batch_size`` is per process."
    )
    config_file: str | None = Field(
        None,
        description=(
            "An accelerate config (e.g. for DeepSpeed or FSDP); a relative path is resolved "
            "against the config's folder."
        ),
    )


# The training settings whose default a stage changes: their bounds and meaning are
# declared once here, each default where it applies.
LearningRate = Annotated[float, Field(gt=0, description="The peak learning rate.")]
BatchSize = Annotated[int, Field(ge=1, description="Examples per micro-batch, per process.")]
AdamBeta2 = Annotated[float, Field(gt=0, lt=1, description="AdamW's second-moment decay.")]
MaxLength = Annotated[
    int,
    Field(ge=8, description="Tokens per training example; longer examples lose their tail."),
]
SaveSteps = Annotated[int, Field(ge=1, description="Optimizer steps between checkpoints.")]


Launcher = Annotated[
    LauncherSection, Field(description="Where the training runs: locally or under accelerate.")
]


class TrainingSection(StageSection):
    """How a model is fine-tuned; bootstrap, train_grm and train_policy all train this way."""

    epochs: float = Field(3.0, gt=0, description="Passes over the training examples.")
    max_steps: int | None = Field(
        None, ge=1, description="When set, the number of optimizer steps, whatever epochs says."
    )
    learning_rate: LearningRate = 2e-5
    batch_size: BatchSize = 16
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description=(
            "Micro-batches per optimizer step: the global batch is batch_size × this × processes."
        ),
    )
    warmup_ratio: float = Field(
        0.03, ge=0, lt=1, description="The share of the steps the learning rate warms up over."
    )
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="The learning rate's schedule."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW's weight decay.")
    adam_beta2: AdamBeta2 = 0.999
    max_length: MaxLength = 1024
    save_steps: SaveSteps = 50
    save_total_limit: int | None = Field(
        2, ge=1, description="Checkpoints kept (the newest); None: all."
    )
    logging_steps: int = Field(
        10,
        ge=1,
        description=(
            "Steps per logged point of the loss curves, and per progress line off a terminal."
        ),
    )
    precision: Precision = Field(
        "auto",
        description=(
            "Mixed precision (the losses stay float32); auto: bf16 on a GPU that supports it, "
            "else fp32."
        ),
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more time."
    )
    lora: LoraSection | None = Field(None, description="LoRA adapters; None: full fine-tuning.")


# The TrainingSection settings Hugging Face's ``TrainingArguments`` takes as they are, by
# the name it gives them: the one place a setting becomes a trainer argument. The rest are
# converted by ``rlmec_core.trainers.sft.training_arguments`` (max_steps, warmup_ratio,
# precision, gradient_checkpointing) or used by the stage itself (max_length, lora, retries).
TRAINING_ARGUMENTS = {
    "epochs": "num_train_epochs",
    "learning_rate": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "lr_scheduler": "lr_scheduler_type",
    "weight_decay": "weight_decay",
    "adam_beta2": "adam_beta2",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "logging_steps": "logging_steps",
}


class BootstrapSection(TrainingSection):
    """Stage bootstrap: the initial policy, fine-tuned on the gold solutions."""

    model_path: str | None = Field(
        None,
        description=(
            "A local Hugging Face model folder (or a .gguf file): the policy starts from it "
            "and is fine-tuned on the train split's gold solutions (epochs 0: used as it is). "
            "None: a tiny Llama trained from scratch, sized by the fields below."
        ),
    )
    # Separate from run.seed so `rlmec ablate --bootstrap-seeds` varies the initial policy
    # on the same data.
    seed: Seed | None = Field(
        None,
        description=(
            "Bootstrap's own seed (the tiny model's initialisation, the data order); "
            "None: run.seed."
        ),
    )
    # Defaults: the tiny offline policy (about 0.5M parameters; 20–80% dev accuracy).
    vocab_size: int = Field(1024, ge=64, description="The tiny model's vocabulary size.")
    hidden_size: int = Field(96, ge=8, description="The tiny model's hidden size.")
    num_layers: int = Field(3, ge=1, description="The tiny model's layers.")
    num_heads: int = Field(4, ge=1, description="The tiny model's attention heads.")
    intermediate_size: int = Field(384, ge=8, description="The tiny model's MLP width.")
    max_position_embeddings: int = Field(
        512, ge=32, description="The tiny model's longest sequence."
    )
    epochs: float = Field(
        5.0, ge=0, description="Passes over the gold solutions; 0: model_path as it is."
    )
    learning_rate: LearningRate = 3e-3
    adam_beta2: AdamBeta2 = 0.98  # short memory: faster at a high LR
    max_length: MaxLength = 512
    save_steps: SaveSteps = 200
    eval_batch_size: int = Field(
        200, ge=1, description="Problems per batch when measuring greedy dev accuracy."
    )
    eval_max_new_tokens: int = Field(
        160, ge=1, description="Tokens generated per dev problem when measuring accuracy."
    )
    dev_patience: int | None = Field(
        None,
        ge=1,
        description=(
            "Training until dev stops improving (a converged initial policy). None: train "
            "``epochs``, measure dev once at the end. N: measure greedy dev accuracy after "
            "every epoch, stop after N epochs without a new best and keep the best epoch's "
            "weights; ``epochs`` is then the most it trains, and checkpoints are written at "
            "epoch ends (not save_steps)."
        ),
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BootstrapSection:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.epochs == 0 and self.model_path is None:
            raise ValueError("epochs 0 (no training) needs model_path: a model to start from")
        if self.epochs == 0 and self.max_steps is not None:
            raise ValueError("epochs 0 skips training; max_steps would train: set one of them")
        if self.dev_patience is not None and (self.epochs == 0 or self.max_steps is not None):
            raise ValueError("dev_patience stops after whole epochs: set epochs > 0, not max_steps")
        return self

    def tiny_architecture(self) -> dict[str, int]:
        """The offline tiny Llama's sizes, as ``modeling.build_tiny_llama`` takes them."""
        sizes = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
        return self.model_dump(include={*sizes, "max_position_embeddings"})


class CollectSection(StageSection):
    """Stage collect: the initial policy's sampled solutions to the train problems."""

    k: int = Field(5, ge=1, description="Solutions sampled per problem.")
    temperature: float = Field(0.7, ge=0, description="The sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling's probability mass.")
    max_new_tokens: int = Field(512, ge=1, description="Tokens generated per solution.")
    batch_size: int = Field(64, ge=1, description="Problems per generation batch (hf backend).")
    max_problems: int | None = Field(
        None, ge=1, description="The first this many train problems; None: all."
    )


class ArithmeticTeacherSection(Section):
    kind: Literal["arithmetic"] = Field(
        "arithmetic", description="The offline teacher that recomputes every step."
    )


# An OpenAI-compatible endpoint's settings (``rlmec_core.openai_client.OpenAIEndpoint``):
# bounds and meaning declared once, for EndpointSection and the sections that re-default
# them. base_url and model are FieldInfos, since the chat teacher also makes them required.
_BASE_URL = Field(description="The endpoint, e.g. http://127.0.0.1:8000/v1.")
_MODEL = Field(description="The model name the requests give.")
ApiKeyEnv = Annotated[
    str | None,
    Field(
        description=(
            "The *name* of the environment variable that holds the API key; the key itself "
            "never appears in a config, a log, MLflow or an artifact. None: no key."
        )
    ),
]
RequestTimeout = Annotated[float, Field(gt=0, description="Seconds one request may take.")]
Concurrency = Annotated[int, Field(ge=1, description="Requests in flight at once.")]


class EndpointSection(Section):
    """An OpenAI-compatible endpoint: where it is, the model, the key and how it is called."""

    base_url: Annotated[str | None, _BASE_URL] = None
    model: Annotated[str | None, _MODEL] = None
    api_key_env: ApiKeyEnv = None
    timeout_s: RequestTimeout = 120.0
    max_retries: int = Field(
        5,
        ge=0,
        description=(
            "Retries of a request that failed (408/409/429/5xx, a timeout, a malformed body), "
            "with exponential backoff."
        ),
    )
    concurrency: Concurrency = 8


class ChatTeacherSection(EndpointSection):
    """A chat model behind an OpenAI-compatible endpoint, as distill's teacher."""

    kind: Literal["chat"] = Field("chat", description="The chat teacher.")
    # A hosted chat API by default: it must be named, takes OpenAI's key variable, and is
    # called a few requests at a time, each a short chat answer.
    base_url: Annotated[str, _BASE_URL]
    model: Annotated[str, _MODEL]
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY"
    timeout_s: RequestTimeout = 60.0
    concurrency: Concurrency = 4
    max_tokens: int = Field(1024, ge=1, description="Tokens the teacher may answer with.")
    max_failed_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "A sample whose calls still fail after max_retries abstains; the stage fails only "
            "when more than this fraction of its samples do (an outage, a wrong key)."
        ),
    )


class DistillSection(StageSection):
    """Stage distill: the teacher's minimum-edit rewrites of the incorrect samples."""

    teacher: ArithmeticTeacherSection | ChatTeacherSection = Field(
        ArithmeticTeacherSection(),
        discriminator="kind",
        description="Who rewrites the incorrect samples (``kind``: arithmetic or chat).",
    )


class VerificationSection(Section):
    """The step checker (``rlmec_core.verification``) on samples and rewrites.

    Where it applies, a sample with the gold answer but a step that fails counts as
    incorrect and goes to the teacher, and a teacher or GRM rewrite is kept only if every
    step checks.
    """

    steps: Literal["auto", "equations", "grounded", "off"] = Field(
        "auto",
        description=(
            "``grounded`` also requires every number to be stated by the question or "
            "computed (for tasks that state every number, like the synthetic one); "
            "``equations`` only that every equation holds; ``auto``: grounded for synthetic "
            "problems, equations for other numeric ones; ``off``: answers alone decide."
        ),
    )
    teacher_judges_correct: bool = Field(
        False,
        description=(
            "Where no checker applies (QA, a chat teacher's domain), also send the samples "
            "with the gold answer to the teacher, which may name an error."
        ),
    )


class TrainGrmSection(TrainingSection):
    """Stage train_grm: the generative reward model, fine-tuned on the rewrites."""

    init_from: str | None = Field(
        None,
        description=(
            "The model the GRM starts from: None, the initial policy (the method's choice); "
            "or a local HF model folder or a .gguf file (a folder holding one) whose "
            "tokenizer is the policy's, since the GRM scores the policy's own token ids."
        ),
    )
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="The share of the rewrites held out to measure the GRM."
    )
    eval_batch_size: int = Field(
        32, ge=1, description="Held-out examples per batch when measuring the GRM."
    )
    max_new_tokens: int = Field(
        512, ge=1, description="Tokens the GRM may generate per held-out rewrite."
    )
    error_step: ErrorStepSource = Field(
        "generated",
        description=(
            "The GRM's first-error-step verdict, in its held-out metrics and in annotate. "
            '"generated": it writes "The first error step is [k]" (the method\'s protocol). '
            '"likelihood": the step of the first token of the prediction it would not keep '
            "after the rewrite prompt (p_t < 0.5, the first token annotate penalises), read "
            'off the forward pass that gives the token rewards; "correct" if it keeps every '
            "token."
        ),
    )
    launcher: Launcher = LauncherSection()


class AnnotateSection(StageSection):
    """Stage annotate: the GRM's token rewards and rewrites for the samples."""

    batch_size: int = Field(32, ge=1, description="Samples per GRM batch.")
    max_new_tokens: int = Field(512, ge=1, description="Tokens the GRM may generate per rewrite.")
    precision: Precision = Field(
        "auto", description="The dtype the GRM and the reference model run in."
    )


# The learning rates `rlmec tune` tries for each variant unless told others (its
# --learning-rates); here, not in flows.tuning, so the command line shows them without
# importing the pipeline.
DEFAULT_TUNING_GRID = (1e-4, 3e-4, 1e-3)


class TrainPolicySection(TrainingSection):
    """Stage train_policy: the policy trained from the initial one, by variant."""

    variant: Variant = Field(
        "rlmec",
        description=(
            "What is trained: rlmec, L_RL + λ·L_IM with the GRM's token rewards; its "
            "ablations no_imitation (λ = 0) and no_token_reward (instance-level rewards); the "
            "baselines rft (supervised on the correct samples and the rewrites) and gold_sft "
            "(supervised on the gold solutions of the same problems, for as many steps)."
        ),
    )
    learning_rate: LearningRate = 5e-6
    batch_size: BatchSize = 8
    variant_learning_rates: dict[Variant, Annotated[float, Field(gt=0)]] = Field(
        {},
        description=(
            "Learning rates chosen on dev for single variants (`rlmec tune` prints them); a "
            "variant not listed trains at ``learning_rate``."
        ),
    )
    epsilon: float = Field(
        DEFAULT_EPSILON,
        gt=EPSILON_BOUNDS[0],
        lt=EPSILON_BOUNDS[1],
        description="ε: the importance ratio is clipped to [1-ε, 1+ε].",
    )
    imitation_coef: float = Field(
        DEFAULT_IMITATION_COEF,
        ge=MIN_IMITATION_COEF,
        description="λ: the weight of L_IM against L_RL.",
    )
    rl_normalizer: RlNormalizer = Field(
        "reward_tokens",
        description=(
            "What L_RL is divided by: the method's N_r (tokens with a non-zero reward), or "
            "every response token of the batch, an option outside the method that keeps "
            "L_RL's weight against L_IM independent of how many tokens the rewards leave at "
            "zero (docs/results.md §3). Instance-level rewards are never zero: both agree "
            "there."
        ),
    )
    # Separate from run.seed so an ablation over seeds reuses every upstream artifact.
    seed: Seed = Field(0, description="The training seed.")
    launcher: Launcher = LauncherSection()

    def for_variant(self, variant: str, seed: int | None = None) -> TrainPolicySection:
        """This section for one variant (and seed), resolved to the variant's own learning
        rate (``variant_learning_rates`` emptied, so resolving again changes nothing)."""
        return self.model_copy(
            update={
                "variant": variant,
                "seed": self.seed if seed is None else seed,
                "learning_rate": self.variant_learning_rates.get(variant, self.learning_rate),
                "variant_learning_rates": {},
            }
        )

    def resolved(self) -> TrainPolicySection:
        """This section as its own variant trains: at that variant's learning rate."""
        return self.for_variant(self.variant)

    def semantic(self) -> dict[str, Any]:
        # Only the variant's own learning rate shapes what it computes.
        fields = super().semantic()
        fields.pop("variant_learning_rates")
        fields["learning_rate"] = self.variant_learning_rates.get(self.variant, self.learning_rate)
        return fields


class EvaluateSection(StageSection):
    """Stage evaluate: greedy accuracy of the initial and the trained policy."""

    batch_size: int = Field(64, ge=1, description="Problems per generation batch (hf backend).")
    max_new_tokens: int = Field(512, ge=1, description="Tokens generated per problem.")
    split: Literal["test", "dev"] = Field(
        "test",
        description=(
            "test: the synthetic test split and the held-out files (final numbers); dev: the "
            "dev split alone (choices such as learning rates, made by `rlmec tune`)."
        ),
    )


# The placeholders ``generation.launch`` may use, filled in for each model it serves.
LAUNCH_PLACEHOLDERS = ("model_dir", "port", "model", "python")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


class GenerationSection(EndpointSection):
    """Where collect, train_grm, annotate and evaluate generate text (``generation_server``).

    Token rewards and reference log-probs are always computed by the HF forward pass,
    whatever the backend. With ``openai``, ``{port}`` in ``base_url`` means a free port
    chosen at each launch; ``model`` None names the model by its folder's path;
    ``concurrency`` bounds the requests in flight (one per prompt, ``n`` samples each),
    where the stages' ``batch_size`` applies to ``hf``.
    """

    backend: Literal["hf", "openai"] = Field(
        "hf",
        description=(
            "``hf``: the model decodes in the stage's own process (``rlmec_core.decoding``). "
            "``openai``: any OpenAI-compatible *completions* endpoint (vLLM, SGLang, TGI, "
            "llama.cpp server): prompts go out as token ids, so tokenisation is the hf path's."
        ),
    )
    launch: str | None = Field(
        None,
        description=(
            "A command that serves one model folder, e.g. ``vllm serve {model_dir} --port "
            "{port} --served-model-name {model}`` (placeholders: ``{model_dir}``, ``{port}``, "
            "``{model}``, ``{python}``: the stage's interpreter). The stage starts it for each "
            "model it generates with, waits until ``GET {base_url}/models`` answers, and stops "
            "it after. Without it the server at ``base_url`` must serve the stage's model "
            "(named ``model``): that suits collect only, since train_grm, annotate and "
            "evaluate generate with models this pipeline trains, and they refuse to run "
            "without ``launch``."
        ),
    )
    launch_timeout_s: float = Field(
        600.0, gt=0, description="Seconds a launched server may take to answer."
    )

    @model_validator(mode="after")
    def _usable(self) -> GenerationSection:
        if self.backend != "openai":
            return self
        if not self.base_url:
            raise ValueError(
                "backend openai needs base_url (e.g. http://127.0.0.1:8000/v1, or "
                "http://127.0.0.1:{port}/v1 with launch)"
            )
        unknown = set(_PLACEHOLDER.findall(self.base_url)) - {"port"}
        if unknown:
            raise ValueError(f"base_url: unknown placeholder {{{sorted(unknown)[0]}}}")
        port_placeholder = "{port}" in self.base_url
        if self.launch is None:
            if port_placeholder:
                raise ValueError("base_url has {port}, which only launch fills in")
            if not self.model:
                raise ValueError("without launch, model must name the model the server serves")
            return self
        if not self.launch.strip():
            raise ValueError("launch is empty; use null for a server that is already running")
        try:
            shlex.split(self.launch)
        except ValueError as exc:
            raise ValueError(f"launch is not a valid command line: {exc}") from None
        names = set(_PLACEHOLDER.findall(self.launch))
        if "model_dir" not in names:
            raise ValueError("launch must contain {model_dir}: the model folder it serves")
        if port_placeholder and "port" not in names:
            raise ValueError("base_url has {port}: launch must pass {port} to the server")
        return self

    def semantic(self) -> dict[str, Any]:
        """What decides the generated text: with hf nothing here; with openai where it is
        served (retries, concurrency, time limits and the key's variable do not)."""
        if self.backend == "hf":
            return {"backend": "hf"}
        return self.model_dump(mode="json", include={"backend", "base_url", "model", "launch"})


class PipelineConfig(Section):
    """Every section; each is described by its class's docstring."""

    run: RunSection = RunSection()
    tracking: TrackingSection = TrackingSection()
    verification: VerificationSection = VerificationSection()
    generation: GenerationSection = GenerationSection()
    prompts: PromptsSection = PromptsSection()
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

    def stage_hash(self, name: str, shared: Iterable[str]) -> str:
        """Hash of what a stage computes: its section's semantic fields, the ``shared``
        sections it reads (``tasks.config_reads`` finds them in its code) and the run seed."""
        payload = {
            "stage": name,
            "seed": self.run.seed,
            "section": self.stage(name).semantic(),
            **{section: _shared_fields(getattr(self, section)) for section in shared},
        }
        return _hash_json(payload)

    def config_hash(self) -> str:
        return _hash_json(self.model_dump(mode="json"))


def _shared_fields(section: Section) -> dict[str, Any]:
    """A shared section's part of a cache key: its ``semantic()`` where it has one."""
    semantic = getattr(section, "semantic", None)
    return semantic() if semantic is not None else section.model_dump(mode="json")


def _hash_json(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


MAX_REPORTED_ERRORS = 5


def _format_errors(path: Path, error: ValidationError) -> str:
    """One line: the file, then each field's path and problem (the first few)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        else:
            message = clip(item["msg"].removeprefix("Value error, "))
            given = item.get("input")  # a whole section (a check across its fields): not shown
            got = "" if isinstance(given, dict) else f" (got {clip(repr(given), 80)})"
            problems.append(f"{where}: {message}{got}")
    more = len(problems) - MAX_REPORTED_ERRORS
    shown = problems[:MAX_REPORTED_ERRORS] + ([f"and {more} more"] if more > 0 else [])
    return f"{path}: invalid configuration: {'; '.join(shown)}"


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; /dev/zero is not one


def _read_text(path: Path) -> str:
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config")
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")  # a byte order mark is allowed
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Load and validate a YAML config; errors name the file and each field's path.

    Duplicate keys, aliases that expand past a small size and non-finite numbers are
    errors too (``rlmec_core.config_yaml``); a byte order mark and CRLF line ends are fine.
    """
    path = Path(path)
    try:
        raw = load_yaml(_read_text(path))
    except YamlInputError as exc:
        where = f"{path}, line {exc.line}" if exc.line else str(path)
        raise ConfigError(f"{where}: {exc.reason}") from None
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
