"""The datasets a stage reads, as MLflow dataset inputs of its run.

Each Parquet file of a data artifact a stage consumes (data splits, samples, rewrites,
RL data) becomes a schema-only dataset: its schema comes from the file's footer, its
digest is the artifact id, its source the file in the store. Nothing is loaded, so this
stays cheap for large files, and the digest names exactly the content the stage read.
Model artifacts (weights, tokenizer) are inputs but not datasets, and the data they keep
beside the weights (e.g. the GRM's training set) is not what a consumer reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Object, Property, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from storage import catalog


def log_dataset_inputs(
    client: MlflowClient, run_id: str, parents: Mapping[str, tuple[str, Path]]
) -> list[DatasetInput]:
    """Log the Parquet files of the parents ``{role: (artifact id, folder)}`` as inputs."""
    inputs = [
        dataset_input(role, artifact_id, folder, path)
        for role, (artifact_id, folder) in parents.items()
        if not is_model_artifact(folder)
        for path in sorted(folder.rglob("*.parquet"))
    ]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    return inputs


def is_model_artifact(folder: Path) -> bool:
    return catalog.MODEL_FOLDER.path(folder).is_dir() or catalog.MODEL_REF.path(folder).is_file()


def dataset_input(role: str, artifact_id: str, folder: Path, path: Path) -> DatasetInput:
    """``<artifact id>/<file>``, e.g. ``e90dfcf3…/train.parquet``, in context ``role``."""
    fields = MetaDataset(
        source=LocalArtifactDatasetSource(str(path.resolve())),
        name=f"{artifact_id}/{path.relative_to(folder).as_posix()}",
        digest=artifact_id,
        schema=parquet_schema(path),
    ).to_dict()
    return DatasetInput(
        dataset=Dataset(**fields),
        tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=role)],
    )


def parquet_schema(path: Path) -> Schema:
    """The file's column names and types, read from its footer only."""
    return Schema(
        [
            ColSpec(_mlflow_type(f.type), name=f.name, required=not f.nullable)
            for f in pq.read_schema(path)
        ]
    )


def _mlflow_type(arrow: pa.DataType):
    types = pa.types
    if types.is_boolean(arrow):
        return DataType.boolean
    if types.is_integer(arrow):
        return DataType.long if arrow.bit_width > 32 else DataType.integer
    if types.is_floating(arrow):
        return DataType.float if arrow.bit_width == 32 else DataType.double
    if types.is_string(arrow) or types.is_large_string(arrow):
        return DataType.string
    if types.is_binary(arrow) or types.is_large_binary(arrow):
        return DataType.binary
    if types.is_timestamp(arrow) or types.is_date(arrow):
        return DataType.datetime
    if types.is_list(arrow) or types.is_large_list(arrow):
        return Array(_mlflow_type(arrow.value_type))
    if types.is_struct(arrow):
        fields = [arrow.field(i) for i in range(arrow.num_fields)]
        return Object([Property(f.name, _mlflow_type(f.type), not f.nullable) for f in fields])
    return AnyType()  # a type MLflow's schemas cannot name; the column is still listed
