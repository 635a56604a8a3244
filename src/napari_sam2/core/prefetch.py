"""Compute items by index on demand while one background thread prepares the next few in the direction of travel."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PrefetchCache(Generic[T]):
    """Holds at most ``depth + 1`` items: the last one asked for and the ``depth`` that follow it.

    "Follow" means in the direction of the last two requests, so a reverse pass prefetches backwards.
    ``depth=0`` starts no thread and keeps only the last item.
    """

    def __init__(self, compute: Callable[[int], T], length: int, depth: int = 2):
        if depth < 0:
            raise ValueError(f"prefetch depth must be 0 or more, got {depth}")
        self._compute = compute
        self._length = length
        self._depth = depth
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._last_index: int | None = None
        self._direction = 1

    def get(self, index: int) -> T:
        with self._lock:
            self._follow(index)
            future = self._futures.get(index)
            owns_computation = future is None
            if owns_computation:
                future = self._started_future()
                self._futures[index] = future
            self._schedule_ahead(index)

        if owns_computation:
            # Computed here rather than queued behind prefetch work: the caller is waiting for this one.
            try:
                future.set_result(self._compute(index))
            except BaseException as error:
                future.set_exception(error)
        try:
            return future.result()
        except BaseException:
            # Do not keep a failure: a later request for the same index tries again.
            with self._lock:
                if self._futures.get(index) is future:
                    del self._futures[index]
            raise

    def close(self) -> None:
        """Stop the background thread and drop every prepared item; later requests are computed directly."""
        with self._lock:
            self._depth = 0
            executor, self._executor = self._executor, None
            self._futures.clear()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def cached_indices(self) -> list[int]:
        """Indices held now (prepared or being prepared); for tests and diagnostics."""
        with self._lock:
            return sorted(self._futures)

    def _follow(self, index: int) -> None:
        if self._last_index is not None and index != self._last_index:
            self._direction = 1 if index > self._last_index else -1
        self._last_index = index

    def _schedule_ahead(self, index: int) -> None:
        ahead = [index + step * self._direction for step in range(1, self._depth + 1)]
        ahead = [i for i in ahead if 0 <= i < self._length]
        keep = {index, *ahead}
        for stale in [i for i in self._futures if i not in keep]:
            self._futures.pop(stale).cancel()  # a no-op for one already running: it finishes and is dropped
        if not ahead:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-sam2-prefetch")
        for i in ahead:
            if i not in self._futures:
                self._futures[i] = self._executor.submit(self._compute, i)

    @staticmethod
    def _started_future() -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()  # running: eviction cannot cancel it under the caller
        return future
