"""Generation on an OpenAI-compatible completions endpoint (``generation.backend: openai``).

A ``ServedModel`` stands in for a ``PreTrainedModel`` wherever text is generated
(``generation.generate_solutions``, ``grm.greedy_continuations``): prompts go out as token
ids, tokenised exactly as the hf path tokenises them, so special tokens and the separate
prompt/response tokenisation hold; the completion's text comes back and is cut at the
first EOS, as the hf path cuts its ids. Sampling requests carry ``n`` and a seed per prompt.

``open_generator`` gives a stage what it generates with: the HF model for ``hf``, or a
``ServedModel`` for ``openai``, with the server started by ``generation.launch`` for the
model folder when a launch command is set (and stopped after).

Token rewards and reference log-probs never come from here: they need the exact numbers of
the HF forward pass that training uses (see ``annotate``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rlmec_core.openai_client import EndpointError, OpenAIEndpoint, Retryable
from rlmec_core.processes import die_with_parent, free_port
from rlmec_core.progress import Progress
from rlmec_core.prompt_format import end_of_turn_id

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from rlmec_core.config import GenerationSection

logger = logging.getLogger(__name__)

# Per-request seeds stay below 2**31: every server takes them.
_SEED_MODULUS = 2**31
_LAUNCH_PLACEHOLDER = re.compile(r"\{(model_dir|port|model|python)\}")
_LOG_TAIL_LINES = 40


class GenerationServerError(EndpointError):
    """The generation server failed to start, refused a request, or stayed down."""


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt ``index``'s request: outputs depend on the seed and prompt only."""
    return (seed * 1_000_003 + index) % _SEED_MODULUS


class ServedModel:
    """A model behind an OpenAI-compatible completions endpoint.

    ``eos_texts``: how the tokens generation stops at read as text; a completion is cut at
    the first of them (servers normally stop there and leave them out, as
    ``skip_special_tokens`` does). ``stop_token_ids``: stop tokens the server cannot know
    from the model folder (a chat template's end-of-turn token that the hf path adds), sent
    as ``stop_token_ids`` (a vLLM/SGLang extension), only when there are any.
    """

    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        eos_texts: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
    ) -> None:
        self.endpoint = endpoint
        self.eos_texts = tuple(text for text in eos_texts if text)
        self.stop_token_ids = [int(i) for i in stop_token_ids]

    def __repr__(self) -> str:
        return f"ServedModel({self.endpoint!r})"

    def _cut_at_eos(self, text: str) -> str:
        cut = min((i for i in (text.find(e) for e in self.eos_texts) if i >= 0), default=None)
        return text if cut is None else text[:cut]

    def _request(self, params: dict[str, Any]) -> tuple[list[str], int]:
        """One completions request (``params``: its body); the ``n`` texts and the tokens
        generated."""
        endpoint, n = self.endpoint, params["n"]

        def attempt() -> tuple[list[str], int]:
            completion = endpoint.call(lambda client: client.completions.create(**params))
            try:
                choices = list(completion.choices)
                texts: list[str | None] = [None] * n
                for position, choice in enumerate(choices):
                    index = choice.index if isinstance(choice.index, int) else position
                    if not 0 <= index < n or not isinstance(choice.text, str):
                        raise TypeError
                    texts[index] = choice.text
            except (AttributeError, TypeError):
                raise Retryable("malformed response body") from None
            if len(choices) != n or any(text is None for text in texts):
                raise endpoint.error_type(
                    f"{endpoint.label} at {endpoint.base_url} returned {len(choices)} "
                    f"completions for n={n}; it must support the n parameter"
                )
            usage = getattr(completion, "usage", None)
            n_tokens = getattr(usage, "completion_tokens", 0) or 0
            return [self._cut_at_eos(text) for text in texts], int(n_tokens)

        return endpoint.retry(attempt, "completion")

    def complete(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
        progress: bool = False,
        desc: str = "generate",
    ) -> tuple[list[list[str]], int]:
        """``n`` completions per prompt (token ids), in prompt order, and the number of
        tokens generated (the server's count). ``temperature == 0`` is greedy decoding;
        when sampling, prompt ``i``'s request carries ``request_seed(seed, i)``."""
        sampling = temperature > 0
        if sampling and seed is None:
            raise ValueError("sampling needs a seed")
        common: dict[str, Any] = {
            "model": self.endpoint.model,
            "n": n,
            "max_tokens": max_tokens,
            "temperature": temperature if sampling else 0.0,
            "top_p": top_p if sampling else 1.0,
        }
        if self.stop_token_ids:
            common["extra_body"] = {"stop_token_ids": self.stop_token_ids}
        bodies = [{**common, "prompt": [int(t) for t in ids]} for ids in prompt_ids]
        if sampling:
            for i, body in enumerate(bodies):
                body["seed"] = request_seed(seed, i)
        with Progress(len(bodies), desc, enabled=progress) as bar:
            results = self.endpoint.map(
                self._request,
                bodies,
                on_done=lambda: bar.update(1),
            )
        return [texts for texts, _ in results], sum(count for _, count in results)


