"""A background thread with a stop signal: what the scheduler, heartbeats and sweeper share."""

from __future__ import annotations

import threading


class Loop:
    """Runs :meth:`run` on a daemon thread until :meth:`stop`; ``run`` waits on
    ``self.stopping`` between passes so that a stop is prompt."""

    def __init__(self, name: str) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Asks the thread to stop and waits for it."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def run(self) -> None:
        """The thread's body."""
        raise NotImplementedError
