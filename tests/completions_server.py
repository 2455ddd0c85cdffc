"""A real loopback OpenAI-compatible *completions* server backed by a local HF model.

It plays vLLM for the generation-backend tests: ``POST /v1/completions`` with ``prompt``
as token ids (a string prompt is refused, so tests prove the ids are sent), ``n``,
``max_tokens``, ``temperature``, ``top_p``, ``seed`` and vLLM's ``stop_token_ids``;
``GET /v1/models``. Decoding is
HF ``generate`` on one prompt at a time, text cut at EOS with special tokens skipped (as
vLLM returns it). Faults are scripted as for ``teacher_server.TeacherServer``.

In a test process: ``CompletionsServer(model_dir).start()`` (or as a context manager).
As a ``generation.launch`` command::

    {python} -m tests.completions_server {model_dir} --port {port} --served-model-name {model}

``--api-key-env NAME`` makes it require the key held in ``$NAME``; ``--record PATH``
appends one JSON line per completions request (model, n, seed, temperature, prompt length)
so a test can see what a launched server was asked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import GenerationConfig

from rlmec_core.modeling import load_policy
from tests.teacher_server import LoopbackOpenAIServer


class CompletionsServer(LoopbackOpenAIServer):
    route = "/v1/completions"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        served_model_name: str | None = None,
        expected_api_key: str | None = None,
        latency_s: float = 0.0,
        port: int = 0,
        record: str | Path | None = None,
    ) -> None:
        self.record = Path(record) if record else None
        super().__init__(
            expected_api_key=expected_api_key,
            latency_s=latency_s,
            model=served_model_name or str(model_dir),
            port=port,
        )
        self.policy, self.tokenizer = load_policy(model_dir)
        self.policy.eval()
        # Like vLLM: stop where the folder says (its generation_config.json, else the
        # tokenizer), not at what load_policy adds in memory; more only by stop_token_ids.
        eos = None
        if (Path(model_dir) / "generation_config.json").is_file():
            eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = set(eos) if isinstance(eos, list) else {eos}
        self._sampling_lock = threading.Lock()

    def __enter__(self) -> CompletionsServer:
        return self.start()

    def garbage(self) -> dict:
        return {"id": "cmpl-garbage", "object": "text_completion", "choices": "nonsense"}

    def respond(self, body: dict) -> tuple[int, dict]:
        prompt = body.get("prompt")
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"model {body.get('model')!r} is not served"}}
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return 400, {"error": {"message": "this server takes one prompt of token ids"}}
        n = int(body.get("n") or 1)
        temperature = float(body.get("temperature", 1.0))
        if self.record is not None:
            line = {k: body.get(k) for k in ("model", "n", "seed", "temperature", "max_tokens")}
            with self._lock, self.record.open("a", encoding="utf-8") as out:
                out.write(json.dumps({**line, "prompt_tokens": len(prompt)}) + "\n")
        max_tokens = int(body.get("max_tokens") or 16)
        texts, finish, n_tokens = self.generate(
            prompt,
            n=n,
            temperature=temperature,
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=max_tokens,
            seed=body.get("seed"),
            stop_token_ids=body.get("stop_token_ids") or [],
        )
        return 200, {
            "id": f"cmpl-{len(self.requests)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                for i, (text, reason) in enumerate(zip(texts, finish, strict=True))
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": n_tokens,
                "total_tokens": len(prompt) + n_tokens,
            },
        }

    @torch.no_grad()
    def generate(
        self,
        prompt: list[int],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
        stop_token_ids: Sequence[int] = (),
    ) -> tuple[list[str], list[str], int]:
        ids = torch.tensor([prompt], dtype=torch.long)
        stops = self.eos_ids | {int(i) for i in stop_token_ids}
        common = {
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(stops),
        }
        if temperature > 0:
            with self._sampling_lock:  # the seed is torch's global RNG state
                torch.manual_seed(0 if seed is None else int(seed))
                out = self.policy.generate(
                    ids,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=0,
                    num_return_sequences=n,
                    **common,
                )
        else:  # concurrent greedy requests decode in parallel, as on a real server
            greedy = self.policy.generate(
                ids, do_sample=False, temperature=None, top_p=None, top_k=None, **common
            )
            out = greedy.repeat(n, 1)
        texts, finish, n_tokens = [], [], 0
        for row in out[:, len(prompt) :].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), None)
            kept = row if cut is None else row[:cut]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
            finish.append("length" if cut is None else "stop")
            n_tokens += len(kept) + (cut is not None)
        return texts, finish, n_tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--record", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    key = os.environ[args.api_key_env] if args.api_key_env else None
    server = CompletionsServer(
        args.model_dir,
        served_model_name=args.served_model_name,
        expected_api_key=key,
        latency_s=args.latency,
        port=args.port,
        record=args.record,
    )
    print(f"serving {server.model} at {server.base_url}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
