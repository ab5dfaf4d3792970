"""Burst mode (docs/testing.md): a real worker that runs until its queues are drained, then
stops and says what it did.

:func:`run_burst` starts a :class:`~dtaskq.Worker` for a registry's queues on the caller's
client, waits until no job of those queues runs, is ready or (by default) is scheduled, stops
the worker and returns a :class:`BurstResult`. The counts come from the server's answers to
the reports the worker sent: an attempt counts once the server has settled it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .. import validate
from ..client import Client
from ..errors import BurstTimeout, DtaskqError, InvalidArgument
from ..handlers import Registry
from ..job_handle import Job
from ..job_models import DEFAULT_LEASE_MS, ClaimedJob, JobClaim, JobStatus
from ..job_ops import Report
from ..keys import QueuePartition
from ..worker.job_exec import COMPLETED, FAILED_FOR_GOOD
from ..worker.jobs import JobRunner
from ..worker.runtime import DEFAULT_CONCURRENCY, Worker

DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.02
"""How long a burst waits before it looks again at a queue that has ready jobs its worker has
not noticed yet (their wake marker is on its way); the worker itself never polls."""


@dataclass(frozen=True)
class BurstResult:
    """What a burst did, counted from the server's answers to its worker's reports."""

    completed: int
    """Jobs that completed."""
    failed: int
    """Jobs that failed for good: their handler raised ``Fail``, their last attempt failed
    (or timed out), or they could not run (unknown handler, arguments that do not fit the
    function, a return value msgpack cannot encode)."""
    retried: int
    """Attempts that failed with attempts left, so that their job waited for a retry; a
    retry the burst then ran counts again under its own outcome."""
    started: int
    """Attempts the worker started."""
    turned_away: int
    """Reports the server refused: the job was cancelled, or its lease lost, while it ran."""
    statuses: Mapping[tuple[str, str], JobStatus]
    """Per ``(queue, job id)`` of every job the burst ran: the status its latest settled
    attempt left it in, COMPLETED, FAILED, or SCHEDULED or QUEUED for a retry that the burst
    did not run (only with ``wait_scheduled=False``)."""
    next_due: float | None
    """Seconds from the burst's end until the earliest scheduled job of its queues falls due;
    None when none is scheduled. Only ``wait_scheduled=False`` leaves one."""
    elapsed: float
    """Seconds the burst took, from starting its worker to stopping it."""

    def status(self, job: Job) -> JobStatus | None:
        """The status the burst left ``job`` in (see :attr:`statuses`); None when the burst
        did not run it."""
        return self.statuses.get((job.queue, job.id))


class _Tally:
    """The outcomes of one burst's attempts, read from the claim calls of its worker: the
    jobs each call claimed, and which of the reports it carried the server accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str, int], ClaimedJob] = {}
        self._statuses: dict[tuple[str, str], JobStatus] = {}
        self._counts = {"completed": 0, "failed": 0, "retried": 0, "started": 0, "refused": 0}

    def record(self, queue: str, reports: Sequence[Report], claim: JobClaim) -> None:
        """Counts one claim call's answer."""
        with self._lock:
            for report, settled in zip(reports, claim.settled, strict=True):
                job = self._running.pop((queue, report.id, report.token), None)
                if not settled:
                    self._counts["refused"] += 1
                    continue
                status = _settled_status(report, job)
                self._statuses[(queue, report.id)] = status
                if status is JobStatus.COMPLETED:
                    self._counts["completed"] += 1
                elif status is JobStatus.FAILED:
                    self._counts["failed"] += 1
                else:
                    self._counts["retried"] += 1
            for job in claim.jobs:
                self._running[(queue, job.id, job.token)] = job
                self._statuses[(queue, job.id)] = JobStatus.RUNNING
                self._counts["started"] += 1

    def result(self, next_due_ms: int | None, elapsed: float) -> BurstResult:
        """The burst's result once its worker has stopped."""
        with self._lock:
            counts = dict(self._counts)
            statuses = dict(self._statuses)
        return BurstResult(
            completed=counts["completed"],
            failed=counts["failed"],
            retried=counts["retried"],
            started=counts["started"],
            turned_away=counts["refused"],
            statuses=statuses,
            next_due=None if next_due_ms is None else next_due_ms / 1000,
            elapsed=elapsed,
        )


