"""Peak memory figures for the metrics, and freeing cached memory between phases.

`memory/rss_peak_mb` is the peak resident set size *since the previous row* (one PPO iteration):
Linux lets a process reset its own high-water mark (VmHWM) by writing 5 to /proc/self/clear_refs.
A process-lifetime peak would grow from one run to the next in the same process (tests, sweeps on
joblib) and say nothing about the iteration it is logged with. Where the reset is not available
(macOS, a locked-down /proc) the figure falls back to the lifetime peak, and says so once.
"""

import re
import resource
import sys
import warnings
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)
_warned = False


def reset_peak_memory(device: torch.device) -> None:
    """Start a new measuring window for rss_peak_mb (and CUDA's peak allocated memory)."""
    global _warned
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        if not _warned:
            warnings.warn("memory/rss_peak_mb: this system cannot reset the peak RSS; it reports the process's lifetime peak", stacklevel=2)
            _warned = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_stats(device: torch.device) -> dict[str, float]:
    """Peaks since the last reset_peak_memory (which this calls, so each row gets its own window)."""
    stats = {"memory/rss_peak_mb": _rss_peak_kib() / 2**10}
    if device.type == "cuda":
        stats["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    reset_peak_memory(device)
    return stats


def _rss_peak_kib() -> float:
    try:
        found = _HWM.search(_STATUS.read_text())
    except OSError:
        found = None
    if found:
        return float(found.group(1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**10 if sys.platform == "darwin" else float(peak)


def release_cached_memory(device: torch.device, enabled: bool) -> None:
    """Return the CUDA caching allocator's free blocks at a phase boundary. Only there: inside a phase
    the blocks are reused at once, and emptying the cache would only add allocation stalls."""
    if enabled and device.type == "cuda":
        torch.cuda.empty_cache()
