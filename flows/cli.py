"""The `rlmec` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flows.environment import configure_environment
from flows.prefect_server import start_temporary_server, wait_until_ready
from rlmec_core.config import STAGES, VARIANTS

if TYPE_CHECKING:
    from storage.manifest import Production


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlmec",
        description=(
            "RLMEC: fine-grained RL for LLM reasoning with a minimum-edit generative reward "
            "model, as a Prefect pipeline tracked in MLflow."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the pipeline (cached stages are reused)",
        description=(
            "Run the pipeline stages in order: " + " → ".join(STAGES) + ". Stages whose "
            "config, inputs and code are unchanged are taken from the cache. Ends with one "
            "line per stage: its name, ran/cached/..., its artifact id and wall time."
        ),
    )
    run.add_argument(
        "--config", default="configs/tiny.yaml", help="YAML config (default: %(default)s)"
    )
    run.add_argument("--until", choices=STAGES, help="stop after this stage")
    run.add_argument(
        "--force", choices=STAGES, help="re-run this stage and those after it even if cached"
    )
    run.add_argument(
        "--workspace",
        default="workspace",
        help="artifacts, tracking and caches (default: %(default)s)",
    )
    run.add_argument("--json", action="store_true", help="print the stage table as JSON")

    lineage = sub.add_parser(
        "lineage",
        help="show where an artifact came from",
        description=(
            "Print an artifact's ancestry back to the raw data: for each artifact its stage, "
            "kind, config hash, code fingerprint, Prefect flow/task run ids and MLflow run id."
        ),
    )
    lineage.add_argument("artifact_id", help="an artifact id (a unique prefix is enough)")
    lineage.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    ablate = sub.add_parser(
        "ablate",
        help="train every policy variant over several seeds and compare accuracy",
        description=(
            "Run the shared stages once (cached), then train_policy and evaluate for each "
            f"variant ({', '.join(VARIANTS)}) and seed on the same annotated data, and print "
            "each variant's accuracy pooled over seeds with its 95% CI and its paired "
            "difference to the initial policy and to rlmec."
        ),
    )
    ablate.add_argument("--config", default="configs/tiny.yaml", help="(default: %(default)s)")
    ablate.add_argument("--seeds", type=int, default=3, help="seeds per variant (default: 3)")
    ablate.add_argument("--variants", nargs="+", choices=VARIANTS)
    ablate.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    ablate.add_argument(
        "--json",
        action="store_true",
        help="print the summary (with each variant and seed's policy artifact id) as JSON",
    )

    tune = sub.add_parser(
        "tune",
        help="choose each variant's learning rate from a small grid on the dev split",
        description=(
            "Run the shared stages once (cached), then train every variant at every learning "
            "rate of the grid (one seed, same data and steps) and evaluate on the dev split, "
            "never on test. Prints dev accuracy with 95%% CIs and the config line "
            "train_policy.variant_learning_rates holding each variant's best rate."
        ),
    )
    tune.add_argument("--config", default="configs/tiny.yaml", help="(default: %(default)s)")
    tune.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        metavar="LR",
        help="the grid (default: 1e-4 3e-4 1e-3)",
    )
    tune.add_argument("--variants", nargs="+", choices=VARIANTS)
    tune.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    tune.add_argument("--json", action="store_true", help="print the summary as JSON")

    serve = sub.add_parser(
        "serve",
        help="serve the pipeline on a schedule from this process",
        description=(
            "Register a deployment of the pipeline with the Prefect API (PREFECT_API_URL, or "
            "the embedded server) and run it on a cron schedule from this single process, "
            "until interrupted. Runs can also be triggered through the API or UI."
        ),
    )
    serve.add_argument("--config", default="configs/tiny.yaml", help="(default: %(default)s)")
    serve.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    serve.add_argument("--cron", default="0 2 * * *", help="schedule (default: %(default)r, UTC)")
    serve.add_argument(
        "--name", default="rlmec-served", help="deployment name (default: %(default)s)"
    )

    report = sub.add_parser(
        "report",
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
    report.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    report.add_argument("--out", help="output file (default: <workspace>/reports/<run id>.html)")

    runs = sub.add_parser(
        "runs",
        help="list pipeline runs and each stage's status",
        description=(
            "List the pipeline runs of a workspace, oldest first: run status, MLflow and "
            "Prefect run ids, and for each stage ran, cached, failed, skipped or not reached."
        ),
    )
    runs.add_argument("--workspace", default="workspace", help="(default: %(default)s)")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_ablate(args: argparse.Namespace) -> int:
    configure_environment(args.workspace)
    server = start_temporary_server()  # boots on the other core while the flow is imported
    from flows.ablation import rlmec_ablation
    from rlmec_core.config import ConfigError, load_config

    if args.seeds < 1:
        print("rlmec: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 2
    wait_until_ready(server)
    result = rlmec_ablation(
        config_path=args.config, workspace=args.workspace, seeds=args.seeds, variants=args.variants
    )
    if args.json:
        keys = ("artifact", "summary", "runs", "stages")
        print(json.dumps({k: result[k] for k in keys}, indent=2))
        return 0
    print()
    _print_stage_table(result["stages"])
    print()
    print(result["markdown"])
    print(f"ablation artifact: {result['artifact']}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    configure_environment(args.workspace)
    server = start_temporary_server()  # boots on the other core while the flow is imported
    from flows.tuning import rlmec_tuning
    from rlmec_core.config import ConfigError, load_config

    if args.learning_rates and not all(0 < lr < float("inf") for lr in args.learning_rates):
        print("rlmec: --learning-rates must be positive finite numbers", file=sys.stderr)
        return 2
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 2
    wait_until_ready(server)
    result = rlmec_tuning(
        config_path=args.config,
        workspace=args.workspace,
        learning_rates=args.learning_rates,
        variants=args.variants,
    )
    if args.json:
        print(json.dumps({k: result[k] for k in ("artifact", "chosen", "summary")}, indent=2))
        return 0
    print()
    print(result["markdown"])
    print(f"tuning artifact: {result['artifact']}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    configure_environment(args.workspace)
    from flows.pipeline import rlmec_pipeline
    from rlmec_core.config import ConfigError, load_config

    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 2
    # Absolute paths: the served runs must not depend on the server's working directory.
    rlmec_pipeline.serve(
        name=args.name,
        cron=args.cron,
        parameters={
            "config_path": str(Path(args.config).resolve()),
            "workspace": str(Path(args.workspace).resolve()),
        },
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    configure_environment(args.workspace)
    from report import write_report

    try:
        path = write_report(args.workspace, args.run_id, args.out)
    except ValueError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {path}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from flows.run_records import load_run_records

    records = load_run_records(args.workspace)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"no pipeline runs in {args.workspace}")
    for record in records:
        print(
            f"{record.get('started_at', '?')}  {record['status']:<11} mlflow {record['mlflow_run_id']}"
            f"  prefect {record['prefect_flow_run_id']}  {record['config_path']}"
        )
        for stage in record["stages"]:
            artifact = stage.get("artifact") or ""
            print(f"    {stage['stage']:<36} {stage['status']:<16} {artifact}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    configure_environment(args.workspace)
    from rlmec_core.config import ConfigError, load_config

    try:
        load_config(args.config)  # fail fast, before Prefect starts, with the field's path
    except ConfigError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 2
    server = start_temporary_server()  # boots on the other core while the flow is imported
    from flows.pipeline import rlmec_pipeline  # after the environment is set
    from tasks.stage import StageError

    wait_until_ready(server)
    try:
        reports = rlmec_pipeline(
            config_path=args.config, workspace=args.workspace, until=args.until, force=args.force
        )
    except StageError as exc:
        print(f"\nrlmec: {exc}", file=sys.stderr)
        print(
            f"rlmec: see `rlmec runs --workspace {args.workspace}` for every stage's status",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    print()
    _print_stage_table(reports)
    evaluation = next((r for r in reports if r["stage"] == "evaluate" and r["artifact"]), None)
    if evaluation:
        from storage.store import ArtifactStore

        table = ArtifactStore(args.workspace).path(evaluation["artifact"]) / "results.md"
        print(f"\nEvaluation (greedy accuracy, %):\n{table.read_text(encoding='utf-8')}")
    return 0


def _print_stage_table(reports: list[dict]) -> None:
    width = max(13, *(len(r["stage"]) + 1 for r in reports))
    for report in reports:
        artifact = report["artifact"] or "-"
        seconds = f"{report['seconds']:.1f}s" if report["status"] in ("ran", "cached") else ""
        print(f"{report['stage']:<{width}} {report['status']:<16} {artifact:<22} {seconds}")


def _cmd_lineage(args: argparse.Namespace) -> int:
    from storage.store import ArtifactNotFoundError, ArtifactStore

    store = ArtifactStore(args.workspace)
    try:
        chain = store.lineage(store.resolve(args.artifact_id))
    except ArtifactNotFoundError as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 1
    productions = {m.id: store.productions(m.id) for m in chain}
    if args.json:
        records = [
            {**m.to_json(), "productions": [p.to_json() for p in productions[m.id]]} for m in chain
        ]
        print(json.dumps(records, indent=2))
        return 0
    for m in chain:
        made = productions[m.id]
        print(f"{m.id}  {m.stage} ({m.kind})  created {m.created_at}, productions: {len(made)}")
        for number, production in enumerate(made, start=1):
            _print_production(number, len(made), production)
        for source in m.extra.get("summary", {}).get("sources", []):
            print(f"    source:               {json.dumps(source, sort_keys=True)}")
    return 0


def _print_production(number: int, total: int, p: Production) -> None:
    origin = "  (origin: the manifest's)" if number == 1 else ""
    print(f"    production {number}/{total}, created {p.created_at}{origin}")
    print(f"        parents:          {', '.join(p.parents) or '(raw data)'}")
    print(f"        config hash:      {p.config_hash}")
    print(f"        code fingerprint: {p.code_fingerprint}")
    print(
        f"        prefect:          flow run {p.prefect_flow_run_id}, task run {p.prefect_task_run_id}"
    )
    print(f"        mlflow run:       {p.mlflow_run_id}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "run": _cmd_run,
        "ablate": _cmd_ablate,
        "tune": _cmd_tune,
        "lineage": _cmd_lineage,
        "runs": _cmd_runs,
        "serve": _cmd_serve,
        "report": _cmd_report,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
