"""Generation on an OpenAI-compatible completions server (generation.backend: openai).

Against a real loopback server (tests/completions_server.py) that decodes with the same
tiny HF model: in this process for fault injection and concurrency, and started by a
``generation.launch`` command like a real ``vllm serve``.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlmec_core.collect import collect_samples
from rlmec_core.config import CollectSection, GenerationSection, PipelineConfig
from rlmec_core.data.io import load_parquet
from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.generation import generate_solutions
from rlmec_core.generation_server import (
    GenerationServerError,
    ServedModel,
    launch_argv,
    open_generator,
    request_seed,
    require_launch,
    served_endpoint,
)
from rlmec_core.grm import greedy_continuations
from rlmec_core.modeling import load_policy
from rlmec_core.policy_prompt import format_policy_prompt
from storage.store import ArtifactStore
from tasks.config_reads import stage_hash
from tasks.models import model_dir
from tests.chat_model import IM_END, save_chat_model
from tests.completions_server import CompletionsServer
from tests.pipeline_helpers import REPO, run_in_process, stage_table
from tests.random_policy import random_policy
from tests.teacher_server import TRANSIENT_FAULTS, Fault

KEY_ENV = "RLMEC_TEST_GENERATION_KEY"
SECRET = "sk-gen-test-0123456789abcdefSECRET"
MAX_NEW = 24
LAUNCH = f"{sys.executable} -m tests.completions_server {{model_dir}} --port {{port}} "
LAUNCH += f"--served-model-name {{model}} --api-key-env {KEY_ENV}"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny random Llama saved as a model folder, and held-out prompts for it."""
    model, tokenizer, dev = random_policy(n_dev=8)
    # A larger EOS embedding makes some continuations stop at EOS, others run to the limit.
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.eos_token_id] *= 2.0
    path = tmp_path_factory.mktemp("policy") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, dev


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    # The launched server runs `-m tests.completions_server` from wherever the stage runs.
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.fixture
def make_server(policy_dir):
    servers: list[CompletionsServer] = []

    def make(**kwargs) -> CompletionsServer:
        kwargs.setdefault("expected_api_key", SECRET)
        kwargs.setdefault("served_model_name", "tiny")
        server = CompletionsServer(policy_dir[0], **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def settings(**fields) -> GenerationSection:
    values = dict(backend="openai", api_key_env=KEY_ENV, timeout_s=5.0, max_retries=3)
    values.update(fields)
    return GenerationSection(**values)


def fixed(server: CompletionsServer, **fields) -> GenerationSection:
    return settings(base_url=server.base_url, model=server.model, **fields)


def fast_backoff(served: ServedModel) -> ServedModel:
    served.endpoint.backoff_base_s = 0.001
    served.endpoint.backoff_cap_s = 0.01
    return served


def enter_and_leave(context, *args, **kwargs) -> None:
    with context(*args, **kwargs):
        pass


def prompts_of(dev) -> list[str]:
    return [format_policy_prompt(q) for q in dev["question"]]


# --- exactly the hf path's outputs ------------------------------------------------------


def test_greedy_through_the_server_equals_hf(policy_dir, make_server):
    path, dev = policy_dir
    model, tokenizer = load_policy(path)
    prompts = prompts_of(dev)
    greedy = dict(num_return_sequences=1, temperature=0.0, top_p=1.0, max_new_tokens=MAX_NEW)
    hf = generate_solutions(model, tokenizer, prompts, batch_size=4, seed=0, **greedy)
    server = make_server()
    with open_generator(fixed(server), path) as (served, served_tokenizer):
        assert isinstance(served, ServedModel)
        through = generate_solutions(
            served, served_tokenizer, prompts, batch_size=4, seed=0, **greedy
        )
        assert through.texts == hf.texts
        assert through.n_generated_tokens == hf.n_generated_tokens

        # The GRM's path: prompts as ids, here with a response-side suffix appended.
        ids = [
            tokenizer(p)["input_ids"] + tokenizer("He", add_special_tokens=False)["input_ids"]
            for p in prompts
        ]
        args = dict(max_new_tokens=MAX_NEW, batch_size=3, progress=False)
        assert greedy_continuations(served, tokenizer, ids, **args) == greedy_continuations(
            model, tokenizer, ids, **args
        )
        timing = {"seconds": 0.0, "tokens_per_second": 0.0}
        accuracy = dict(batch_size=4, max_new_tokens=MAX_NEW)
        served_accuracy = greedy_accuracy(served, tokenizer, dev, **accuracy) | timing
        assert served_accuracy == greedy_accuracy(model, tokenizer, dev, **accuracy) | timing

    assert len({t[0] for t in hf.texts}) > 1  # not vacuous: outputs differ by prompt
    first = server.requests[: len(prompts)]
    # Token ids went out, tokenised as the hf path does (special tokens included).
    sent = sorted(r.body["prompt"] for r in first)  # in arrival order: sort both
    assert sent == sorted(tokenizer(p)["input_ids"] for p in prompts)
    assert all(r.body["temperature"] == 0 and "seed" not in r.body for r in first)
    assert all(r.body["max_tokens"] == MAX_NEW and r.body["n"] == 1 for r in first)
    # Some completions stopped at EOS, others ran to max_tokens: both were cut alike.
    lengths = [len(tokenizer(t[0], add_special_tokens=False)["input_ids"]) for t in hf.texts]
    assert min(lengths) < MAX_NEW // 2 and max(lengths) >= MAX_NEW - 4


def test_text_is_cut_at_an_eos_the_server_leaves_in(policy_dir, make_server):
    path, _ = policy_dir
    server = make_server()
    with open_generator(fixed(server), path) as (served, tokenizer):
        eos = tokenizer.eos_token
        assert served.eos_texts == (eos,)
        assert served._cut_at_eos(f"The answer is 3{eos}junk{eos}") == "The answer is 3"
        assert served._cut_at_eos("no eos here") == "no eos here"


def test_chat_models_stop_at_end_of_turn_as_on_the_hf_path(policy_dir, tmp_path):
    """load_policy also stops at a chat template's end-of-turn token; a server knows only the
    folder's EOS, so the request names the extra stop token."""
    _, dev = policy_dir
    path = save_chat_model(tmp_path / "chat", [format_policy_prompt(q) for q in dev["question"]])
    raw = AutoModelForCausalLM.from_pretrained(path)
    end = AutoTokenizer.from_pretrained(path).convert_tokens_to_ids(IM_END)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for param in raw.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        raw.get_input_embeddings().weight[end] *= 2.0
    raw.save_pretrained(path)  # generation_config.json: the tokenizer's EOS only
    model, tokenizer = load_policy(path)
    assert end in model.generation_config.eos_token_id
    prompts = prompts_of(dev)
    greedy = dict(num_return_sequences=1, temperature=0.0, top_p=1.0, max_new_tokens=MAX_NEW)
    hf = generate_solutions(model, tokenizer, prompts, batch_size=4, seed=0, **greedy)
    server = CompletionsServer(path, served_model_name="chat", expected_api_key=SECRET)
    with server, open_generator(fixed(server), path) as (served, served_tokenizer):
        assert served.stop_token_ids == [end]
        through = generate_solutions(
            served, served_tokenizer, prompts, batch_size=4, seed=0, **greedy
        )
        unaware = ServedModel(served.endpoint, served.eos_texts)  # no stop_token_ids
        past_end = generate_solutions(
            unaware, served_tokenizer, prompts, batch_size=4, seed=0, **greedy
        )
    assert through.texts == hf.texts
    assert past_end.texts != hf.texts  # not vacuous: some completion stopped at <|im_end|>
    assert server.requests[0].body["stop_token_ids"] == [end]


def test_sampling_returns_n_seeded_completions_per_prompt(policy_dir, make_server):
    path, dev = policy_dir
    problems = [dict(row) for row in dev]
    server = make_server()
    sample = CollectSection(k=3, temperature=0.9, top_p=0.95, max_new_tokens=12, batch_size=4)
    with open_generator(fixed(server), path) as (served, tokenizer):
        rows, metrics = collect_samples(served, tokenizer, problems, sample, seed=7, progress=False)
        again, _ = collect_samples(served, tokenizer, problems, sample, seed=7, progress=False)
        raw = served.complete(
            [tokenizer("Q: 1+1?")["input_ids"]],
            n=3,
            temperature=1.5,
            top_p=1.0,
            max_tokens=12,
            seed=7,
        )
    requests = sorted((r.body for r in server.requests[: len(problems)]), key=lambda b: b["seed"])
    assert [r["n"] for r in requests] == [3] * len(problems)
    assert [r["seed"] for r in requests] == sorted(request_seed(7, i) for i in range(len(problems)))
    assert len(set(r["seed"] for r in requests)) == len(problems)
    assert all(r["temperature"] == 0.9 and r["top_p"] == 0.95 for r in requests)
    assert len(raw[0]) == 1 and len(raw[0][0]) == 3 and len(set(raw[0][0])) > 1
    # n samples per problem, duplicates dropped as on the hf path; seeded, so repeatable.
    assert metrics["n_samples"] + metrics["duplicates_dropped"] == 3 * len(problems)
    assert list(rows["prediction"]) == list(again["prediction"])
    assert metrics["generated_tokens"] > 0


# --- retries, backoff, concurrency ------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_each_fault_is_retried_and_recovers(policy_dir, make_server, fault):
    path, dev = policy_dir
    server = make_server()
    ids = [[1, 5, 9]]
    with open_generator(fixed(server, timeout_s=0.5), path) as (served, _):
        fast_backoff(served)
        expected = served.complete(ids, n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=None)
        server.script_faults([fault, fault])
        got = served.complete(ids, n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=None)
    assert got == expected
    assert server.request_count == 1 + 3


def test_retry_after_is_a_floor(policy_dir, make_server):
    path, _ = policy_dir
    server = make_server()
    with open_generator(fixed(server), path) as (served, _):
        fast_backoff(served)
        server.script_faults([Fault.http(429, retry_after=0.3)])
        start = time.monotonic()
        served.complete([[1, 2]], n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=None)
    assert time.monotonic() - start >= 0.3


def test_persistent_outage_and_refusals_raise(policy_dir, make_server):
    path, _ = policy_dir
    server = make_server()
    call = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=None)
    with open_generator(fixed(server, max_retries=2), path) as (served, _):
        fast_backoff(served)
        server.script_faults([Fault.http(503)] * 3)
        with pytest.raises(GenerationServerError, match="after 3 attempts: HTTP 503"):
            served.complete([[1, 2]], **call)
        assert server.request_count == 3  # GET /models is not recorded; POSTs are

        server.script_faults([Fault.http(400)])
        with pytest.raises(GenerationServerError, match="HTTP 400.*scripted HTTP 400"):
            served.complete([[1, 2]], **call)
        assert server.request_count == 3 + 1  # not retried


