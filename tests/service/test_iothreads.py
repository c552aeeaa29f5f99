"""service/iothreads.py: the video IO thread pool."""

import asyncio
import threading

from service import iothreads


def test_video_io_runs_on_the_threads_asked_for():
    async def main():
        assert iothreads.use_io_threads(2) == 2
        names = await asyncio.gather(*(asyncio.to_thread(
            lambda: (threading.current_thread().name, __import__("time").sleep(0.05))[0])
            for _ in range(6)))
        return set(names)

    names = asyncio.run(main())
    assert len(names) == 2 and all(n.startswith("vdis-io") for n in names)


def test_by_default_one_io_thread_per_core():
    from service.engine.local import usable_cores

    async def main():
        return iothreads.use_io_threads()

    assert asyncio.run(main()) == usable_cores()
