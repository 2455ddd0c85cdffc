"""The GRM on wrong samples of the dev (or test) problems, which no stage trains on: a
held-out set large enough to measure issue 17's bars (train_grm's own held-out holds 9
wrong samples). Choices are made on dev; --split test gives the final figure.
usage: smollm_grm_dev.py NAME WORKSPACE [GRM_FOLDER] [--error-step generated|likelihood]
                         [--split dev|test]

Builds once per workspace and split (LAB/smollm_grm_dev/<workspace>[-test]/rows.json): the
workspace's bootstrap policy samples collect's k solutions per problem at collect's settings
(configs/smollm.yaml), labelled as collect labels them (duplicates dropped) and judged as
distill judges them (ArithmeticTeacher, the config's step verification). Then the GRM
(default: the workspace's train_grm model) gives its verdict and rewrite for every row
(annotate's call, the verdict generated or read off the likelihoods), scored with train_grm's grm_metrics; each rate with a 95% interval that
resamples problems."""

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import LAB, json, log

from rlmec_core.annotate import likelihood_error_steps
from rlmec_core.collect import collect_samples
from rlmec_core.config import load_config
from rlmec_core.data.io import load_parquet
from rlmec_core.distill import judge_sample
from rlmec_core.grm import grm_metrics, grm_rewrites, rewrite_is_kept
from rlmec_core.modeling import load_policy
from rlmec_core.prompt_format import prompt_style
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.verification import Verifier
from storage.store import ArtifactStore

parser = argparse.ArgumentParser()
parser.add_argument("name")
parser.add_argument("workspace")
parser.add_argument("grm_folder", nargs="?")
parser.add_argument("--error-step", choices=("generated", "likelihood"), default="generated")
parser.add_argument("--split", choices=("dev", "test"), default="dev")
args = parser.parse_args()
name, workspace = args.name, args.workspace
config = load_config("configs/smollm.yaml")
store = ArtifactStore(workspace)
by_stage = {store.manifest(i).stage: i for i in store.ids()}
grm_folder = (
    Path(args.grm_folder) if args.grm_folder else store.path(by_stage["train_grm"]) / "model"
)
out = LAB / "smollm_grm_dev" / (Path(workspace).name + ("" if args.split == "dev" else "-test"))
verifier = Verifier(config.verification)

rows_file = out / "rows.json"
if rows_file.exists():
    rows = json.loads(rows_file.read_text())
else:
    policy, tokenizer = load_policy(store.path(by_stage["bootstrap"]) / "model")
    style = prompt_style(tokenizer, config.prompts.format)
    problems = list(load_parquet(store.path(by_stage["data"]) / f"{args.split}.parquet"))
    log("sampling", len(problems), args.split, "problems x", config.collect.k)
    samples, sample_stats = collect_samples(
        policy, tokenizer, problems, config.collect, seed=config.run.seed, style=style
    )
    teacher = ArithmeticTeacher()
    rows = [judge_sample(dict(s), teacher, verifier) for s in samples]
    log("samples", len(rows), {k: round(v, 3) for k, v in sample_stats.items()})
    out.mkdir(parents=True, exist_ok=True)
    rows_file.write_text(json.dumps(rows, indent=1, default=str))

result_file = out / f"{name}.json"
if result_file.exists():
    print(result_file.read_text())
    raise SystemExit(0)
model, tokenizer = load_policy(grm_folder)
style = prompt_style(tokenizer, config.prompts.format)
steps = None
if args.error_step == "likelihood":
    steps, _ = likelihood_error_steps(
        model, tokenizer, rows, batch_size=config.annotate.batch_size, style=style
    )
verdicts = grm_rewrites(
    model,
    tokenizer,
    rows,
    batch_size=config.train_grm.eval_batch_size,
    max_new_tokens=config.train_grm.max_new_tokens,
    style=style,
    error_steps=steps,
)
metrics = grm_metrics(verdicts, rows, verifier)


def interval(pairs, resamples=10_000, seed=0):
    """Row-level rate of [(problem_id, bool), ...] and its 95% percentile interval, problems
    resampled with all their rows (the samples of one problem are not independent)."""
    groups = defaultdict(list)
    for problem, ok in pairs:
        groups[problem].append(float(ok))
    if not groups:
        return None
    hits = np.array([sum(v) for v in groups.values()])
    sizes = np.array([len(v) for v in groups.values()])
    pick = np.random.default_rng(seed).integers(0, len(hits), size=(resamples, len(hits)))
    rates = hits[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return [float(hits.sum() / sizes.sum()), float(low), float(high), int(sizes.sum()), len(groups)]


wrong = [(v, r) for v, r in zip(verdicts, rows, strict=True) if r["teacher_status"] == "kept"]
incorrect = [(v, r) for v, r in zip(verdicts, rows, strict=True) if not r["correct"]]
right = [(v, r) for v, r in zip(verdicts, rows, strict=True) if r["teacher_status"] == "correct"]
result = {
    "name": name,
    "grm": str(grm_folder),
    "error_step": args.error_step,
    "split": args.split,
    "n_rows": len(rows),
    "n_wrong_kept": len(wrong),
    "n_right": len(right),
    "verdicts_on_right": sorted({str(v.error_step) for v, _ in right}),
    "step_acc_wrong_ci": interval(
        [(r["problem_id"], v.error_step == r["error_step"]) for v, r in wrong]
    ),
    "keep_rate_ci": interval(
        [(r["problem_id"], rewrite_is_kept(v, r, verifier)) for v, r in incorrect]
    ),
    "correct_on_right_ci": interval([(r["problem_id"], v.error_step == -1) for v, r in right]),
    **metrics,
    # Per row, for paired comparisons between GRMs or verdicts on the same samples.
    "rows": [
        {
            "sample_id": r["sample_id"],
            "problem_id": r["problem_id"],
            "teacher_status": r["teacher_status"],
            "teacher_step": r["error_step"],
            "grm_step": v.error_step,
            "kept": rewrite_is_kept(v, r, verifier),
        }
        for v, r in zip(verdicts, rows, strict=True)
    ],
}
out.mkdir(parents=True, exist_ok=True)
result_file.write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
