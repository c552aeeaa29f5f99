"""Process-wide CPU settings the service applies at start: glibc's malloc arenas and the thread
pool that video decoding and encoding run on.

glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory freed
in one arena is not reused by another: with onnxruntime calls, decodes and encodes spread over
many threads, the process's RSS keeps climbing as each new thread's arena fills with its own
high-water mark (docs/benchmarks.md, Memory). Capping the arenas bounds that growth.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def cap_malloc_arenas(arenas: int) -> bool:
    """Hold glibc to `arenas` malloc arenas (0: leave glibc's default); False where there is
    no glibc (musl, macOS) or it refused."""
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        done = bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.warning("could not cap malloc arenas at %d (no glibc mallopt here)", arenas)
    return done


def use_io_threads(threads: int) -> None:
    """Run `asyncio.to_thread` work (video decoding and encoding) on `threads` threads of the
    running loop (0: asyncio's default pool, min(32, cores + 4))."""
    if threads > 0:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(threads, thread_name_prefix="vdis-io"))
