"""A stage's own peak resident memory (MiB), measured in the process that runs it.

Linux keeps a process's high-water mark (``VmHWM``) and lets the process reset it
(``/proc/self/clear_refs``, value 5), so a stage run in the flow's process reports its own
peak, not the largest of every stage before it. Elsewhere the lifetime peak is all there is.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new high-water mark; False where the system cannot (the peak is then the
    process's lifetime peak)."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """The process's resident-memory high-water mark since the last reset, in MiB."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 1024)
