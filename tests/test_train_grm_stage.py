"""Stage `train_grm` saves exactly the set it trains on and the rows it evaluates on.

The model, the trainer and the GRM's generation are replaced by fakes: this is about
which rows go where, not about learning.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from datasets import Dataset

from rlmec_core.config import load_config
from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.data.schema import DISTILLED_FEATURES
from rlmec_core.grm_data import build_grm_examples
from tasks import train_grm
from tasks.stage import StageIO, raw_stage_function
from tests.pipeline_helpers import REPO
from tests.test_grm_data import FIXED, _row


class FakeModel:
    def save_pretrained(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights.bin").write_bytes(b"w")


def distilled_rows() -> list[dict]:
    """Ten problems, each with a correct sample and a kept erroneous one."""
    rows = []
    for problem in range(10):
        rows.append(_row(f"p{problem}/0", "correct"))
        rows.append(_row(f"p{problem}/1", "kept", error_step=1, rewrite=FIXED))
    return rows


def run_stage(tmp_path: Path, monkeypatch) -> tuple[StageIO, dict, list[dict]]:
    trained_on: list[dict] = []

    def fake_train_sft(model, tokenizer, examples, *args, **kwargs):
        trained_on.extend(examples)
        return {"steps": 1, "loss_history": []}

    monkeypatch.setattr(train_grm, "load_policy", lambda path, **kw: (FakeModel(), FakeModel()))
    monkeypatch.setattr(train_grm, "train_sft", fake_train_sft)
    monkeypatch.setattr(train_grm, "grm_rewrites", lambda model, tok, rows, **kw: rows)
    monkeypatch.setattr(train_grm, "grm_metrics", lambda verdicts, rows, *a: {"n": len(rows)})
    rewrites = tmp_path / "rewrites"
    distilled = Dataset.from_list(distilled_rows(), features=DISTILLED_FEATURES)
    save_parquet(distilled, rewrites / "distilled.parquet")
    io = StageIO(
        inputs={"rewrites": rewrites, "policy": tmp_path / "policy"},
        out=tmp_path / "out",
        scratch=tmp_path / "scratch",
        parent_ids={},
    )
    ctx = SimpleNamespace(config=load_config(REPO / "configs" / "micro.yaml"))
    result = raw_stage_function("train_grm")(ctx, io)
    return io, result.metrics, trained_on


def test_grm_train_parquet_is_exactly_what_the_grm_trains_on(tmp_path, monkeypatch):
    io, metrics, trained_on = run_stage(tmp_path, monkeypatch)
    saved = list(load_parquet(io.out / "grm_train.parquet"))
    assert [{"prompt": e["prompt"], "response": e["response"]} for e in saved] == trained_on
    kinds = Counter(e["kind"] for e in saved)
    for kind in ("error_step", "rewrite", "identity"):
        assert metrics[f"grm_examples_{kind}"] == kinds[kind]
    assert metrics["n_examples"] == len(saved)


def test_grm_heldout_parquet_holds_whole_problems_the_training_set_never_sees(
    tmp_path, monkeypatch
):
    io, metrics, _ = run_stage(tmp_path, monkeypatch)
    heldout = list(load_parquet(io.out / "grm_heldout.parquet"))
    saved = list(load_parquet(io.out / "grm_train.parquet"))
    assert len(heldout) == metrics["n_heldout"] > 0
    held_problems = {r["problem_id"] for r in heldout}
    assert not held_problems & {e["sample_id"].split("/")[0] for e in saved}
    # the training set is built from exactly the rows not held out
    training_rows = [r for r in distilled_rows() if r["problem_id"] not in held_problems]
    seed = load_config(REPO / "configs" / "micro.yaml").run.seed
    assert build_grm_examples(training_rows, seed=seed).to_list() == saved
