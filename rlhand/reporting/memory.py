"""Peak memory figures for the metrics, and freeing cached memory between phases."""

import resource
import sys

import torch


def memory_stats(device: torch.device) -> dict[str, float]:
    """Peak resident set size of this process so far, and on CUDA the peak allocated this iteration."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    stats = {"memory/rss_peak_mb": peak_kb / (2**20 if sys.platform == "darwin" else 2**10)}
    if device.type == "cuda":
        stats["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return stats


def release_cached_memory(device: torch.device, enabled: bool) -> None:
    """Return the CUDA caching allocator's free blocks at a phase boundary. Only there: inside a phase
    the blocks are reused at once, and emptying the cache would only add allocation stalls."""
    if enabled and device.type == "cuda":
        torch.cuda.empty_cache()
