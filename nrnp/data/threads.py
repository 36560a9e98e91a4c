"""One shared pool of host threads for decoding, resizing and normalising images.

  images = threads.map(decode, paths, chunk=16)        # [decode(p) for p in paths], in order
  threads.for_ranges(fill, n, chunk=256)               # fill(start, stop) over [0, n)
  batches = threads.prefetch(batches, size=2)          # produced in a background thread

PIL, ArrayRecord and numpy release the GIL while they work, so threads scale with cores.
The pool is created once (min(32, CPUs + 4) threads) instead of per batch. Callers are the
main thread or a prefetch thread, never the pool's own tasks, so waiting cannot deadlock.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool, created on first use (under a lock: prefetch threads may race)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(thread_name_prefix='nrnp')
        return _POOL


def for_ranges(fn: Callable[[int, int], None], n: int, chunk: int) -> None:
    """Runs fn(start, stop) over [0, n) in ranges of `chunk`, on the pool; re-raises errors.

    A single range runs inline, without the pool.
    """
    if n <= chunk:
        fn(0, n)
        return
    futures = [pool().submit(fn, s, min(s + chunk, n)) for s in range(0, n, chunk)]
    for f in futures:
        f.result()


def map(fn: Callable, items: Sequence, chunk: int = 16) -> list:  # noqa: A001 (threads.map)
    """[fn(x) for x in items], `chunk` items per pool task, in order."""
    out = [None] * len(items)

    def part(start: int, stop: int) -> None:
        for i in range(start, stop):
            out[i] = fn(items[i])

    for_ranges(part, len(items), chunk)
    return out


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs `iterator` in a background thread, `size` items ahead (overlaps input and compute).

    Exceptions raised by the producer are re-raised in the consumer. Closing (or dropping)
    the returned generator stops the producer thread within ~0.1 s.
    """
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    class Failure:
        def __init__(self, error):
            self.error = error

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # re-raised in the consumer
            put(Failure(e))
            return
        finally:
            close = getattr(iterator, 'close', None)
            if close is not None:  # e.g. a grain pipeline's worker processes
                close()
        put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Failure):
                raise item.error
            yield item
    finally:
        stop.set()