def test_concurrency_is_bounded_and_order_kept(policy_dir, make_server):
    path, _ = policy_dir
    server = make_server(latency_s=0.1)
    ids = [[1, 2 + i] for i in range(9)]
    call = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=6, seed=None)
    with open_generator(fixed(server, concurrency=3), path) as (served, _):
        together = served.complete(ids, **call)
        one_by_one = [served.complete([i], **call)[0][0] for i in ids]
    assert server.max_in_flight == 3
    assert together[0] == one_by_one


# --- the key ----------------------------------------------------------------------------


def test_key_is_read_from_the_named_variable_and_never_leaks(
    policy_dir, make_server, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    path, _ = policy_dir
    server = make_server()
    call = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=None)
    with open_generator(fixed(server), path) as (served, _):
        fast_backoff(served)
        server.script_faults([Fault.http(500), Fault.garbage()])
        served.complete([[1, 2]], **call)
        server.script_faults([Fault.http(400, message=f"bad request with key {SECRET}")])
        with pytest.raises(GenerationServerError, match="bad request with key") as caught:
            served.complete([[1, 2]], **call)
        shown = [repr(served), str(caught.value), repr(caught.value)]
        with pytest.raises(TypeError):
            pickle.dumps(served.endpoint)
    assert server.requests[0].authorization == f"Bearer {SECRET}"
    assert caplog.records, "the retries should have been logged"
    assert not any(SECRET in text for text in [*shown, caplog.text])
    assert caught.value.__cause__ is None

    monkeypatch.setenv(KEY_ENV, SECRET + "-wrong")  # the server echoes the bad key back
    with pytest.raises(GenerationServerError, match=f"HTTP 401.*{KEY_ENV}") as refused:
        enter_and_leave(open_generator, fixed(server), path)
    assert SECRET not in str(refused.value)

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(GenerationServerError, match=KEY_ENV):
        enter_and_leave(open_generator, fixed(server), path)