# ---------------------------------------------------------------- launching a server


# In the server's process: SIGTERM when the stage's process dies (no orphans), not SIGKILL,
# so that the server can shut down, its own worker processes included.
_die_with_stage = functools.partial(die_with_parent, signal.SIGTERM)


def launch_argv(launch: str, *, model_dir: Path, port: int | None, model: str) -> list[str]:
    """The launch command's arguments with its placeholders filled in (no shell)."""
    values = {
        "model_dir": str(model_dir),
        "port": "" if port is None else str(port),
        "model": model,
        "python": sys.executable,
    }
    return [
        _LAUNCH_PLACEHOLDER.sub(lambda m: values[m.group(1)], part) for part in shlex.split(launch)
    ]


def _tail(path: Path, redact: Any) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return redact("\n".join(lines[-_LOG_TAIL_LINES:])) or "(empty log)"


def _served_models(endpoint: OpenAIEndpoint, timeout_s: float) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists; None while the server is not up."""
    import openai

    try:
        # One try, no client retries: callers poll a starting server, or fail fast.
        page = endpoint.client.with_options(timeout=timeout_s, max_retries=0).models.list()
    except (openai.APIConnectionError, openai.InternalServerError):
        return None
    except openai.NotFoundError:
        return []  # a server without the route: nothing to check against
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise endpoint.error_type(
                f"{endpoint.label} at {endpoint.base_url} rejected the credentials "
                f"(HTTP {exc.status_code}); check the key in ${endpoint.api_key_env}"
            ) from None
        return None
    return [getattr(item, "id", "") for item in page.data]


def _check_serves(endpoint: OpenAIEndpoint, models: list[str]) -> None:
    if models and endpoint.model not in models:
        raise endpoint.error_type(
            f"{endpoint.label} at {endpoint.base_url} does not serve model "
            f"{endpoint.model!r} (it serves {', '.join(map(repr, models))}); set "
            "generation.model to the served name"
        )


def _stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _endpoint(settings: GenerationSection, base_url: str, model: str) -> OpenAIEndpoint:
    return OpenAIEndpoint.of_section(
        settings,
        base_url=base_url,
        model=model,
        label="generation server",
        owner="generation",
        error_type=GenerationServerError,
    )


@contextlib.contextmanager
def served_endpoint(settings: GenerationSection, model_dir: Path) -> Iterator[OpenAIEndpoint]:
    """An endpoint serving ``model_dir``: a server started by ``settings.launch`` (stopped on
    exit), or without launch the server at ``settings.base_url``."""
    if settings.backend != "openai" or not settings.base_url:
        raise ValueError("served_endpoint needs generation.backend openai with a base_url")
    model_dir = Path(model_dir).resolve()
    model = settings.model or str(model_dir)
    if settings.launch is None:
        yield _fixed_endpoint(settings, model)
        return

    port = free_port() if "{port}" in settings.base_url else urlparse(settings.base_url).port
    base_url = settings.base_url.replace("{port}", str(port))
    endpoint = _endpoint(settings, base_url, model)  # reads the key before anything starts
    argv = launch_argv(settings.launch, model_dir=model_dir, port=port, model=model)
    log = Path(tempfile.mkstemp(prefix="rlmec-generation-server-", suffix=".log")[1])
    logger.info("starting the generation server for %s: %s", model_dir, shlex.join(argv))
    started = time.monotonic()
    try:
        process = _start_server(argv, log, endpoint)
        try:
            _wait_until_serving(process, endpoint, settings, base_url, model_dir, log, started)
            try:
                yield endpoint
            except BaseException:
                if process.poll() is not None:
                    logger.warning(
                        "the generation server exited with code %s; its last output:\n%s",
                        process.returncode,
                        _tail(log, endpoint.redact),
                    )
                raise
        finally:
            _stop(process)
    finally:
        log.unlink(missing_ok=True)


def _fixed_endpoint(settings: GenerationSection, model: str) -> OpenAIEndpoint:
    """The server at ``settings.base_url``, checked to answer and to serve ``model``."""
    endpoint = _endpoint(settings, settings.base_url, model)
    models = _served_models(endpoint, settings.timeout_s)
    if models is None:
        raise endpoint.error_type(
            f"generation server at {settings.base_url} does not answer GET /models"
        )
    _check_serves(endpoint, models)
    return endpoint


def _start_server(argv: list[str], log: Path, endpoint: OpenAIEndpoint) -> subprocess.Popen:
    """Start the launch command in its own process group, its output going to ``log``."""
    with log.open("wb") as out:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
                preexec_fn=_die_with_stage,
            )
        except OSError as exc:
            raise endpoint.error_type(
                f"generation.launch cannot start {argv[0]!r}: {exc}"
            ) from None


def _wait_until_serving(
    process: subprocess.Popen,
    endpoint: OpenAIEndpoint,
    settings: GenerationSection,
    base_url: str,
    model_dir: Path,
    log: Path,
    started: float,
) -> None:
    """Poll ``GET /models`` (backing off up to 1s) until the started server serves the model;
    raise if it exits first or does not answer within ``settings.launch_timeout_s``."""
    deadline = started + settings.launch_timeout_s
    pause = 0.1
    while True:
        if process.poll() is not None:
            raise endpoint.error_type(
                f"the generation server exited with code {process.returncode} before "
                f"serving {model_dir}; its last output:\n{_tail(log, endpoint.redact)}"
            )
        models = _served_models(endpoint, min(5.0, settings.timeout_s))
        if models is not None:
            _check_serves(endpoint, models)
            break
        if time.monotonic() > deadline:
            raise endpoint.error_type(
                f"the generation server did not answer GET {base_url}/models within "
                f"{settings.launch_timeout_s:g}s; its last output:\n"
                f"{_tail(log, endpoint.redact)}"
            )
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    logger.info(
        "generation server for %s up at %s after %.1fs",
        model_dir.name,
        base_url,
        time.monotonic() - started,
    )


# ---------------------------------------------------------------- what a stage generates with


def require_launch(settings: GenerationSection, stage: str) -> None:
    """Refuse a fixed server for a stage that generates with a model this pipeline trains."""
    if settings.backend == "openai" and settings.launch is None:
        raise GenerationServerError(
            f"{stage} generates with a model this pipeline trains, which the fixed server at "
            f"{settings.base_url} cannot be serving: set generation.launch (a command that "
            "serves {model_dir}), or use generation.backend hf"
        )


def eos_token_ids(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The folder's EOS ids: its generation config's, else the tokenizer's."""
    from transformers import GenerationConfig

    eos = None
    if (Path(model_dir) / "generation_config.json").is_file():
        eos = GenerationConfig.from_pretrained(model_dir, local_files_only=True).eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return sorted(set(eos)) if isinstance(eos, list) else [eos]


