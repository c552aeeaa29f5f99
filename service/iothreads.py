"""The thread pool that video decoding and encoding run on (asyncio.to_thread's).

asyncio's default pool has cores + 4 threads: on 2 cores six decodes and encodes ran at once
beside the model's calls, each 1.5-2x slower than alone, and the requests in flight all
finished late. One thread per core keeps each call fast and the rest queued.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from service.engine.local import usable_cores


def use_io_threads(threads: int = 0) -> int:
    """Run `asyncio.to_thread` work on `threads` threads of the running loop (0: one per usable
    core); returns how many."""
    threads = threads or usable_cores()
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(threads, thread_name_prefix="vdis-io"))
    return threads
