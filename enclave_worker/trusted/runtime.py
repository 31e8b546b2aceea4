"""Process-level tuning for training: keep freed tensor memory in the heap.

A DP-SGD step allocates more large temporaries than an ordinary step (per-sample convolution
gradients, the grouped convolution's workspace, the noise vector). With glibc's defaults every
buffer above the dynamic mmap threshold is a fresh ``mmap`` that is page-faulted and zeroed
again on every step and ``munmap``-ed when freed; measured on this machine at batch 256 that
alone took the CNN's DP step from about 8.7 to 10.6–11.3 ms while the ordinary step stayed at
about 6.0 ms (``docs/models.md``). PyTorch's CPU performance guide gives the same advice for the
same reason (use a caching allocator such as jemalloc or tcmalloc); raising glibc's thresholds
gets the effect without a preloaded library.

The tuning applies to the whole process, so a benchmark that compares DP with non-private
training in one process runs both under it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
"""Allocations below this come from the heap and are reused; larger ones (whole data sets) are still
mapped. VGG-9's activations at batch 256 are 67 MB each: with a 64 MiB threshold they were mapped
afresh every step (DP/non-private 1.42–1.48; 1.18–1.21 at this threshold)."""
TRIM_THRESHOLD = -1
"""Free memory at the top of the heap is never returned to the system (``-1``: glibc's "never
trim"): the heap stays at the process's peak, which a trainer plans for anyway. A bound of
256 MiB returned most of a ResNet-32 step's 2.1 GiB at its end, so every step page-faulted it
back: its DP/non-private step ratio was 1.77–1.90 with that bound and 1.25 without trimming
(the non-private step alike at 0.40 s; ``docs/models.md``)."""
TOP_PAD = 16 << 20
"""Extra heap requested per ``brk`` so that a step's temporaries do not grow the heap one call at a time."""

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (idempotent).

    Returns:
        Whether the tuning is in effect: ``False`` on a C library other than glibc, where the
        process keeps its allocator's defaults.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("mallopt is not available; the allocator keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    )
    _applied = ok
    return ok
