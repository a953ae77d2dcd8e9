"""Resident memory (RSS) of the current process: what a training process needs from the machine."""

from __future__ import annotations

import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def _status_mib(field: str) -> float | None:
    """A `/proc/self/status` memory field (Linux), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def peak_rss_mib() -> float | None:
    """The highest resident set size of this process so far, in MiB (None where unknown).

    On Linux this is `VmHWM`, the high-water mark of this program's own memory: `getrusage`'s
    `ru_maxrss` would also count the parent's memory at the time it forked this process, which a
    process started by `fork` + `exec` (multiprocessing's spawn, torchrun) inherits.
    """
    peak = _status_mib("VmHWM")
    if peak is not None or resource is None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def current_rss_mib() -> float | None:
    """The resident set size of this process now, in MiB (Linux; None elsewhere)."""
    return _status_mib("VmRSS")
