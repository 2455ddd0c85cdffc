"""Registry aliases: every new version is `latest`; `best` moves only to a better policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks import tracking


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One tracking store for the module: creating one takes seconds."""
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'm.db'}")


@dataclass
class Model:
    """A registered model of its own for each test, in the shared store."""

    client: MlflowClient
    name: str
    folder: Path

    def register(self, artifact_id: str) -> str:
        version = tracking.register_model(
            self.client, self.name, self.folder / artifact_id, "", artifact_id
        )
        return str(version.version)

    def holder(self, alias: str) -> str:
        return str(self.client.get_model_version_by_alias(self.name, alias).version)

    def promote(self, version: str, accuracy: float) -> bool:
        return tracking.promote_if_better(
            self.client, self.name, version, "synthetic_test", accuracy
        )


@pytest.fixture
def model(client, tmp_path, request) -> Model:
    return Model(client, f"policy-{request.node.name.replace('_', '-')}", tmp_path)


def test_each_new_version_is_latest(model):
    first = model.register("a1")
    assert model.holder(tracking.LATEST_ALIAS) == first
    second = model.register("a2")
    assert model.holder(tracking.LATEST_ALIAS) == second


def test_best_moves_only_to_a_higher_accuracy(model):
    first, worse, better, equal = (model.register(f"a{i}") for i in range(4))
    assert model.promote(first, 0.5) and model.holder("best") == first
    assert not model.promote(worse, 0.25)
    assert model.promote(better, 0.75)
    assert not model.promote(equal, 0.75)
    assert model.holder("best") == better
    tags = model.client.get_model_version(model.name, worse).tags
    assert float(tags["rlmec.accuracy.synthetic_test"]) == 0.25  # recorded even when not best
    assert model.promote(better, 0.75)  # the holder keeps it


def test_version_of_artifact_finds_the_newest_version_made_from_it(model):
    model.register("a1")
    again = model.register("a1")  # a forced re-run of a deterministic stage
    model.register("a2")
    found = tracking.version_of_artifact(model.client, model.name, "a1")
    assert str(found.version) == again
    assert tracking.version_of_artifact(model.client, model.name, "missing") is None
