"""GRM on a problem subset of a big sample set; optional prompt changes.
usage: grm_exp.py NAME SAMPLES POLICY_DIR N_PROBLEMS EPOCHS LR [numbered_ref 0/1] [bs]
LAYOUT=interleaved: each prediction step shown right under the reference's step of the
same number, instead of the two solutions one after the other.
KINDS=error_step: train on the error-step examples only (is the verdict learnable at all?).
VERDICT=steps: the error-step response judges each step in turn before naming the first
wrong one ("Step 0 right. Step 1 wrong. The first error step is [1]")."""

import collections
import json
import sys

from common import *

import rlmec_core.grm_data as gd
from rlmec_core.config import TrainingSection
from rlmec_core.data.io import load_parquet
from rlmec_core.modeling import load_policy
from rlmec_core.trainers.sft import train_sft

name, samples_path, policy_dir, n_problems, epochs, lr = sys.argv[1:7]
numbered = len(sys.argv) > 7 and sys.argv[7] == "1"
bs = int(sys.argv[8]) if len(sys.argv) > 8 else 16
if numbered:

    def error_step_prompt(question, gold_solution, prediction):
        return (
            f"{gd._ERROR_STEP_INSTRUCTION}\n\nProblem:\n{question.strip()}\n\n"
            f"Reference solution:\n{gd.number_steps(gold_solution)}\n\n"
            f"Prediction:\n{gd.number_steps(prediction)}\n\n{gd.ERROR_STEP_RESPONSE_PREFIX}"
        )

    gd.error_step_prompt = error_step_prompt
ref_last = len(sys.argv) > 9 and sys.argv[9] == "1"
if ref_last:

    def rewrite_prompt(question, gold_solution, prediction):
        return (
            f"{gd._REWRITE_INSTRUCTION}\n\nProblem:\n{question.strip()}\n\n"
            f"Prediction:\n{gd._solution_block(prediction)}\n\n"
            f"Reference solution:\n{gd._solution_block(gold_solution)}\n\n{gd.REWRITE_RESPONSE_PREFIX}"
        )

    gd.rewrite_prompt = rewrite_prompt
    if numbered:

        def error_step_prompt(question, gold_solution, prediction):
            return (
                f"{gd._ERROR_STEP_INSTRUCTION}\n\nProblem:\n{question.strip()}\n\n"
                f"Prediction:\n{gd.number_steps(prediction)}\n\n"
                f"Reference solution:\n{gd.number_steps(gold_solution)}\n\n{gd.ERROR_STEP_RESPONSE_PREFIX}"
            )

        gd.error_step_prompt = error_step_prompt
import rlmec_core.grm as grm_mod

grm_mod.error_step_prompt = gd.error_step_prompt
grm_mod.rewrite_prompt = gd.rewrite_prompt
out = LAB / "grm" / name
samples = list(load_parquet(Path(samples_path)))
problems = sorted({s["problem_id"] for s in samples}, key=lambda p: int(p.rsplit("-", 1)[1]))
keep = set(problems[: int(n_problems)])
samples = [s for s in samples if s["problem_id"] in keep]
rows, caught = redistill(samples)
train_rows, held = heldout_split(rows, 0.1, 0)
held = held[:600]
layout = os.environ.get("LAYOUT", "blocks")
if layout == "interleaved":

    def interleave_steps(gold_solution, prediction):
        """Each prediction step right under the reference's step of the same number."""
        reference, predicted = gd.split_steps(gold_solution), gd.split_steps(prediction)
        lines = []
        for i in range(max(len(reference), len(predicted))):
            for label, steps in (("Reference", reference), ("Prediction", predicted)):
                lines.append(f"[{i}] {label}: {steps[i].strip() if i < len(steps) else '(none)'}")
        return "\n".join(lines)

    def interleaved_prompt(kind, question, gold_solution, prediction, style):
        instruction, _, response_prefix = gd._GRM_PROMPTS[kind]
        body = (
            f"{instruction}\n\nProblem:\n{question.strip()}\n\n"
            "Reference solution and prediction, step by step:\n"
            f"{interleave_steps(gold_solution, prediction)}"
        )
        return gd._styled(body, response_prefix, style)

    gd._grm_prompt = interleaved_prompt  # error_step_prompt/rewrite_prompt call it
