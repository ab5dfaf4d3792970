"""The claims a worker holds: what its heartbeats renew and what it releases on shutdown."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..models import TaskRef


@dataclass(frozen=True)
class Claim:
    """One unit this node holds under a fencing token."""

    ref: TaskRef
    unit: str
    token: int
    lease_ms: int


class Claims:
    """A thread-safe set of held claims, at most one per (task version, unit).

    Units whose lease was found lost are remembered until their holder reports, so that the
    handler running them can learn it (:meth:`is_lost`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[TaskRef, str], Claim] = {}
        self._lost: set[tuple[TaskRef, str]] = set()
        self._finished: set[tuple[TaskRef, str]] = set()

    def add(self, claim: Claim) -> None:
        """Holds ``claim``, replacing any earlier claim of the same unit."""
        with self._lock:
            self._held[claim.ref, claim.unit] = claim
            self._lost.discard((claim.ref, claim.unit))

    def remove(self, ref: TaskRef, unit: str) -> None:
        """Forgets ``unit`` (reported terminal, released, or its holder gave up)."""
        with self._lock:
            self._held.pop((ref, unit), None)
            self._lost.discard((ref, unit))
            self._finished.discard((ref, unit))

    def finish(self, ref: TaskRef, unit: str) -> None:
        """Marks ``unit`` done here but not reported yet (its runner thread reports it with
        its next claim): a shutdown completes it rather than give it back."""
        with self._lock:
            if (ref, unit) in self._held:
                self._finished.add((ref, unit))

    def finished(self, claim: Claim) -> bool:
        """True when ``claim``'s unit is done here but not reported yet."""
        with self._lock:
            return (claim.ref, claim.unit) in self._finished

    def lose(self, ref: TaskRef, unit: str) -> None:
        """Marks ``unit`` lost: a heartbeat found its lease gone."""
        with self._lock:
            if self._held.pop((ref, unit), None) is not None:
                self._lost.add((ref, unit))
            self._finished.discard((ref, unit))

    def is_lost(self, ref: TaskRef, unit: str) -> bool:
        """True when a heartbeat found the lease of ``unit`` gone."""
        with self._lock:
            return (ref, unit) in self._lost

    def drop_task(self, ref: TaskRef) -> None:
        """Forgets every claim of a task version that left STARTED."""
        with self._lock:
            for key in [k for k in self._held if k[0] == ref]:
                del self._held[key]
            self._lost = {k for k in self._lost if k[0] != ref}
            self._finished = {k for k in self._finished if k[0] != ref}

    def snapshot(self, ref: TaskRef | None = None) -> list[Claim]:
        """The claims held now, of one task version or of all."""
        with self._lock:
            return [c for c in self._held.values() if ref is None or c.ref == ref]

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
