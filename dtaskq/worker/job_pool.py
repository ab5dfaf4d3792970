"""The threads that run a worker's sync job handlers (docs/runtime.md, "Jobs")."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

log = logging.getLogger("dtaskq.worker")

Work = Callable[[], None]

WAKE_BACKLOG_S = 0.002
"""How long the queued items may keep the awake threads busy before another thread wakes."""
SLOW_S = 0.1
"""What an item is assumed to take until some have run: at first every item gets a thread."""


class SyncPool:
    """``size`` daemon threads taking work from one queue, so that at most ``size`` sync
    handlers run at once, and a handler still blocked when the worker exits does not keep
    the process alive.

    Work arrives in batches. Only one idle thread is woken per batch; a thread that takes an
    item wakes another while the items left would take the awake threads longer than
    WAKE_BACKLOG_S, judged by how long recent items took. Short handlers are thus run by the
    few threads that are awake, without a thread switch per job (threads contending for the
    queue cost more than the handlers), while blocking ones spread over as many threads as
    they need."""

    def __init__(self, size: int, name: str) -> None:
        self._queue: deque[Work] = deque()
        self._cond = threading.Condition()
        self._idle = 0
        self._stopping = False
        self._seconds_per_item = SLOW_S
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True) for n in range(size)
        ]

    def start(self) -> None:
        """Starts the threads; work submitted before waits for them."""
        for thread in self._threads:
            thread.start()

    def submit(self, work: Iterable[Work]) -> None:
        """Queues every item of ``work``."""
        with self._cond:
            self._queue.extend(work)
            if self._idle:
                self._cond.notify()

    def stop(self) -> None:
        """Lets the threads end once the queue is empty; does not wait for blocked ones."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        queue, cond = self._queue, self._cond
        while True:
            with cond:
                while not queue:
                    if self._stopping:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                work = queue.popleft()
                awake = len(self._threads) - self._idle
                if self._idle and len(queue) * self._seconds_per_item > WAKE_BACKLOG_S * awake:
                    cond.notify()
            began = time.perf_counter()
            try:
                work()
            except Exception:  # the thread must outlive any surprise, or a slot is lost
                log.exception("job runner failed")
            # A rough running average is enough to tell short handlers from blocking ones.
            took = time.perf_counter() - began
            self._seconds_per_item += (took - self._seconds_per_item) / 8
