"""The job side of a worker (docs/runtime.md, "Jobs"): claims jobs of its queues up to its
free slots, runs them, and reports each attempt with the next claim.

One thread at a time makes claim calls (see _pump). It claims from the partitions that may
have ready jobs, round-robin, as many jobs as slots are free; a call that answers fewer marks
its partition empty. Idle, the worker blocks on the wake markers (one waiter per cluster slot)
and never polls. Finished attempts are reported by the next call, which also claims the jobs
that take their slots: under load one call acknowledges a batch and fetches the next.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.crc import key_slot

from ..client import Client
from ..errors import DtaskqError
from ..handlers import Handler, Registry
from ..job_models import ClaimedJob, job_lease_ms
from ..job_ops import MAX_CLAIM, Report
from ..keys import QueuePartition
from .job_exec import (
    Attempt,
    EventLoopThread,
    prepare,
    renew_period_s,
    run_async,
    run_sync,
)
from .job_pool import SyncPool

log = logging.getLogger("dtaskq.worker")

WAIT_S = 1.0
"""The longest blocking read of a waiter, so that it notices a stop."""
RECHECK_WAITS = 5
"""An idle worker tries a claim after this many empty waits, whatever the markers say: a
marker taken by a worker that died before it claimed is not waited for forever."""
OUTAGE_PAUSE_S = 0.5
HELD, LOST, CANCELLED = 0, 1, 2


class JobRunner:
    """Runs the jobs of ``queues`` with the handlers of ``registry`` on at most ``slots`` at
    once: sync handlers on daemon threads, ``async def`` handlers on one event loop."""

    def __init__(
        self, client: Client, registry: Registry, queues: list[str], node: str, slots: int
    ) -> None:
        self._client = client
        self._registry = registry
        self._queues = queues
        self._node = node
        self._slots = slots
        self._cond = threading.Condition()
        self._free = slots
        self._claiming = True
        self._stopped = False
        self._passing = False
        self._pumping = threading.Lock()
        self._parts: list[QueuePartition] = []
        self._hinted: set[int] = set()
        self._due: dict[int, float] = {}
        self._reports: dict[int, list[Report]] = {}
        self._running: dict[tuple[int, str], Attempt] = {}
        self._next = 0
        self._pool = SyncPool(slots, "dtaskq-job")
        self._threads: list[threading.Thread] = []
        self._loop: EventLoopThread | None = None

    @property
    def running(self) -> int:
        """Attempts running now."""
        with self._cond:
            return len(self._running)

    @property
    def free_slots(self) -> int:
        """Slots no attempt holds: an attempt given up at its timeout holds its slot until
        its thread returns."""
        with self._cond:
            return self._free

    def start(self) -> None:
        """Finds the queues' partitions and starts the threads."""
        self._parts = [part for q in self._queues for part in self._client.queue_partitions(q)]
        self._hinted = set(range(len(self._parts)))
        if any(h.is_async for h in self._registry):
            self._loop = EventLoopThread()
        self._pool.start()
        groups: dict[int, list[int]] = {}
        for i, part in enumerate(self._parts):
            slot = key_slot(part.wake_key().encode()) if self._client.cluster else 0
            groups.setdefault(slot, []).append(i)
        self._spawn("dtaskq-jobs", self._feed)
        for members in groups.values():
            self._spawn("dtaskq-job-waiter", partial(self._wait_for_markers, members))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- claiming and reporting ---------------------------------------------------------------

    def _feed(self) -> None:
        """The feeder thread: makes the passes that fall due while no other thread makes
        them (timers, timeouts, reports of async handlers, a stop's last reports)."""
        while True:
            with self._cond:
                while True:
                    wanted, wake_at = self._wanted(time.monotonic())
                    if wanted:
                        break
                    if self._stopped:
                        return
                    self._cond.wait(max(0.0, wake_at - time.monotonic()))
            self._pump(block=True)

    def _pump(self, block: bool = False) -> bool:
        """Makes passes while reports wait or a partition may have jobs for free slots. One
        thread at a time makes them: the feeder, or whichever thread has something to send
        (a waiter that took a wake marker, a sync handler's thread that just ended its job),
        which saves a thread switch on the way from a wake-up to a claim, and from an ended
        job to its report. False when another thread was at it (it then sends what this one
        would have, or the feeder does)."""
        if not self._pumping.acquire(blocking=block):
            return False
        try:
            while True:
                with self._cond:
                    wanted, _ = self._wanted(time.monotonic())
                    if not wanted:
                        return True
                    self._passing = True
                    reports, self._reports = self._reports, {}
                    n = len(self._parts)
                    self._next = (self._next + 1) % n
                    order = sorted(wanted, key=lambda i: (i - self._next) % n)
                for i in order:
                    self._claim(i, reports.pop(i, []))
                for i, left in reports.items():  # only when the runner stopped claiming midway
                    self._requeue_reports(i, left)
        finally:
            with self._cond:
                self._passing = False
                self._cond.notify_all()
            self._pumping.release()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no job runs, every report was sent, and every partition answered that
        it has no ready job (jobs scheduled for later do not count); True when it got there
        within ``timeout`` seconds. What a burst-mode worker waits for."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running or self._reports or self._hinted or self._passing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, WAIT_S))
            return True

    def _wanted(self, now: float) -> tuple[set[int], float]:
        """(Holding the lock) the partitions a pass would call now: those with reports to send
        and, with a free slot, those that may have ready jobs; and when to look again."""
        for i, at in list(self._due.items()):
            if at <= now:
                self._hinted.add(i)
                del self._due[i]
        wake_at = self._expire_timeouts(now)
        claimable = self._hinted if self._claiming and self._free > 0 else set()
        return claimable | set(self._reports), min([wake_at, now + WAIT_S, *self._due.values()])

    def _claim(self, i: int, reports: list[Report]) -> None:
        with self._cond:
            ask = min(self._free, MAX_CLAIM) if self._claiming and i in self._hinted else 0
        if not ask and not reports:
            return
        try:
            claim = self._client.claim_jobs(self._parts[i], self._node, ask, reports)
        except DtaskqError as exc:
            log.warning("job claim failed: %s", exc, extra={"queue": self._parts[i].queue})
            self._requeue_reports(i, reports)
            time.sleep(OUTAGE_PAUSE_S)
            return
        turned_away = len(claim.settled) - sum(claim.settled)
        if turned_away:
            log.info("%d job reports turned away (lease lost or job cancelled)", turned_away)
        with self._cond:
            self._free -= len(claim.jobs)
            if len(claim.jobs) < ask:
                self._hinted.discard(i)
            if claim.next_due_ms is not None:
                at = time.monotonic() + claim.next_due_ms / 1000
                self._due[i] = min(at, self._due.get(i, at))
        if claim.jobs:
            self._start(i, claim.jobs)

    def _requeue_reports(self, i: int, reports: list[Report]) -> None:
        """Keeps reports a failed call may not have delivered: a second delivery of one is
        turned away by the job's state, so sending it again is safe."""
        if reports:
            with self._cond:
                self._reports.setdefault(i, [])[:0] = reports

    def _wait_for_markers(self, members: list[int]) -> None:
        parts = [self._parts[i] for i in members]
        empty_waits = 0
        while True:
            with self._cond:
                while not self._stopped and not (
                    self._claiming and self._free > 0 and not self._hinted & set(members)
                ):
                    self._cond.wait(WAIT_S)
                if self._stopped:
                    return
            try:
                woken = self._client.wait_for_jobs(parts, WAIT_S)
            except DtaskqError as exc:
                log.warning("waiting for jobs failed: %s", exc)
                time.sleep(OUTAGE_PAUSE_S)
                continue
            empty_waits = 0 if woken else empty_waits + 1
            with self._cond:
                if woken is not None:
                    self._hinted.add(self._parts.index(woken))
                elif empty_waits >= RECHECK_WAITS:
                    empty_waits = 0
                    self._hinted.update(members)
                else:
                    continue
                self._cond.notify_all()
            self._pump()

    # -- running attempts ---------------------------------------------------------------------

    def _start(self, i: int, jobs: list[ClaimedJob]) -> None:
        """Starts the attempts of a claim's jobs: sync ones on the pool, async ones on the
        loop, each kind handed over once for the whole batch."""
        attempts = [Attempt(job, partial(self._heartbeat_one, i)) for job in jobs]
        with self._cond:
            for attempt in attempts:
                self._running[(i, attempt.job.id)] = attempt
        sync: list[Callable[[], None]] = []
        started: list[tuple[Attempt, Handler[Any, Any], Any, Any]] = []
        for attempt in attempts:
            prepared = prepare(attempt, self._registry)
            if isinstance(prepared, Report):
                self._finish(i, attempt, prepared)
            elif prepared[0].is_async and self._loop is not None:
                attempt.is_async = True
                started.append((attempt, *prepared))
            else:
                sync.append(partial(self._run_sync, i, attempt, *prepared))
        if sync:
            self._pool.submit(sync)
        if started and self._loop is not None:
            loop = self._loop.loop
            loop.call_soon_threadsafe(self._start_async, loop, i, started)

    def _start_async(
        self,
        loop: asyncio.AbstractEventLoop,
        i: int,
        started: list[tuple[Attempt, Handler[Any, Any], Any, Any]],
    ) -> None:
        for attempt, handler, args, kwargs in started:
            attempt.future = loop.create_task(self._run_async(i, attempt, handler, args, kwargs))

    async def _run_async(
        self, i: int, attempt: Attempt, handler: Handler[Any, Any], args: Any, kwargs: Any
    ) -> None:
        report: Report | None = None
        try:
            report = await run_async(attempt, handler, args, kwargs)
        finally:  # a cancelled job reports nothing: its report would be turned away
            self._finish(i, attempt, report)

    def _run_sync(
        self, i: int, attempt: Attempt, handler: Handler[Any, Any], args: Any, kwargs: Any
    ) -> None:
        self._finish(i, attempt, run_sync(attempt, handler, args, kwargs))
        self._pump()

    def _finish(self, i: int, attempt: Attempt, report: Report | None) -> None:
        """An attempt ended: its slot is free, and its report goes with the next claim
        unless the worker gave up on it."""
        with self._cond:
            key = (i, attempt.job.id)
            if self._running.get(key) is attempt:
                del self._running[key]
            if report is not None and not attempt.abandoned:
                self._reports.setdefault(i, []).append(report)
            self._free += 1
            self._cond.notify_all()

    def _expire_timeouts(self, now: float) -> float:
        """Fails the sync attempts past their timeout (holding the lock): the report goes now,
        the late result is dropped, and the slot stays busy until the thread returns. Answers
        when the next timeout falls due."""
        next_at = now + WAIT_S
        for (i, _), attempt in list(self._running.items()):
            if attempt.ends_at is None or attempt.abandoned or attempt.is_async:
                continue
            if attempt.ends_at <= now:
                attempt.give_up()
                del self._running[(i, attempt.job.id)]
                self._reports.setdefault(i, []).append(attempt.timed_out())
            else:
                next_at = min(next_at, attempt.ends_at)
        return next_at

    # -- leases -------------------------------------------------------------------------------

    def renew(self) -> None:
        """Renews this node's lease in each partition where one of its running jobs is due (a
        third of the shortest lease after the last renewal, at least every second), with
        every job it runs there; tells handlers whose job was cancelled or lost. Called by
        the heartbeat thread."""
        now = time.monotonic()
        by_part: dict[int, list[Attempt]] = {}
        with self._cond:
            for (i, _), attempt in self._running.items():
                by_part.setdefault(i, []).append(attempt)
        for i, attempts in by_part.items():
            if min(a.renew_at for a in attempts) <= now:
                self._renew(i, attempts, now)

    def _renew(self, i: int, attempts: list[Attempt], now: float) -> list[int]:
        claims = [(a.job.id, a.job.token) for a in attempts]
        lease = min(job_lease_ms(a.job.timeout_ms) for a in attempts)
        answers = self._client.heartbeat_jobs(self._parts[i], self._node, claims, lease)
        for attempt, answer in zip(attempts, answers, strict=True):
            if answer == HELD:
                attempt.renew_at = now + renew_period_s(attempt.job.timeout_ms)
            else:
                self._give_up(i, attempt, "cancelled" if answer == CANCELLED else "lost")
        return answers

    def _heartbeat_one(self, i: int, attempt: Attempt) -> bool:
        return self._renew(i, [attempt], time.monotonic()) == [HELD]

    def _give_up(self, i: int, attempt: Attempt, why: str) -> None:
        """Stops caring for an attempt whose job is no longer its own: its handler is told
        (an async one is cancelled) and its outcome will be dropped."""
        log.info("job %s %s while running", attempt.job.id, why)
        with self._cond:
            attempt.give_up()
            if self._running.get((i, attempt.job.id)) is attempt:
                del self._running[(i, attempt.job.id)]
        if attempt.is_async and self._loop is not None:
            self._loop.loop.call_soon_threadsafe(attempt.cancel_task)

    # -- stopping -----------------------------------------------------------------------------

    def stop_claiming(self) -> None:
        """Claims no more jobs; running ones go on and are still reported."""
        with self._cond:
            self._claiming = False
            self._cond.notify_all()

    def wait_running(self, deadline: float) -> None:
        """Waits until no attempt runs or the monotonic ``deadline`` passes."""
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        """Releases the jobs still running (their attempts are given up: others take them at
        once), sends the reports that wait, and stops the threads."""
        self.stop_claiming()
        with self._cond:
            left = list(self._running.items())
        by_part: dict[int, list[Attempt]] = {}
        for (i, _), attempt in left:
            by_part.setdefault(i, []).append(attempt)
            self._give_up(i, attempt, "released at shutdown")
        for i, attempts in by_part.items():
            try:
                claims = [(a.job.id, a.job.token) for a in attempts]
                released = self._client.release_jobs(self._parts[i], self._node, claims)
                log.info("released %d jobs", sum(released))
            except DtaskqError as exc:
                log.warning("release failed, the leases will run out instead: %s", exc)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._pool.stop()
        for thread in self._threads:
            if thread.name in ("dtaskq-jobs", "dtaskq-job-waiter"):
                thread.join()
        if self._loop is not None:
            self._loop.stop()