style = None
examples = list(gd.build_grm_examples(train_rows, seed=0, style=style))
kinds = os.environ.get("KINDS", "error_step,rewrite,identity").split(",")
examples = [e for e in examples if e["kind"] in kinds]
verdict = os.environ.get("VERDICT", "step")
if verdict == "steps":
    by_id = {r["sample_id"]: r for r in train_rows}

    def stepwise(row):
        n = len(gd.split_steps(row["prediction"]))
        k = row["error_step"] if row["teacher_status"] == "kept" else -1
        judged = [
            f"Step {i} {'wrong' if i == k else 'right'}." for i in range(n if k < 0 else k + 1)
        ]
        return " ".join(judged) + " " + gd.error_step_response(k)

    for e in examples:
        if e["kind"] == "error_step":
            e["response"] = stepwise(by_id[e["sample_id"]])
    log("stepwise verdict e.g.", [e["response"] for e in examples if e["kind"] == "error_step"][:2])
log(
    name,
    "samples",
    len(rows),
    "caught",
    caught,
    collections.Counter(r["teacher_status"] for r in rows),
    "examples",
    len(examples),
)
model, tok = load_policy(policy_dir)
expand = int(os.environ.get("EXPAND", "0"))
if expand:
    # Block expansion: after each of the first `expand` layers, a copy whose output projections
    # are zero, so the model computes the same function at first and gains depth.
    import copy

    import torch

    layers = model.model.layers
    new = torch.nn.ModuleList()
    for i, layer in enumerate(layers):
        new.append(layer)
        if i < expand:
            extra = copy.deepcopy(layer)
            torch.nn.init.zeros_(extra.self_attn.o_proj.weight)
            torch.nn.init.zeros_(extra.mlp.down_proj.weight)
            new.append(extra)
    for j, layer in enumerate(new):
        layer.self_attn.layer_idx = j
    model.model.layers = new
    model.config.num_hidden_layers = len(new)
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = [model.config.layer_types[0]] * len(new)
    log("expanded to", len(new), "layers", sum(p.numel() for p in model.parameters()))
cfg = TrainingSection(
    epochs=float(epochs),
    learning_rate=float(lr),
    batch_size=bs,
    warmup_ratio=0.03,
    save_steps=10**6,
    logging_steps=50,
    max_length=1024,
)
res = train_sft(
    model,
    tok,
    [{"prompt": e["prompt"], "response": e["response"]} for e in examples],
    out / "ckpt",
    cfg,
    seed=0,
    resume=False,
)
log("trained", res["steps"], "steps", f"{res['runtime_s']:.0f}s", "final loss", res["final_loss"])
model.save_pretrained(out / "model")
tok.save_pretrained(out / "model")
wrong = [r for r in held if r["teacher_status"] == "kept"]
v = grm_mod.grm_rewrites(
    model, tok, wrong, batch_size=64, max_new_tokens=192, progress=False, style=style
)
step_acc = sum(x.error_step == r["error_step"] for x, r in zip(v, wrong, strict=True)) / len(wrong)
verified = sum(
    x.text is not None
    and x.error_step is not None
    and x.error_step >= 0
    and check_steps(r["question"], r["gold_answer"], x.text, "grounded").ok
    for x, r in zip(v, wrong, strict=True)
) / len(wrong)
# Step accuracy on 300 of its own training samples: does it fit the verdict at all?
seen = [r for r in train_rows if r["teacher_status"] == "kept"][:300]
seen_v = grm_mod.grm_rewrites(
    model, tok, seen, batch_size=64, max_new_tokens=64, progress=False, style=style
)
train_step_acc = grm_mod.grm_metrics(seen_v, seen)["error_step_accuracy_incorrect"]
r = {
    "name": name,
    "train_step_acc_wrong": train_step_acc,
    "n_problems": int(n_problems),
    "numbered_ref": numbered,
    "ref_last": ref_last,
    "layout": layout,
    "verdict": verdict,
    "kinds": kinds,
    "epochs": float(epochs),
    "lr": float(lr),
    "bs": bs,
    "n_examples": len(examples),
    "steps": res["steps"],
    "seconds": res["runtime_s"],
    "heldout_wrong": len(wrong),
    "step_acc_wrong": step_acc,
    "verified_rewrite_rate": verified,
}
log(json.dumps(r))
save_json(out / "result.json", r)