def test_a_fixed_server_must_serve_the_named_model(policy_dir, make_server):
    path, _ = policy_dir
    server = make_server()
    with pytest.raises(GenerationServerError, match="does not serve model 'other'.*'tiny'"):
        enter_and_leave(open_generator, settings(base_url=server.base_url, model="other"), path)


# --- launch -----------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_launch_serves_the_model_folder_and_stops_it(policy_dir):
    path, dev = policy_dir
    model, tokenizer = load_policy(path)
    prompts = prompts_of(dev)[:4]
    greedy = dict(num_return_sequences=1, temperature=0.0, top_p=1.0, max_new_tokens=MAX_NEW)
    hf = generate_solutions(model, tokenizer, prompts, batch_size=4, seed=0, **greedy)
    launched = settings(base_url="http://127.0.0.1:{port}/v1", launch=LAUNCH)
    start = time.monotonic()
    with open_generator(launched, path, stage="evaluate") as (served, served_tokenizer):
        up_s = time.monotonic() - start
        endpoint = served.endpoint
        port = int(endpoint.base_url.rsplit(":", 1)[1].split("/")[0])
        assert endpoint.model == str(path.resolve())  # model defaults to the folder's path
        through = generate_solutions(
            served, served_tokenizer, prompts, batch_size=4, seed=0, **greedy
        )
        assert _port_open(port)
    assert through.texts == hf.texts
    assert not _port_open(port), "the launched server was not stopped"
    print(f"launched test server up in {up_s:.1f}s")


