from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from flows.fetch_model import MODELS, default_cache
from rlmec_core.config import STAGES, VARIANTS, ConfigError, PipelineConfig, load_config
from rlmec_core.loss_settings import check_loss_settings
from tasks.config_reads import stage_hash

REPO = Path(__file__).resolve().parents[1]


SHIPPED = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
# The configs behind docs/results.md's measurements must load too: their commands are quoted.
STUDY = sorted(path.stem for path in (REPO / "experiments" / "configs").glob("*.yaml"))


def shipped(name: str) -> PipelineConfig:
    return load_config(REPO / "configs" / f"{name}.yaml")


def test_tiny_is_the_offline_run_its_header_describes():
    config = shipped("tiny")
    # A tiny Llama trained here, an arithmetic teacher, decoding in process: no hub, no GPU.
    assert config.bootstrap.model_path is None and config.bootstrap.epochs > 0
    assert config.distill.teacher.kind == "arithmetic"
    assert config.generation.backend == "hf"
    assert config.tracking.mlflow_tracking_uri is None  # sqlite in the workspace
    # Each variant's learning rate, the best of `rlmec tune`'s grid 1e-5 3e-5 1e-4 3e-4.
    rates = config.train_policy.variant_learning_rates
    assert set(rates) == set(VARIANTS)
    assert set(rates.values()) <= {1e-5, 3e-5, 1e-4, 3e-4}


def test_small_keeps_the_choices_its_comments_cite():
    config = shipped("small")
    assert config.train_grm.epochs == 3
    policy = config.train_policy
    assert (policy.learning_rate, policy.rl_normalizer) == (3e-4, "response_tokens")
    assert policy.variant_learning_rates == {"no_imitation": 1e-5}
    assert policy.for_variant("no_imitation").learning_rate == 1e-5
    assert policy.for_variant("rlmec").learning_rate == 3e-4


def test_micro_exercises_the_paths_its_comments_promise():
    config = shipped("micro")
    assert config.train_grm.epochs == 32
    assert config.train_grm.timeout_seconds is not None  # a child process under a time limit
    assert config.verification.steps == "equations"
    assert config.resolve_path(config.data.eval_files[0].path).parent == REPO / "tests/fixtures"


def test_gsm8k_instruct_trains_as_the_method_on_four_processes():
    config = shipped("gsm8k-instruct")
    assert config.prompts.format == "chat" and config.bootstrap.epochs == 1
    teacher = config.distill.teacher
    assert teacher.kind == "chat" and teacher.api_key_env == "OPENAI_API_KEY"
    for section, epochs, rate in ((config.train_grm, 3, 2e-5), (config.train_policy, 3, 5e-6)):
        assert (section.epochs, section.learning_rate) == (epochs, rate)
        assert (section.lr_scheduler, section.warmup_ratio) == ("cosine", 0.03)
        assert section.precision == "auto"  # bf16 where the GPU has it
        launcher = section.launcher
        assert (launcher.kind, launcher.num_processes) == ("accelerate", 4)
        assert config.resolve_path(launcher.config_file).is_file()
    grm = config.train_grm
    assert grm.batch_size * grm.gradient_accumulation_steps * grm.launcher.num_processes == 64


