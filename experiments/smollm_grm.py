"""One GRM lever on configs/smollm.yaml's own data: the pipeline's train_grm with one change.
usage: smollm_grm.py NAME WORKSPACE EPOCHS LR [KINDS]
KINDS: comma-separated example kinds to train on (default error_step,rewrite,identity;
error_step alone asks whether SmolLM2 learns the verdict at all; error_step*3 repeats a
kind's examples three times, a larger share of the verdict in one epoch).

Same split, prompts (the model's chat template), EOS and max length as the stage; the
GRM starts from the run's bootstrap policy. Reports the stage's held-out metrics
(grm_metrics) and the first-error-step accuracy on up to 80 of its own wrong training
samples: whether the verdict is fitted at all, or not even on what it saw."""

import sys

from common import LAB, json, log

from rlmec_core.config import TrainingSection, VerificationSection
from rlmec_core.data.io import load_parquet
from rlmec_core.grm import grm_metrics, grm_rewrites
from rlmec_core.grm_data import build_grm_examples
from rlmec_core.modeling import load_policy
from rlmec_core.prompt_format import prompt_style
from rlmec_core.trainers.sft import train_sft
from rlmec_core.verification import Verifier
from storage.store import ArtifactStore
from tasks.train_grm import heldout_split

name, workspace, epochs, lr = sys.argv[1:5]
kinds = (sys.argv[5] if len(sys.argv) > 5 else "error_step,rewrite,identity").split(",")
out = LAB / "smollm_grm" / name
if (out / "result.json").exists():
    print((out / "result.json").read_text())
    sys.exit(0)

store = ArtifactStore(workspace)
# The workspace of one `rlmec run --config configs/smollm.yaml`: one artifact per stage.
by_stage = {store.manifest(i).stage: i for i in store.ids()}
policy = store.path(by_stage["bootstrap"]) / "model"
distilled = list(load_parquet(store.path(by_stage["distill"]) / "distilled.parquet"))
train_rows, heldout = heldout_split(distilled, 0.1, 0)

model, tokenizer = load_policy(policy)
style = prompt_style(tokenizer, "chat")
# "kind*n": that kind's examples n times (its share of the loss), in the stage's order.
repeats = {k.split("*")[0]: int(k.split("*")[1]) if "*" in k else 1 for k in kinds}
examples = [
    e
    for e in build_grm_examples(train_rows, seed=0, style=style)
    if e["kind"] in repeats
    for _ in range(repeats[e["kind"]])
]
log(name, "examples", len(examples), "heldout", len(heldout), "kinds", kinds)
cfg = TrainingSection(
    epochs=float(epochs),
    learning_rate=float(lr),
    batch_size=8,
    max_length=512,
    save_steps=10**6,
    logging_steps=10,
)
res = train_sft(
    model,
    tokenizer,
    [{"prompt": e["prompt"], "response": e["response"]} for e in examples],
    out / "ckpt",
    cfg,
    seed=0,
    eos_id=style.end_id,
    resume=False,
)
log("trained", res["steps"], "steps", f"{res['runtime_s']:.0f}s", "final loss", res["final_loss"])
# Kept for smollm_grm_dev.py, which scores it on wrong samples of the dev problems.
model.save_pretrained(out / "model")
tokenizer.save_pretrained(out / "model")
verifier = Verifier(VerificationSection())
held = grm_metrics(
    grm_rewrites(model, tokenizer, heldout, batch_size=32, max_new_tokens=128, style=style),
    heldout,
    verifier,
)
seen = [r for r in train_rows if r["teacher_status"] == "kept"][:80]
seen_verdicts = grm_rewrites(model, tokenizer, seen, batch_size=32, max_new_tokens=16, style=style)
result = {
    "name": name,
    "epochs": float(epochs),
    "lr": float(lr),
    "kinds": kinds,
    "n_examples": len(examples),
    "steps": res["steps"],
    "seconds": res["runtime_s"],
    "final_loss": res["final_loss"],
    "train_step_acc_wrong": grm_metrics(seen_verdicts, seen)["error_step_accuracy_incorrect"],
    "train_verdicts": sorted({str(v.error_step) for v in seen_verdicts}),
    **{f"heldout_{k}": v for k, v in held.items()},
}
out.mkdir(parents=True, exist_ok=True)
(out / "result.json").write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