def _settled_status(report: Report, job: ClaimedJob | None) -> JobStatus:
    """The status an accepted report leaves its job in, decided as the claim function
    settles it (``job_settle`` in lua/include/jobs.lua): a failed attempt fails the job for
    good once its failures reach the job's attempts."""
    if report.code == COMPLETED:
        return JobStatus.COMPLETED
    if report.code == FAILED_FOR_GOOD or job is None or job.failures + 1 >= job.max_attempts:
        return JobStatus.FAILED
    return JobStatus.SCHEDULED if report.delay_ms > 0 else JobStatus.QUEUED


class _ObservedClient(Client):
    """The caller's client as a burst's worker uses it: the same connection pool, routing and
    options (shared, not copied: no second pool), with every claim call's answer tallied."""

    _tally: _Tally

    def claim_jobs(
        self,
        part: QueuePartition,
        node: str,
        max_jobs: int,
        reports: Sequence[Report] = (),
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> JobClaim:
        """Claims as :meth:`dtaskq.Client.claim_jobs` does, and tallies the answer."""
        claim = super().claim_jobs(part, node, max_jobs, reports, lease_ms)
        self._tally.record(part.queue, reports, claim)
        return claim


def _observed(client: Client, tally: _Tally) -> _ObservedClient:
    observed = _ObservedClient.__new__(_ObservedClient)
    observed.__dict__.update(vars(client))
    observed._tally = tally
    return observed


def run_burst(
    client: Client,
    registry: Registry,
    queues: Sequence[str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait_scheduled: bool = True,
    node_id: str | None = None,
) -> BurstResult:
    """Runs the jobs of ``queues`` (default: the queues of the registry's handlers) with a
    real :class:`~dtaskq.Worker` on ``client`` until the queues are drained, then stops it.

    Drained means that no job runs and none is ready, and, with ``wait_scheduled`` (the
    default), that none is scheduled either: the burst waits for retries after their backoff
    and for delayed jobs, as long as they fall due within ``timeout``. A job the handlers
    enqueue while the burst runs is run too. Without ``wait_scheduled`` the burst ends with
    scheduled jobs left, and :attr:`BurstResult.next_due` says when the first falls due.

    Raises :class:`~dtaskq.BurstTimeout` when the queues are not drained ``timeout`` seconds
    after the start, or at once when a scheduled job falls due after that; the jobs still
    running are then released back to their queues. ``concurrency`` is the worker's, and
    ``node_id`` its node id (default: ``burst-`` and a random suffix, so that bursts never
    share one).
    """
    validate.seconds(timeout, "timeout")
    if not isinstance(client, Client):
        raise InvalidArgument("run_burst needs a dtaskq.Client: workers use the sync client")
    if not isinstance(registry, Registry):
        raise InvalidArgument("run_burst needs a dtaskq.Registry of handlers")
    names = list(dict.fromkeys(queues if queues is not None else registry.queues()))
    if not names:
        raise InvalidArgument("run_burst needs a queue: the registry has no handler")
    tally = _Tally()
    worker = Worker(
        _observed(client, tally),
        handlers=registry,
        queues=names,
        node_id=node_id or f"burst-{uuid.uuid4().hex[:12]}",
        concurrency=concurrency,
    )
    runner = worker.jobs
    if runner is None:  # a worker with queues has a runner; this tells mypy
        raise InvalidArgument("run_burst needs a queue")
    parts = [part for name in names for part in client.queue_partitions(name)]
    started = time.monotonic()
    worker.start()
    try:
        drain = _Drain(client, runner, parts, worker.node, names, timeout)
        next_due = drain.run(started + timeout, wait_scheduled)
    finally:
        runner.stop_claiming()
        with contextlib.suppress(DtaskqError):  # waking only makes the stop quicker
            _wake_waiters(client, parts)
        worker.stop(grace_ms=0)
    return tally.result(next_due, time.monotonic() - started)


def _wake_waiters(client: Client, parts: list[QueuePartition]) -> None:
    """Puts a wake marker on every partition that has none. The runner's waiters block on
    the markers for up to a second at a time, and its stop waits for them: a marker ends
    that wait at once. A marker left over only makes the next worker look for jobs in vain
    once (docs/keys.md)."""

    def mark(key: str) -> None:
        if not client.redis.llen(key):
            client.redis.rpush(key, "1")

    for part in parts:
        client._run("run_burst", {"queue": part.queue}, partial(mark, part.wake_key()))


class _Drain:
    """Waits until a burst's queues are drained; see :func:`run_burst`."""

    def __init__(
        self,
        client: Client,
        runner: JobRunner,
        parts: list[QueuePartition],
        node: str,
        queues: list[str],
        timeout: float,
    ) -> None:
        self._client = client
        self._runner = runner
        self._parts = parts
        self._node = node
        self._queues = queues
        self._timeout = timeout

    def run(self, deadline: float, wait_scheduled: bool) -> int | None:
        """Returns once drained: the ms until the earliest scheduled job, None if none is."""
        while True:
            if not self._runner.wait_idle(max(0.0, deadline - time.monotonic())):
                raise self._timed_out(f"jobs running on its worker: {self._runner.running}")
            ready, running, next_due = self._probe()
            now = time.monotonic()
            if ready or running:
                # Ready jobs: the runner may be idle before its waiter took the wake marker
                # of jobs enqueued since its last claim (by a handler, say). Running jobs:
                # another worker's, or under a claim whose answer was lost (the sweeper puts
                # those back once their lease ends). Either way, look again shortly.
                pause = POLL_S
            elif next_due is None or not wait_scheduled:
                return next_due
            elif now + next_due / 1000 > deadline:
                raise self._timed_out(
                    f"a job is scheduled {next_due / 1000:g} s from now; pass "
                    "wait_scheduled=False to leave scheduled jobs"
                )
            else:
                # The runner claims the job when it falls due (the claim answers told it
                # when); until then there is nothing to wait for but the clock.
                pause = max(POLL_S, next_due / 1000)
            if now + pause > deadline:
                why = "jobs are ready" if ready else f"jobs run elsewhere: {running}"
                raise self._timed_out(why)
            time.sleep(pause)

    def _probe(self) -> tuple[bool, int, int | None]:
        """Whether a partition holds ready jobs, how many jobs run under a lease (the
        runner's own have all been reported when it is idle), and the ms until the earliest
        scheduled job falls due by the server's clock (None when none is scheduled)."""
        ready, running = False, 0
        next_due: int | None = None
        for part in self._parts:
            # No client call tells these two; the lanes key exists exactly when ready jobs
            # wait, and the running hash holds the claims of running jobs (docs/keys.md).
            ready = ready or bool(self._read(part, "exists", part.lanes_key()))
            running += int(self._read(part, "hlen", part.running_key()))
            # A claim of no job claims and settles nothing; it answers when the next
            # scheduled job is due.
            due = self._client.claim_jobs(part, self._node, 0).next_due_ms
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
        return ready, running, next_due

    def _read(self, part: QueuePartition, command: str, key: str) -> Any:
        read = partial(getattr(self._client.redis, command), key)
        return self._client._run("run_burst", {"queue": part.queue}, read)

    def _timed_out(self, why: str) -> BurstTimeout:
        queues = ", ".join(self._queues)
        return BurstTimeout(
            f"run_burst: queues {queues} not drained within {self._timeout:g} s: {why}"
        )
