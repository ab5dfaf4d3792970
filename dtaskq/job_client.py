"""The job API of the sync client (docs/jobs.md): what :class:`dtaskq.Client` adds to the
task API for producers, operators and workers of job queues."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Unpack

import redis.connection

from . import job_ops, validate
from .connected import Connected
from .errors import InvalidArgument, JobNotFound, JobTimeout
from .job_handle import Job
from .job_models import (
    DEFAULT_LEASE_MS,
    DeadJob,
    JobClaim,
    JobInfo,
    JobOptions,
    JobSpec,
    JobStatus,
    JobSweepResult,
)
from .keys import QueuePartition

BLOCK_SECONDS = 30.0
"""The longest single blocking read of a waiter; it then checks the job again."""
SOCKET_MARGIN_S = 0.5
_DEFAULT_SOCKET_TIMEOUT: float | None = getattr(redis.connection, "DEFAULT_SOCKET_TIMEOUT", None)


def job_spec(handler: str, args: Any, kwargs: Any, options: dict[str, Any]) -> JobSpec:
    """The :class:`JobSpec` of an ``enqueue`` call; unknown options are ``InvalidArgument``."""
    unknown = set(options) - set(JobOptions.__annotations__)
    if unknown:
        raise InvalidArgument(f"unknown job options: {', '.join(sorted(unknown))}")
    return JobSpec(handler, args, kwargs, **options)


def wait_seconds(deadline: float | None, connection: Any) -> float:
    """How long the next blocking read of a waiter may last (0: the wait is over): at most
    BLOCK_SECONDS, and less than the connection's socket timeout (redis-py's default is 5 s),
    which would otherwise cut the read short."""
    limit = BLOCK_SECONDS
    kwargs = getattr(getattr(connection, "connection_pool", None), "connection_kwargs", None)
    if kwargs is None:  # a cluster client keeps its nodes' options itself
        kwargs = getattr(connection, "nodes_manager", None)
        kwargs = getattr(kwargs, "connection_kwargs", {}) if kwargs is not None else {}
    socket_timeout = kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
    if socket_timeout:
        limit = min(limit, max(0.05, socket_timeout - SOCKET_MARGIN_S))
    if deadline is None:
        return limit
    return min(limit, max(0.0, deadline - time.monotonic()))


def timeout_deadline(timeout: float | None) -> float | None:
    """The monotonic time a ``result(timeout)`` gives up at."""
    if timeout is None:
        return None
    return time.monotonic() + validate.seconds(timeout, "timeout")


def not_found(queue: str, job_id: str) -> JobNotFound:
    """The error of a job whose record is gone."""
    return JobNotFound(
        f"no job {job_id} in queue {queue}: never enqueued, dropped at its deadline, or its "
        "record expired",
        queue=queue,
        job_id=job_id,
    )


def timed_out(queue: str, job_id: str) -> JobTimeout:
    """The error of a waiter that gave up."""
    return JobTimeout(
        f"job {job_id} of queue {queue} has not ended yet", queue=queue, job_id=job_id
    )


class JobMethods(Connected):
    """The job methods of :class:`dtaskq.Client`."""

    def enqueue(
        self,
        queue: str,
        handler: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Enqueues a call of the handler registered as ``handler`` with ``args`` and
        ``kwargs`` (msgpack-encoded; never pickled), to run on a worker serving ``queue``.
        ``options`` are those of :class:`~dtaskq.JobOptions` (priority, delay or run_at,
        deadline, timeout, attempts and backoff, idempotency key, result TTL); handler
        arguments are never options. Returns the :class:`Job`; with an ``idempotency_key``
        that a job holds, that job (``Job.created`` False) and nothing new."""
        return self.enqueue_many(queue, [job_spec(handler, args, kwargs, dict(options))])[0]

    def enqueue_many(self, queue: str, specs: Iterable[JobSpec]) -> list[Job]:
        """Enqueues jobs in as few round trips as the batch allows: one call per partition and
        100 jobs, ten calls per round trip. Every spec is checked before any is sent; answers
        in the order given. A retried batch creates no job twice."""
        answers = self._drive(job_ops.enqueue(self._core.router, queue, specs))
        return [Job(self, queue, a.id, a.created) for a in answers]

    def job(self, queue: str, job_id: str) -> Job:
        """A handle on a job by id (no server call)."""
        return Job(self, validate.namespace(queue), validate.ident(job_id, "job id"))

    def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """A job's record (status, attempts, times, error, node, result), or None."""
        return self._drive(job_ops.get_job(self._core.router, queue, job_id))

    def cancel_job(self, queue: str, job_id: str) -> JobStatus | None:
        """Cancels a job that has not ended and returns the status it had (None: no such
        job). A scheduled or queued job is removed; a running one's handler is told through
        its worker's heartbeat and its result is turned away (docs/jobs.md, rule J10)."""
        return self._drive(job_ops.cancel_job(self._core.router, queue, job_id))

    def wait_for_job(self, queue: str, job_id: str, timeout: float | None = None) -> JobInfo:
        """Blocks until a job ends and returns its record (see :meth:`dtaskq.Job.result`)."""
        deadline = timeout_deadline(timeout)
        while True:
            state, done = self._drive(job_ops.await_job(self._core.router, queue, job_id))
            if state is None:
                raise not_found(queue, job_id)
            if isinstance(state, JobInfo):
                return state
            wait = wait_seconds(deadline, self.redis)
            if wait <= 0:
                raise timed_out(queue, job_id)
            self._run(
                "wait_for_job",
                {"queue": queue, "job_id": job_id},
                partial(self._send, "BLMOVE", done, done, "RIGHT", "RIGHT", max(wait, 0.01)),
            )

    def configure_queue(self, queue: str, *, aging_ms: int) -> None:
        """Sets how much waiting one priority step is worth in a queue (default 1 000 ms):
        a job is overtaken only by jobs enqueued before its own enqueue time plus
        ``aging_ms`` per priority step they have over it (docs/jobs.md, rule J3)."""
        self._drive(job_ops.configure_queue(self._core.router, queue, aging_ms))

    def dead_jobs(self, queue: str, limit: int = 1000) -> list[DeadJob]:
        """The queue's dead-letter set, oldest first: jobs that failed for good."""
        return self._drive(job_ops.dead_jobs(self._core.router, queue, limit))

    def requeue_dead(
        self, queue: str, job_ids: Iterable[str] | None = None, *, handler: str | None = None
    ) -> int:
        """Moves dead jobs back to their lanes with all their attempts: the ids given, else
        all of them (of ``handler``, when given). Returns how many were requeued."""
        return self._drive(
            job_ops.handle_dead(self._core.router, queue, "requeue", job_ids, handler)
        )

    def purge_dead(
        self, queue: str, job_ids: Iterable[str] | None = None, *, handler: str | None = None
    ) -> int:
        """Deletes dead jobs: the ids given, else all of them (of ``handler``, when given).
        Returns how many were deleted."""
        return self._drive(job_ops.handle_dead(self._core.router, queue, "purge", job_ids, handler))

    # -- what workers call ------------------------------------------------------------------

    def queue_partitions(self, queue: str) -> list[QueuePartition]:
        """The partitions of a queue, fixing its partition count if it has none yet."""
        return self._drive(self._core.router.queue_partitions(validate.namespace(queue)))

    def claim_jobs(
        self,
        part: QueuePartition,
        node: str,
        max_jobs: int,
        reports: Sequence[job_ops.Report] = (),
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> JobClaim:
        """Reports finished attempts of one partition, then claims up to ``max_jobs`` of its
        ready jobs for ``node``, all in one call (docs/jobs.md, rules J4-J7). The node's
        claims in the partition then last ``lease_ms``, or less for a job with a timeout
        (its timeout plus 5 s), unless a heartbeat renews them."""
        return self._drive(
            job_ops.claim_jobs(self._core.router, part, node, max_jobs, reports, lease_ms)
        )

    def heartbeat_jobs(
        self,
        part: QueuePartition,
        node: str,
        claims: Iterable[tuple[str, int]],
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> list[int]:
        """Renews the node's lease on its claims in a partition for ``lease_ms``, and answers
        per ``(job id, token)`` 0 held, 1 lost, 2 cancelled."""
        return self._drive(job_ops.heartbeat_jobs(self._core.router, part, node, claims, lease_ms))

    def release_jobs(
        self, part: QueuePartition, node: str, claims: Iterable[tuple[str, int]]
    ) -> list[bool]:
        """Hands claimed jobs back to the front of their lanes without counting an attempt."""
        return self._drive(job_ops.release_jobs(self._core.router, part, node, claims))

    def sweep_jobs(
        self,
        part: QueuePartition,
        limit: int = 2048,
        *,
        sweeper: str | None = None,
        lock_ms: int = 0,
    ) -> JobSweepResult:
        """One bounded sweep of a queue partition (docs/jobs.md, rule J11)."""
        return self._drive(job_ops.sweep_jobs(self._core.router, part, limit, sweeper, lock_ms))

    def wait_for_jobs(
        self, parts: Sequence[QueuePartition], timeout: float
    ) -> QueuePartition | None:
        """Blocks up to ``timeout`` seconds on the wake markers of ``parts`` (on a cluster,
        partitions of one slot); the partition whose marker it took (jobs may be ready there), or
        None when the time ran out."""
        wake = job_ops.wake_keys(parts, timeout)
        popped: Any = self._run("wait_for_jobs", {}, lambda: self._send("BLPOP", *wake, timeout))
        if popped is None:
            return None
        key = popped[0].decode() if isinstance(popped[0], bytes) else popped[0]
        return next(part for part in parts if part.wake_key() == key)