@pytest.mark.parametrize("name", ["smollm", "smollm-ablation", "smollm-micro"])
def test_smollm_profiles_start_from_the_model_fetch_model_writes(name, monkeypatch):
    monkeypatch.delenv("RLMEC_MODEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    config = shipped(name)
    fetched = default_cache() / "smollm2-135m-instruct"
    assert "smollm2-135m-instruct" in MODELS
    assert config.resolve_path(config.bootstrap.model_path) == fetched
    assert config.prompts.format == "chat"
    assert config.train_grm.error_step == "likelihood"
    assert config.train_policy.rl_normalizer == "response_tokens"


def test_smollm_grm_starts_from_the_policy_but_smollm_micro_from_the_base_model():
    # smollm: "policy and GRM both start from it" (init_from None: the initial policy);
    # smollm-micro: the base model's GGUF folder, to exercise init_from, with LoRA.
    assert shipped("smollm").train_grm.init_from is None
    micro = shipped("smollm-micro")
    assert micro.resolve_path(micro.train_grm.init_from) == micro.resolve_path(
        micro.bootstrap.model_path
    )
    assert micro.train_policy.lora is not None
    assert micro.verification.steps == "equations"


@pytest.mark.parametrize(
    "folder, name", [("configs", n) for n in SHIPPED] + [("experiments/configs", n) for n in STUDY]
)
def test_shipped_configs_load(folder, name):
    config = load_config(REPO / folder / f"{name}.yaml")
    assert config.run.name == name
    for item in config.data.eval_files:
        assert config.resolve_path(item.path).is_file(), item.path


def test_small_is_tiny_with_more_rl_data():
    # Same split, bootstrap and teacher: `small` reuses tiny's cached upstream artifacts.
    tiny, small = (load_config(REPO / "configs" / f"{n}.yaml") for n in ("tiny", "small"))
    for section in ("data", "bootstrap", "distill", "annotate", "evaluate"):
        assert getattr(small, section) == getattr(tiny, section), section
    assert small.collect.max_problems == 5 * tiny.collect.max_problems


def test_smollm_ablation_is_smollm_with_a_converged_bootstrap_and_a_larger_test():
    # The study's differences from the one-hour profile are the ones its header states.
    run, study = (
        load_config(REPO / "configs" / f"{n}.yaml") for n in ("smollm", "smollm-ablation")
    )
    assert study.data.synthetic.n_test >= 1000 and study.data.synthetic.n_dev >= 200
    assert study.bootstrap.dev_patience is not None and run.bootstrap.dev_patience is None
    assert study.collect.max_problems == study.data.synthetic.n_train
    same = {"n_dev", "n_test"}
    assert study.data.synthetic.model_dump(exclude=same) == run.data.synthetic.model_dump(
        exclude=same
    )
    for section in ("prompts", "distill", "annotate", "evaluate", "verification"):
        assert getattr(study, section) == getattr(run, section), section
    ignore = {"timeout_seconds", "save_steps", "epochs", "dev_patience"}
    assert study.bootstrap.model_dump(exclude=ignore) == run.bootstrap.model_dump(exclude=ignore)
    for section in ("train_grm", "train_policy"):
        ours, theirs = (getattr(c, section).model_dump(exclude=ignore) for c in (study, run))
        assert ours == theirs, section


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_field_path(tmp_path):
    path = write(tmp_path, "collect:\n  tempreature: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "collect.tempreature: unknown key" in str(err.value)


def test_bad_value_names_field_path(tmp_path):
    path = write(tmp_path, "collect:\n  k: 0\ndata:\n  synthetic:\n    n_train: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "collect.k:" in message and "greater than or equal to 1" in message
    assert "data.synthetic.n_train:" in message


def test_chat_teacher_requires_endpoint_and_never_holds_a_key(tmp_path):
    path = write(tmp_path, "distill:\n  teacher:\n    kind: chat\n    model: m\n")
    with pytest.raises(ConfigError, match=r"distill\.teacher\.chat\.base_url"):
        load_config(path)
    path = write(
        tmp_path, "distill:\n  teacher:\n    kind: chat\n    model: m\n    api_key: sk-x\n"
    )
    with pytest.raises(ConfigError, match=r"api_key: unknown key"):
        load_config(path)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "collect: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_stage_hash_ignores_operational_fields_and_other_stages():
    base = PipelineConfig()
    retried = PipelineConfig.model_validate({"collect": {"retries": 3, "timeout_seconds": 9}})
    hotter = PipelineConfig.model_validate({"collect": {"temperature": 1.0}})
    assert stage_hash(base, "collect") == stage_hash(retried, "collect")
    assert stage_hash(base, "collect") != stage_hash(hotter, "collect")
    assert all(stage_hash(base, s) == stage_hash(hotter, s) for s in STAGES if s != "collect")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data:\n  eval_files:\n    - {name: g, path: ../g.jsonl}\n")
    config = load_config(path)
    assert config.resolve_path(config.data.eval_files[0].path) == tmp_path / "g.jsonl"


def test_the_grms_error_step_source_keys_train_grm_and_annotate():
    # annotate reads train_grm.error_step: changing it reruns both, and nothing before.
    base = PipelineConfig()
    likelihood = PipelineConfig.model_validate({"train_grm": {"error_step": "likelihood"}})
    changed = {s for s in STAGES if stage_hash(base, s) != stage_hash(likelihood, s)}
    assert changed == {"train_grm", "annotate"}
    with pytest.raises(ValidationError, match="error_step"):
        PipelineConfig.model_validate({"train_grm": {"error_step": "guessed"}})


def sections(model: type[BaseModel] = PipelineConfig) -> set[type[BaseModel]]:
    """``model`` and every section it nests (in unions, lists and dicts too)."""
    found = {model}
    pending = [field.annotation for field in model.model_fields.values()]
    while pending:
        kind = pending.pop()
        pending += get_args(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in found:
            found |= sections(kind)
    return found


def described(field: FieldInfo) -> bool:
    """A description of its own, or a section whose docstring says what it is."""
    kind = field.annotation
    if isinstance(kind, type) and issubclass(kind, BaseModel) and (kind.__doc__ or "").strip():
        return True
    return bool((field.description or "").strip())


def test_every_config_field_says_what_it_means():
    names = {section.__name__ for section in sections()}
    assert {"ChatTeacherSection", "EvalFile", "LoraSection"} <= names  # nested ones reached
    undescribed = sorted(
        f"{section.__name__}.{name}"
        for section in sections()
        for name, field in section.model_fields.items()
        if not described(field)
    )
    assert undescribed == []


def accepted(check, *args) -> bool:
    try:
        check(*args)
    except ValueError:  # pydantic's ValidationError is one
        return False
    return True


@pytest.mark.parametrize("value", [-0.5, 0, 1e-9, 0.3, 1 - 1e-9, 1, 1.5])
def test_the_config_and_the_loss_accept_the_same_epsilon_and_imitation_coef(value):
    for field, settings in (("epsilon", (value, 1.0)), ("imitation_coef", (0.3, value))):
        config = accepted(PipelineConfig.model_validate, {"train_policy": {field: value}})
        assert config == accepted(check_loss_settings, *settings), (field, value)
