"""Re-measure the README's headline figures from an empty workspace and print them beside
the README's, so the next change that moves them is caught.

    python benchmarks/readme_figures.py                      # configs/tiny.yaml, ~6 min here
    python benchmarks/readme_figures.py --profile smollm     # ~50 min (rlmec fetch-model first)

The README keeps each profile's figures in one block between ``<!-- figures:<profile> -->``
and ``<!-- /figures -->``, written as ``bootstrap dev accuracy 46.2%``, ``initial policy
55.8% [53.0, 58.7]`` and ``rlmec 55.6% (Δ −0.2 [−1.5, +1.0])`` (the synthetic test split).
The script runs ``rlmec run`` for that profile in a new workspace (nothing cached), reads
bootstrap's dev accuracy and the evaluation's results, and prints one row per figure:
README, now, and whether they agree to the printed digit. Exit status 1 when any differs.

The figures are exact for one set of torch's CPU kernels (torch picks them by the CPU's
widest vector extension), so a block names the ones it was measured with,
``ATEN_CPU_CAPABILITY=avx2``, and the run here uses those (a CPU without them falls back
to narrower ones: the kernels printed then say why the figures moved).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.store import ArtifactStore  # noqa: E402

NUMBER = r"([−+-]?\d+\.\d)"
EVAL_SET = "synthetic_test"


def readme_block(readme: str, profile: str) -> str:
    """The text between ``<!-- figures:<profile> -->`` and the next ``<!-- /figures -->``."""
    match = re.search(rf"<!-- figures:{re.escape(profile)} -->(.*?)<!-- /figures -->", readme, re.S)
    if not match:
        raise SystemExit(f"README.md: no '<!-- figures:{profile} -->' block")
    return match.group(1)


def readme_figures(block: str, variant: str) -> dict[str, str]:
    """Each headline figure as the README prints it (one decimal, the README's minus sign
    normalised to ``-``)."""
    patterns = {
        "bootstrap dev accuracy": rf"bootstrap dev accuracy {NUMBER}%",
        "initial policy": rf"initial policy {NUMBER}% \[{NUMBER}, {NUMBER}\]",
        variant: rf"\b{re.escape(variant)} {NUMBER}% \(Δ {NUMBER} \[{NUMBER}, {NUMBER}\]\)",
    }
    figures = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, " ".join(block.split()))
        if not match:
            raise SystemExit(f"README.md: the figures block has no {name!r} figure")
        figures[name] = _normalise(match.groups())
    return figures


def measured_figures(workspace: Path, stages: list[dict], variant: str) -> dict[str, str]:
    """The same figures, from a finished run's artifacts (``stages``: its run record's)."""
    store = ArtifactStore(workspace)
    artifact = {s["stage"]: s.get("artifact") for s in stages}
    dev = store.manifest(artifact["bootstrap"]).extra["metrics"]["dev_accuracy"]
    rows = json.loads((store.path(artifact["evaluate"]) / "results.json").read_text("utf-8"))
    row = {r["policy"]: r for r in rows if r["eval_set"] == EVAL_SET}
    initial, trained = row["initial"]["interval"], row[variant]["interval"]
    delta = row[variant]["vs_baseline"]
    pct = lambda *xs: tuple(f"{100 * x:.1f}" for x in xs)  # noqa: E731
    signed = lambda *xs: tuple(f"{100 * x:+.1f}" for x in xs)  # noqa: E731
    return {
        "bootstrap dev accuracy": _normalise(pct(dev)),
        "initial policy": _normalise(pct(initial["value"], initial["low"], initial["high"])),
        variant: _normalise(
            pct(trained["value"]) + signed(delta["value"], delta["low"], delta["high"])
        ),
    }


def cpu_name() -> str:
    """The CPU's model and its widest vector extension: the figures are exact on one CPU
    kind, not across kinds (float kernels differ), so a mismatch names where it ran."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or "unknown"
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    widest = next(
        (f for f in ("avx512f", "avx2", "avx") if flags and f in flags.group(1).split()), "no AVX"
    )
    return f"{model.group(1).strip() if model else 'unknown'} ({widest})"


def readme_kernels(block: str) -> str | None:
    """The torch CPU kernels a figures block was measured with (``ATEN_CPU_CAPABILITY=…``)."""
    match = re.search(r"ATEN_CPU_CAPABILITY=(\w+)", block)
    return match.group(1) if match else None


def torch_kernels(env: dict[str, str]) -> str:
    """The CPU kernels torch uses under ``env`` (``torch.backends.cpu``)."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _normalise(parts: tuple[str, ...]) -> str:
    return " ".join(p.replace("−", "-").lstrip("+") for p in parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny", help="configs/<profile>.yaml (default tiny)")
    parser.add_argument("--workspace", type=Path, help="default: a new temporary folder")
    args = parser.parse_args()
    config = ROOT / "configs" / f"{args.profile}.yaml"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    from rlmec_core.config import load_config

    variant = load_config(config).train_policy.variant
    block = readme_block(readme, args.profile)
    expected = readme_figures(block, variant)
    env = dict(os.environ)
    kernels = readme_kernels(block)
    if kernels is not None:
        env["ATEN_CPU_CAPABILITY"] = kernels
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix=f"figures-{args.profile}-"))
    if workspace.exists() and any(workspace.iterdir()):
        raise SystemExit(f"{workspace}: not empty (the figures are measured from nothing)")
    command = [sys.executable, "-m", "flows.cli", "run", "--config", str(config)]
    command += ["--workspace", str(workspace)]
    print("$", " ".join(command), flush=True)
    # Its log and table, as a user sees them.
    subprocess.run(command, cwd=ROOT, check=True, env=env)
    from storage.run_records import load_run_records

    stages = load_run_records(workspace)[-1]["stages"]
    now = measured_figures(workspace, stages, variant)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\n{args.profile}, commit {commit or '?'}, workspace {workspace}, CPU {cpu_name()}, "
        f"torch kernels {torch_kernels(env)} (README: {kernels or 'not named'})"
    )
    print(f"| figure | README | now ({EVAL_SET}; dev for bootstrap) | same |")
    print("|---|---|---|---|")
    for name, value in expected.items():
        print(f"| {name} | {value} | {now[name]} | {'yes' if value == now[name] else 'NO'} |")
    return 0 if expected == now else 1


if __name__ == "__main__":
    raise SystemExit(main())
