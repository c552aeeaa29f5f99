"""service/memory.py: the malloc arena cap and the video IO thread pool."""

import asyncio
import platform
import threading

import pytest

from service import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_arena_cap_is_taken_by_glibc():
    assert memory.cap_malloc_arenas(2) is True
    assert memory.cap_malloc_arenas(0) is False  # 0: glibc's default, nothing is set


def test_video_io_runs_on_the_threads_asked_for():
    async def main():
        memory.use_io_threads(2)
        names = await asyncio.gather(*(asyncio.to_thread(
            lambda: (threading.current_thread().name, __import__("time").sleep(0.05))[0])
            for _ in range(6)))
        return set(names)

    names = asyncio.run(main())
    assert len(names) == 2 and all(n.startswith("vdis-io") for n in names)
