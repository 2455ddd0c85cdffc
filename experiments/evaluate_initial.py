"""Greedy accuracy of a workspace's initial policy (its bootstrap artifact) on the data
artifact's test split and eval files, as the evaluate stage computes it, without running
the pipeline (so without its code-fingerprinted cache: a changed checkout does not retrain).
usage: evaluate_initial.py CONFIG WORKSPACE [--split test|dev]

Prints one line per eval set: accuracy % with its 95% interval (problems resampled)."""

import argparse

from rlmec_core.config import load_config
from rlmec_core.eval_table import evaluate_policies
from rlmec_core.modeling import load_policy
from rlmec_core.statistics import accuracy_interval
from storage.store import ArtifactStore
from tasks.evaluate import eval_sets
from tasks.models import model_dir

parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("workspace")
parser.add_argument("--split", choices=("dev", "test"), default="test")
args = parser.parse_args()

config = load_config(args.config)
store = ArtifactStore(args.workspace)
latest = {}  # stage -> its newest artifact in the workspace
for manifest in sorted(map(store.manifest, store.ids()), key=lambda m: m.created_at):
    latest[manifest.stage] = manifest
data, policy = store.path(latest["data"].id), store.path(latest["bootstrap"].id)
model, tokenizer = load_policy(model_dir(policy))
rows = evaluate_policies(
    {"initial": (model, tokenizer)},
    eval_sets(data, args.split),
    batch_size=config.evaluate.batch_size,
    max_new_tokens=config.evaluate.max_new_tokens,
    progress=True,
    prompt_format=config.prompts.format,
)
print(f"initial policy {latest['bootstrap'].id} on data {latest['data'].id}:")
for row in rows:
    est = accuracy_interval(row["outcomes"])
    interval = f"[{100 * est.low:.1f}, {100 * est.high:.1f}]"
    print(f"{row['eval_set']}: {row['n_correct']}/{row['n']} = {100 * est.value:.1f}% {interval}")