@contextlib.contextmanager
def open_generator(
    settings: GenerationSection,
    model_dir: Path,
    *,
    loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    stage: str | None = None,
) -> Iterator[tuple[PreTrainedModel | ServedModel, PreTrainedTokenizerBase]]:
    """``(model, tokenizer)`` to generate with from the model folder ``model_dir``.

    hf: ``loaded`` if given, else the folder loaded with ``modeling.load_policy``. openai: a
    ``ServedModel`` (its server launched for ``model_dir`` when ``settings.launch`` is set;
    ``stage``, when given, names a stage that needs launch) and the folder's tokenizer. No
    weights are loaded in this process then.
    """
    if settings.backend == "hf":
        if loaded is not None:
            yield loaded
            return
        from rlmec_core.modeling import load_policy

        yield load_policy(model_dir)
        return
    if stage is not None:
        require_launch(settings, stage)
    from rlmec_core.modeling import load_generation_tokenizer

    tokenizer = loaded[1] if loaded is not None else load_generation_tokenizer(model_dir)
    # Where the hf path stops (``modeling.load_policy``): the folder's EOS ids, plus the
    # chat template's end-of-turn token, which a server learns only from the request.
    stops = eos_token_ids(model_dir, tokenizer)
    end = end_of_turn_id(tokenizer)
    extra = [end] if end is not None and end not in stops else []
    eos_texts = [tokenizer.decode([i], skip_special_tokens=False) for i in [*stops, *extra]]
    with served_endpoint(settings, model_dir) as endpoint:
        yield ServedModel(endpoint, eos_texts, stop_token_ids=extra), tokenizer
