"""The catalog of artifact files: which stage writes which file, in which format, and how it
is read and written (as Kedro keeps its data catalog).

A stage writes its own files and reads its parents' through these entries; flows, the CLI
and the report read them the same way. No module names another stage's file by a literal,
so renaming a file, or learning what an artifact holds, is one look here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.atomic import write_bytes_atomic, write_json_atomic

PARQUET, JSON, MARKDOWN, MODEL = "parquet", "json", "markdown", "model"

# The kind of bootstrap's artifact when it only points at a user's model folder (no copy).
EXTERNAL_MODEL_KIND = "model_ref"


@dataclass(frozen=True)
class ArtifactFile:
    """One file (or folder, for a model) inside the artifacts of ``stages``."""

    name: str  # its path inside the artifact folder
    stages: tuple[str, ...]  # the stages whose artifacts hold it
    format: str  # PARQUET (a `datasets` table), JSON, MARKDOWN or MODEL (save_pretrained)
    description: str

    def path(self, artifact: Path | str) -> Path:
        return Path(artifact) / self.name

    def read(self, artifact: Path | str) -> Any:
        """The file's content: a ``datasets.Dataset``, a JSON value or a string (a model
        folder is loaded with ``from_pretrained``, not here)."""
        path = self.path(artifact)
        if self.format == PARQUET:
            from rlmec_core.data.io import load_parquet  # datasets: imported when needed

            return load_parquet(path)
        if self.format == JSON:
            return json.loads(path.read_text(encoding="utf-8"))
        if self.format == MARKDOWN:
            return path.read_text(encoding="utf-8")
        raise TypeError(f"{self.name}: a {self.format} is not read through the catalog")

    def write(self, artifact: Path | str, content: Any) -> Path:
        """Write ``content`` (a Dataset, a JSON-able value or a string) atomically."""
        path = self.path(artifact)
        if self.format == PARQUET:
            from rlmec_core.data.io import save_parquet

            return save_parquet(content, path)
        if self.format == JSON:
            write_json_atomic(path, content)
        elif self.format == MARKDOWN:
            write_bytes_atomic(path, content.encode("utf-8"))
        else:
            raise TypeError(f"{self.name}: a {self.format} is written with save_pretrained")
        return path


def _file(name: str, stages: str, fmt: str, description: str) -> ArtifactFile:
    return ArtifactFile(name, tuple(stages.split()), fmt, description)


SPLITS = ("train", "dev", "test")
PROBLEMS = {
    split: _file(f"{split}.parquet", "data", PARQUET, f"the synthetic {split} problems")
    for split in SPLITS
}
EVAL_SETS = "eval"  # data's folder of extra eval sets, one <name>.parquet each (data.eval_files)
MODEL_FOLDER = _file(
    "model", "bootstrap train_grm train_policy", MODEL, "weights, tokenizer, chat template"
)
MODEL_REF = _file(
    "model_ref.json", EXTERNAL_MODEL_KIND, JSON, "where a user's model folder is (not copied)"
)
SAMPLES = _file("samples.parquet", "collect", PARQUET, "the policy's sampled solutions")
DISTILLED = _file(
    "distilled.parquet", "distill", PARQUET, "samples with the teacher's minimal rewrites"
)
GRM_TRAIN = _file("grm_train.parquet", "train_grm", PARQUET, "the GRM's training examples")
GRM_HELDOUT = _file(
    "grm_heldout.parquet", "train_grm", PARQUET, "distilled rows held out for the GRM's check"
)
RL_DATA = _file(
    "rl_data.parquet", "annotate", PARQUET, "token rewards, reference log-probs, weights"
)
TRAINING = _file("training.json", "train_policy", JSON, "the variant, seed and training facts")
RESULTS = _file("results.json", "evaluate", JSON, "accuracy rows with CIs, one per set")
PREDICTIONS = _file("predictions.json", "evaluate", JSON, "every answer, problem by problem")
RESULTS_TABLE = _file("results.md", "evaluate", MARKDOWN, "the results as a markdown table")


def eval_set(name: str) -> ArtifactFile:
    """One extra eval set in data's artifact (``data.eval_files``)."""
    return _file(f"{EVAL_SETS}/{name}.parquet", "data", PARQUET, f"the eval set {name}")


def eval_set_names(data_artifact: Path | str) -> list[str]:
    """The extra eval sets a data artifact holds, sorted."""
    return sorted(path.stem for path in (Path(data_artifact) / EVAL_SETS).glob("*.parquet"))


def study_summary(kind: str) -> ArtifactFile:
    """A study's summary (``rlmec ablate``: ``ablation``, ``rlmec tune``: ``tuning``)."""
    return _file(f"{kind}.json", kind, JSON, f"the {kind}'s summary and its runs")


def study_table(kind: str) -> ArtifactFile:
    return _file(f"{kind}.md", kind, MARKDOWN, f"the {kind}'s table")
