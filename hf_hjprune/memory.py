"""Resident memory (RSS) of the current process: what a training process needs from the machine."""

from __future__ import annotations

import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def peak_rss_mib() -> float | None:
    """The highest resident set size of this process so far, in MiB (None where unknown)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float | None:
    """The resident set size of this process now, in MiB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None