def test_launch_failure_reports_the_servers_output(policy_dir, tmp_path):
    path, _ = policy_dir
    broken = settings(
        base_url="http://127.0.0.1:{port}/v1",
        launch=f"{sys.executable} -c 'import sys; print(\"boom {{port}}\"); sys.exit(3)' "
        "{model_dir}",
    )
    with pytest.raises(GenerationServerError, match=r"exited with code 3(.|\n)*boom \d+"):
        enter_and_leave(open_generator, broken, path)
    missing = settings(
        base_url="http://127.0.0.1:{port}/v1", launch="/nonexistent/server {model_dir} {port}"
    )
    with pytest.raises(GenerationServerError, match="cannot start"):
        enter_and_leave(open_generator, missing, path)


def test_launch_argv_fills_placeholders_without_a_shell(tmp_path):
    folder = tmp_path / "my model"
    argv = launch_argv(
        "vllm serve {model_dir} --port {port} --served-model-name {model} "
        "--override-generation-config '{\"top_k\": -1}' --python {python}",
        model_dir=folder,
        port=8123,
        model="m",
    )
    assert argv == [
        "vllm",
        "serve",
        str(folder),
        "--port",
        "8123",
        "--served-model-name",
        "m",
        "--override-generation-config",
        '{"top_k": -1}',
        "--python",
        sys.executable,
    ]


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "needs base_url"),
        ({"base_url": "http://h:1/v1"}, "model must name"),
        ({"base_url": "http://h:{port}/v1", "model": "m"}, "only launch fills in"),
        ({"base_url": "http://h:{prt}/v1", "model": "m"}, "unknown placeholder"),
        ({"base_url": "http://h:{port}/v1", "launch": "serve --port {port}"}, "{model_dir}"),
        ({"base_url": "http://h:{port}/v1", "launch": "serve {model_dir}"}, "pass {port}"),
        ({"base_url": "http://h:1/v1", "launch": "serve '{model_dir}"}, "valid command"),
        ({"base_url": "http://h:1/v1", "launch": "  "}, "launch is empty"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        GenerationSection(backend="openai", **fields)


def test_defaults_and_cache_keys():
    base = PipelineConfig()
    assert base.generation.backend == "hf" and base.generation.concurrency == 8
    served = base.model_copy(
        update={"generation": settings(base_url="http://h:{port}/v1", launch=LAUNCH)}
    )
    tuned = served.model_copy(
        update={"generation": served.generation.model_copy(update={"concurrency": 64})}
    )
    for stage in ("collect", "train_grm", "annotate", "evaluate"):
        assert stage_hash(base, stage) != stage_hash(served, stage), stage
        assert stage_hash(served, stage) == stage_hash(tuned, stage), stage  # operational
    for stage in ("data", "bootstrap", "distill", "train_policy"):
        assert stage_hash(base, stage) == stage_hash(served, stage), stage
    # With hf, the server fields mean nothing and change no cache.
    hf_with_url = base.model_copy(
        update={"generation": GenerationSection(base_url="http://h:1/v1", concurrency=2)}
    )
    assert stage_hash(hf_with_url, "collect") == stage_hash(base, "collect")


def test_stages_that_generate_with_trained_models_need_launch(policy_dir):
    fixed_server = settings(base_url="http://127.0.0.1:1/v1", model="m")
    with pytest.raises(GenerationServerError, match="train_grm.*generation.launch"):
        require_launch(fixed_server, "train_grm")
    with pytest.raises(GenerationServerError, match="evaluate"):
        enter_and_leave(open_generator, fixed_server, policy_dir[0], stage="evaluate")
    require_launch(GenerationSection(), "evaluate")  # hf: nothing to launch
    require_launch(settings(base_url="http://h:{port}/v1", launch=LAUNCH), "annotate")


def test_served_endpoint_refuses_the_hf_backend(policy_dir):
    with pytest.raises(ValueError, match="backend openai"):
        enter_and_leave(served_endpoint, GenerationSection(), policy_dir[0])


# --- the pipeline -----------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_micro_pipeline_end_to_end_on_launched_servers_with_lora(tmp_path):
    """Every stage of configs/micro.yaml with generation on servers the stages launch, and
    the policy trained as LoRA adapters (merged into its artifact)."""
    record = tmp_path / "requests.jsonl"
    raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text())
    for eval_file in raw["data"]["eval_files"]:
        eval_file["path"] = str((REPO / "configs" / eval_file["path"]).resolve())
    raw["generation"] = {
        "backend": "openai",
        "base_url": "http://127.0.0.1:{port}/v1",
        "launch": f"{LAUNCH} --record {record}",
        "api_key_env": KEY_ENV,
        "concurrency": 4,
    }
    # The policy trains LoRA adapters. The GRM stays fully fine-tuned: micro's LoRA GRM
    # (tried: r 4 and 16, lr up to 1e-2, 20 epochs) rewrites no held-out sample whose
    # equations all hold, so annotate would keep nothing (test_lora covers a LoRA GRM).
    lora = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"}
    raw["train_policy"]["lora"] = lora
    # The GRM's verdict read off its likelihoods in this process, its rewrites on a server.
    raw["train_grm"]["error_step"] = "likelihood"
    config = tmp_path / "micro-openai.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = tmp_path / "ws"

    start = time.monotonic()
    result = run_in_process("run", "--config", str(config), "--workspace", str(workspace), "--json")
    table = stage_table(result)
    stages = ", ".join(f"{name} {report['seconds']:.1f}s" for name, report in table.items())
    print(f"micro pipeline on launched servers: {time.monotonic() - start:.1f}s ({stages})")
    assert all(report["status"] == "ran" for report in table.values()), table
    assert not _processes_mentioning(str(record)), "a launched server outlived its stage"

    # What the servers were asked: collect sampled k per problem with a seed each; the
    # GRM (train_grm's held-out check, then annotate) and both policies decoded greedily.
    requests = [json.loads(line) for line in record.read_text().splitlines()]
    store = ArtifactStore(workspace)
    initial = str(model_dir(store.path(table["bootstrap"]["artifact"])))
    grm = str(model_dir(store.path(table["train_grm"]["artifact"])))
    trained = str(model_dir(store.path(table["train_policy"]["artifact"])))
    sampled = [r for r in requests if r["temperature"] > 0]
    assert len(sampled) == raw["collect"]["max_problems"]
    assert {r["model"] for r in sampled} == {initial}
    assert {r["n"] for r in sampled} == {raw["collect"]["k"]}
    assert len({r["seed"] for r in sampled}) == len(sampled)
    greedy = [r for r in requests if r["temperature"] == 0]
    assert all(r["n"] == 1 and r["seed"] is None for r in greedy)
    served = {r["model"] for r in greedy}
    assert {initial, grm, trained} <= served  # + train_grm's GRM, served from staging
    assert len(served) == 4
    # annotate asked the GRM's server for rewrites only: one per incorrect sample whose
    # likelihood verdict names a step it has, no verdict.
    annotated = store.manifest(table["annotate"]["artifact"]).extra["metrics"]
    no_rewrite = sum(
        annotated[f"n_grm_miss_{reason}"]
        for reason in ("unparsed", "judged_correct", "step_out_of_range")
    )
    assert annotated["n_grm_judged"] > 0
    assert sum(r["model"] == grm for r in greedy) == annotated["n_grm_judged"] - no_rewrite

    # Evaluate's greedy answers are the hf backend's, token for token.
    data = store.path(table["data"]["artifact"])
    model, tokenizer = load_policy(initial)
    predictions = json.loads(
        (store.path(table["evaluate"]["artifact"]) / "predictions.json").read_text()
    )
    for row in predictions:
        if row["policy"] != "initial":
            continue
        records = list(load_parquet(data / "test.parquet"))
        if row["eval_set"] != "synthetic_test":
            records = list(load_parquet(data / "eval" / f"{row['eval_set']}.parquet"))
        hf = greedy_accuracy(
            model,
            tokenizer,
            records,
            batch_size=raw["evaluate"]["batch_size"],
            max_new_tokens=raw["evaluate"]["max_new_tokens"],
        )
        assert [p["prediction"] for p in row["predictions"]] == [
            p["prediction"] for p in hf["predictions"]
        ], row["eval_set"]

    # The policy is a merged LoRA model, and its lineage says so.
    policy = table["train_policy"]["artifact"]
    assert not any("adapter" in p.name for p in store.path(policy).rglob("*"))
    summary = store.manifest(policy).extra["summary"]
    assert summary["lora"] == lora and summary["base"] == table["bootstrap"]["artifact"]

    # The key went to the servers but reached no output and no file of the workspace.
    assert SECRET not in result.stdout + result.stderr
    for path in workspace.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
