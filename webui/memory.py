"""Handing memory a request freed back to the system.

glibc keeps what a thread frees in that thread's arena for reuse; a server whose worker threads each
decode a 2048² photo now and then grows by hundreds of MB that nobody uses (40 photos on 8 threads:
+960 MB, back to +0 after `malloc_trim`). Trimming after every request keeps the server's resident
memory at what it actually holds.

Trimming alone does not stop the slow part of that growth: glibc raises its mmap threshold each time a
large block is freed, so later photo-sized blocks come from the arenas and leave holes there that trimming
cannot return. Under the soak's traffic (benchmarks/soak.py) the memory glibc held free grew from 765 to
1 008 MB in four minutes while the memory in use stayed at ~280 MB; with blocks of 1 MB and more always
mapped on their own (and two arenas) it stayed at 15-32 MB and the server's resident floor stopped
rising. So the app sets both when this module is imported, before its threads allocate; a
`MALLOC_MMAP_THRESHOLD_` or `MALLOC_ARENA_MAX` in the environment wins. Elsewhere than glibc this does nothing.
The price: CPU generation at SD 1.5's size runs 1.31× slower (`python -m benchmarks.allocator`, README).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # mallopt parameters (glibc's malloc.h)
M_ARENA_MAX = -8
LARGE_BLOCK = 2**20  # bytes: blocks this large are mapped on their own and unmapped when freed
ARENAS = 2


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def release_freed_memory() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_blocks_on_their_own() -> None:
    """A fixed mmap threshold (glibc then stops raising it) and few arenas: see the module's note."""
    libc = _libc()
    if libc is None:
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")  # the other way to set them; what the environment sets wins
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "glibc.malloc.mmap_threshold" not in tunables:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    if "MALLOC_ARENA_MAX" not in os.environ and "glibc.malloc.arena_max" not in tunables:
        libc.mallopt(M_ARENA_MAX, ARENAS)


map_large_blocks_on_their_own()
