"""Process-wide settings the command line makes before any work: glibc's allocator keeps freed memory.

By default glibc serves each allocation above 128 KiB (a threshold it raises as such blocks are freed) with a fresh
`mmap` and hands freed memory back to the system, so the next forward's activations (a few MiB each) fault their
pages in again, zero-filled. In a batched prefill of the quickstart-shape model (16 prompts x 60 tokens, 2 threads)
that was 3,000-4,800 page faults and about 15% of the forward; with the settings below, 100-300. Every thread also
allocates from the one main arena: a thread's own arena (the serving engine runs in one) gives pages back too.
Set HYTRON_MALLOC_TUNING=0 to leave the allocator as it is (e.g. when RSS must shrink after a peak).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to this come from the heap, and are reused when freed
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top before any is given back


def tune_malloc() -> bool:
    """Apply the settings above (glibc only; must run before other threads allocate); True when applied."""
    if os.environ.get("HYTRON_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(opt, value) == 1 for opt, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))
