"""Progress that suits where the output goes: a bar on a terminal, a few log lines elsewhere.

In CI, a Prefect worker or a log file a progress bar (or a line per step) floods the log,
so there the same progress is reported as one ``logging`` line per interval; the library's
loggers reach Prefect's run logs (see ``flows/environment.py``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm
from transformers import ProgressCallback, TrainerCallback

T = TypeVar("T")
logger = logging.getLogger("rlmec_core.progress")
# Off a terminal: one line at most this often (and the last one), never a carriage return.
LOG_INTERVAL_S = 30.0


def on_terminal() -> bool:
    """Whether a person watches: stderr is a terminal."""
    return sys.stderr.isatty()


class Progress:
    """Counts work done: a tqdm bar on a terminal, else one log line at most every
    ``interval_s`` seconds (done/total, rate, ETA) and one when the work is done."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        enabled: bool = True,
        interval_s: float = LOG_INTERVAL_S,
        unit: str = "it",
    ) -> None:
        self.total, self.desc, self.done, self.unit = total, desc, 0, unit
        self._bar = tqdm(total=total, desc=desc, unit=unit) if enabled and on_terminal() else None
        self._logged = enabled and self._bar is None
        self._interval = interval_s
        self._started = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self._logged and (finished or now - self._last >= self._interval):
            self._last = now
            logger.info(
                progress_line(self.desc, self.done, self.total, now - self._started, self.unit)
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_line(desc: str, done: int, total: int | None, seconds: float, unit: str = "it") -> str:
    """``desc: done/total (rate unit/s, elapsed s, ETA s)``: one plain line."""
    rate = done / seconds if seconds > 0 else 0.0
    line = f"{desc}: {done}/{total if total is not None else '?'} ({rate:.3g} {unit}/s, {seconds:.0f} s"
    if total is not None and rate > 0 and done < total:
        line += f", ETA {(total - done) / rate:.0f} s"
    return line + ")"


def progress(iterable: Iterable[T], desc: str, *, enabled: bool = True) -> Iterator[T]:
    """``iterable`` with its progress reported (see ``Progress``)."""
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    with Progress(total, desc, enabled) as counter:
        for item in iterable:
            yield item
            counter.update()


class _BarOnly(ProgressCallback):
    """The Trainer's progress bar without the metrics dict it writes under it every step."""

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        pass


class _LogLines(TrainerCallback):
    """Off a terminal: a logging step's metrics (``logging_steps``) as one plain line, at most
    one every ``interval_s`` seconds and always the first and the last. The full loss curve
    stays in the trainer's log history (MLflow), whatever this prints."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self._interval = interval_s
        self._started = self._last = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self._started, self._last = time.perf_counter(), None

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if not state.is_local_process_zero or not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        last = state.global_step >= state.max_steps
        if self._last is not None and not last and now - self._last < self._interval:
            return
        self._last = now
        values = ", ".join(
            f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, int | float) and k != "epoch"
        )
        timing = progress_line("step", state.global_step, state.max_steps, now - self._started)
        logger.info("%s: %s", timing, values)


def use_progress_callbacks(trainer: Any) -> None:
    """Replace a Trainer's printing callbacks with ``_BarOnly`` or ``_LogLines``."""
    from transformers import PrinterCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(_BarOnly() if on_terminal() else _LogLines())
