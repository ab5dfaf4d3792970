"""A scheduler's view of its namespace's event streams (``docs/runtime.md``)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from redis.crc import key_slot

from ..client import Client
from ..errors import DtaskqError
from ..keys import Partition
from .logs import Fields

BLOCK_MS = 250
"""How long one read of the streams blocks: also how soon a reader notices a stop."""
RETRY_S = 0.5
"""How long a reader waits after a failed read."""


@dataclass(frozen=True)
class Event:
    """What a scheduler needs of one entry: the task it names, its kind, and its node field
    ("" for kinds without one)."""

    task_id: str
    kind: str
    node: str


class EventFeed:
    """Follows the event streams of a namespace's partitions. Each stream is read by a blocking
    XREAD on the server that holds it: on a Redis Cluster, one reader thread per slot the
    streams live in (a read never spans slots); on a single server, one for all. What they read
    waits in a queue for :meth:`take`.

    A stream is read from its newest entry at the time it is followed: a scheduler follows its
    partitions before it resyncs, so that nothing between the two goes unseen.
    """

    def __init__(self, client: Client, log: Fields) -> None:
        self._client = client
        self._log = log
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._groups: dict[int, dict[str, bytes]] = {}
        self._threads: list[threading.Thread] = []

    def follow(self, partitions: list[Partition]) -> None:
        """Starts reading the streams of ``partitions`` not followed yet."""
        for partition in partitions:
            key = partition.events_key()
            group = key_slot(key.encode()) if self._client.cluster else 0
            with self._lock:
                if key in self._groups.get(group, {}):
                    continue
            start = self._client.latest_event_id(key)
            with self._lock:
                positions = self._groups.setdefault(group, {})
                positions[key] = start
                if len(positions) > 1:
                    continue  # the group's reader picks it up at its next read
            thread = threading.Thread(
                target=self._read, args=(group,), name=f"dtaskq-events-{group}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    @property
    def following(self) -> bool:
        """True once some stream is followed."""
        with self._lock:
            return bool(self._groups)

    def take(self, timeout: float) -> list[Event]:
        """What the readers read since the last call, waiting up to ``timeout`` seconds for
        something when nothing is waiting."""
        try:
            found = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self._events.get_nowait())
            except queue.Empty:
                return found

    def stop(self) -> None:
        """Stops the readers (each within one read)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def _read(self, group: int) -> None:
        while not self._stopping.is_set():
            with self._lock:
                positions = dict(self._groups[group])
            try:
                read = self._client.read_events(positions, BLOCK_MS)
            except DtaskqError as exc:
                self._log.warning("reading events failed: %s", exc)
                self._stopping.wait(RETRY_S)
                continue
            except Exception:  # the scheduler's resync still finds what changed
                self._log.exception("reading events failed")
                self._stopping.wait(RETRY_S)
                continue
            for key, entries in read:
                for _, fields in entries:
                    self._events.put(
                        Event(
                            fields[b"task"].decode(),
                            fields[b"kind"].decode(),
                            fields.get(b"node", b"").decode(),
                        )
                    )
                with self._lock:
                    self._groups[group][key] = entries[-1][0]
