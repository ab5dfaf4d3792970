"""Periodic bounded sweeps of the partitions a worker serves (``docs/runtime.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from ..client import Client
from ..errors import DtaskqError
from ..job_models import JobSweepResult
from ..keys import QueuePartition
from ..ops import DEFAULT_SWEEP_BATCH, SweepResult
from .logs import Fields
from .loop import Loop

DEFAULT_SWEEP_INTERVAL_S = 1.0
LOCK_MS = 100
"""How long a sweep keeps other workers off its partition: long enough for a bounded sweep,
short enough that the first worker to wake when a lease runs out sweeps at once."""
MIN_WAIT_S = 0.02
EXPIRY_SLACK_S = 0.005
"""Past a deadline, so that the lease is over by the server's clock when the sweep runs."""


class _Result(Protocol):
    """What the sweeps of tasks and of jobs both answer."""

    @property
    def more(self) -> bool: ...

    @property
    def locked_out(self) -> bool: ...


Swept = TypeVar("Swept", bound=_Result)


class Sweeper(Loop):
    """Every ``interval_s``, sweeps each partition of the served namespaces and job queues
    whose lock it wins, ``batch`` items per call while more are due.

    Between intervals it also wakes when the earliest lease of its partitions runs out. The lock
    is a key set with NX for LOCK_MS and never deleted: whichever worker sets it first sweeps,
    the others skip the partition. Sweeping is idempotent, so the lock only saves work.
    """

    def __init__(
        self,
        client: Client,
        namespaces: list[str],
        node: str,
        *,
        queues: list[str] | None = None,
        interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        self._client = client
        self._namespaces = namespaces
        self._queues = queues or []
        self._node = node
        self._interval_s = interval_s
        self._batch = batch
        self._log = Fields(node=node)
        super().__init__("dtaskq-sweeper")

    def sweep_once(self) -> float:
        """Sweeps every served partition whose lock this worker wins now. Returns the seconds
        until the earliest lease of these partitions runs out (at most the interval)."""
        next_due = self._interval_s
        for namespace in self._namespaces:
            for partition in self._client.partitions(namespace):
                next_due = min(next_due, self._sweep(namespace, partition.index))
        for queue in self._queues:
            for part in self._client.queue_partitions(queue):
                next_due = min(next_due, self._sweep_queue(part))
        return next_due

    def _sweep_queue(self, part: QueuePartition) -> float:
        """Sweeps one queue partition while more is due; the seconds until its next lease end
        or scheduled job (docs/jobs.md, rule J11)."""

        def sweep() -> JobSweepResult:
            result = self._client.sweep_jobs(part, self._batch, sweeper=self._node, lock_ms=LOCK_MS)
            if result.reclaimed or result.expired:
                self._log.info(
                    "swept: %d job leases ended, %d deadlines missed",
                    result.reclaimed,
                    result.expired,
                    extra={"queue": part.queue},
                )
            return result

        return self._wait_s(self._repeat(sweep).wait_ms)

    def _sweep(self, namespace: str, index: int) -> float:
        """Sweeps one partition while more is due; the seconds until its earliest lease ends."""

        def sweep() -> SweepResult:
            result = self._client.sweep(
                namespace, index, self._batch, sweeper=self._node, lock_ms=LOCK_MS
            )
            if result.reclaimed or result.deleted:
                self._log.info(
                    "swept: %d leases ended, %d tasks deleted",
                    result.reclaimed,
                    result.deleted,
                    extra={"ns": namespace},
                )
            return result

        return self._wait_s(self._repeat(sweep).next_lease_ms)

    def _repeat(self, sweep: Callable[[], Swept]) -> Swept:
        """Calls ``sweep`` while it says more is due, it got the lock, and no stop came; its
        last result."""
        while True:
            result = sweep()
            if not result.more or result.locked_out or self.stopping.is_set():
                return result

    def _wait_s(self, wait_ms: int | None) -> float:
        """The seconds until a partition needs sweeping again, from what its sweep answered.
        A lease already past its deadline is another worker's to sweep (it holds the lock):
        look again shortly rather than spin."""
        if wait_ms is None:
            return self._interval_s
        return max(MIN_WAIT_S, wait_ms / 1000)

    def run(self) -> None:
        """Sweeps every interval, and as soon as a lease runs out: a dead node's units then
        come back at once even when no claim ends their leases on the way."""
        wait = self._interval_s
        while not self.stopping.wait(wait + EXPIRY_SLACK_S):
            wait = self._interval_s
            try:
                wait = self.sweep_once()
            except DtaskqError as exc:
                self._log.warning("sweep failed: %s", exc)
            except Exception:  # keep sweeping at the next interval
                self._log.exception("sweep failed")
