"""The initial policy's own variance: bootstrap trained from several seeds on the same data.

    python benchmarks/bootstrap_seeds.py --workspace ws-figures            # tiny, seeds 0 1 2
    python benchmarks/bootstrap_seeds.py --workspace ws --seeds 0 1 2 3 --config configs/tiny.yaml

The ablation's CIs pool policy-training seeds over one bootstrap, so they do not include
how far another bootstrap seed would move the initial policy. This script takes the data
artifact of the workspace's last run (``rlmec run --until data`` makes one if there is
none), trains the profile's bootstrap once per seed exactly as the stage does
(``bootstrap_policy``: the seed sets the tiny model's initialisation and the data order),
and evaluates each policy greedily on the synthetic test split. It prints each seed's dev
and test accuracy with 95% CIs, each seed's paired difference to the first seed on the same
test problems, the spread, and whether the first seed's weights are the workspace's own
bootstrap artifact's, byte for byte (bootstrap's determinism on this machine).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlmec_core.bootstrap import bootstrap_policy  # noqa: E402
from rlmec_core.config import load_config  # noqa: E402
from rlmec_core.data.io import load_parquet  # noqa: E402
from rlmec_core.eval_table import evaluate_policies  # noqa: E402
from rlmec_core.modeling import load_policy  # noqa: E402
from rlmec_core.statistics import accuracy_interval, paired_difference  # noqa: E402
from storage.run_records import load_run_records  # noqa: E402
from storage.store import ArtifactStore  # noqa: E402


def _artifacts(workspace: Path) -> dict[str, str]:
    records = load_run_records(workspace)
    return (
        {s["stage"]: s["artifact"] for s in records[-1]["stages"] if s.get("artifact")}
        if records
        else {}
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pct(estimate, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    value, low, high = (fmt.format(100 * x) for x in (estimate.value, estimate.low, estimate.high))
    return f"{value} [{low}, {high}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    config = load_config(args.config)
    if config.bootstrap.model_path is not None:
        raise SystemExit(
            f"{args.config}: bootstrap.model_path is set; this measures the tiny model"
        )
    artifacts = _artifacts(args.workspace)
    if "data" not in artifacts:
        command = [sys.executable, "-m", "flows.cli", "run", "--config", str(args.config)]
        subprocess.run(
            [*command, "--workspace", str(args.workspace), "--until", "data"], check=True
        )
        artifacts = _artifacts(args.workspace)
    store = ArtifactStore(args.workspace)
    data = store.path(artifacts["data"])
    splits = {s: load_parquet(data / f"{s}.parquet") for s in ("train", "dev", "test")}
    out = args.workspace / "scratch" / "bootstrap-seeds"
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        folder = out / f"seed-{seed}"
        metrics = bootstrap_policy(
            splits,
            folder / "model",
            config.bootstrap,
            seed=seed,
            checkpoint_dir=folder / "checkpoints",
            prompt_format=config.prompts.format,
        )
        model, tokenizer = load_policy(folder / "model")
        (test,) = evaluate_policies(
            {f"seed {seed}": (model, tokenizer)},
            {"synthetic_test": list(splits["test"])},
            batch_size=config.evaluate.batch_size,
            max_new_tokens=config.evaluate.max_new_tokens,
            prompt_format=config.prompts.format,
        )
        # bootstrap reports dev's count only; an interval over problems needs no more.
        dev_n = metrics["dev_n"]
        dev_outcomes = [True] * round(metrics["dev_accuracy"] * dev_n)
        dev_outcomes += [False] * (dev_n - len(dev_outcomes))
        rows.append(
            {
                "seed": seed,
                "dev": accuracy_interval(dev_outcomes),
                "test": accuracy_interval(test["outcomes"]),
                "outcomes": test["outcomes"],
                "sha256": _sha256(folder / "model" / "model.safetensors"),
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"seed {seed}: test {100 * test['accuracy']:.1f}% ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    first = rows[0]
    print(f"\n{args.config.name}, bootstrap on data artifact {artifacts['data']}")
    print(
        f"| seed | dev % [95% CI] | test % [95% CI] | Δ test vs seed {first['seed']} [95% CI] | weights sha256 | seconds |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        delta = (
            "–"
            if row is first
            else _pct(paired_difference(row["outcomes"], first["outcomes"]), True)
        )
        print(
            f"| {row['seed']} | {_pct(row['dev'])} | {_pct(row['test'])} | {delta} "
            f"| {row['sha256'][:12]} | {row['seconds']:.0f} |"
        )
    tests = [100 * r["test"].value for r in rows]
    if len(tests) > 1:
        print(
            f"\ntest accuracy over {len(tests)} seeds: mean {statistics.mean(tests):.1f}, "
            f"sd {statistics.stdev(tests):.1f}, range {max(tests) - min(tests):.1f} points"
        )
    if "bootstrap" in artifacts:
        own = store.path(artifacts["bootstrap"]) / "model" / "model.safetensors"
        matches = [r["seed"] for r in rows if r["sha256"] == _sha256(own)]
        print(
            f"the workspace's bootstrap artifact {artifacts['bootstrap']} (run.seed "
            f"{config.run.seed}): {'same weights as seed ' + str(matches[0]) if matches else 'same weights as no seed here'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
