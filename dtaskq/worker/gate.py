"""The worker's concurrency limit, which also closes when the worker stops claiming."""

from __future__ import annotations

import threading

_POLL_S = 0.1


class Gate:
    """At most ``slots`` units run at once in one worker, across all its tasks.

    Closing the gate (on shutdown) makes every waiting and later :meth:`enter` fail, so that
    no new unit is claimed; units already running keep their slots until they end.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._slots = threading.Semaphore(slots)
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        """True once the worker stopped claiming."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stops handing out slots."""
        self._closed.set()

    def enter(self) -> bool:
        """Waits for a free slot; False (and no slot taken) once the gate is closed."""
        while not self._closed.is_set():
            if self._slots.acquire(timeout=_POLL_S):
                if not self._closed.is_set():
                    return True
                self._slots.release()
        return False

    def leave(self) -> None:
        """Gives back a slot taken by :meth:`enter`."""
        self._slots.release()
