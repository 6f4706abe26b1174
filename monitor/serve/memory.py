"""Freed memory back to the system.

The C allocator (glibc's ``malloc``) keeps what the process frees in its heaps, for later
allocations: the copies a snapshot is encoded from, the consume loop's batch buffers, the Kafka
client's fetched messages (in the heaps of its own threads) stay resident once freed unless some
later allocation happens to reuse their pages. :func:`release` hands the free pages back
(``malloc_trim``); the service calls it after each snapshot it writes, from the writer's thread,
when the largest buffers have just been freed. Without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release() -> bool:
    """Return the allocator's free pages to the system; True if it could and some went back."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
