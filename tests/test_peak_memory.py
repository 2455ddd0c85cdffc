"""A stage's peak memory is its own: the high-water mark restarts before each stage."""

from __future__ import annotations

from tasks.peak_memory import peak_rss_mib, reset_peak_rss


def _touch(mib: int) -> bytes:
    return b"\x01" * (mib * 2**20)  # every page written, so resident


def test_the_peak_rises_with_an_allocation_and_falls_after_a_reset() -> None:
    assert reset_peak_rss(), "Linux restarts VmHWM through /proc/self/clear_refs"
    before = peak_rss_mib()
    block = _touch(256)
    during = peak_rss_mib()
    assert during >= before + 200
    del block
    assert reset_peak_rss()
    assert peak_rss_mib() < during - 200  # the next stage does not inherit this one's peak
