"""Eager mode (docs/testing.md): jobs that run in-process when they are enqueued, with no
server.

An :class:`EagerClient` offers the job methods of :class:`dtaskq.Client` that producers and
tests call, with the same signatures, and runs each job before ``enqueue`` returns, every
attempt through the worker's own code: the arguments go through the checks and the msgpack
encoding of a real enqueue (:func:`dtaskq.job_args.record`), the handler is found, its
arguments decoded and checked, and its outcome turned into a report by
:mod:`dtaskq.worker.job_exec`, and a result is decoded from its msgpack as a real job's is.
The reports are then settled as the claim function settles them (``job_settle`` in
``lua/include/jobs.lua``). :class:`AsyncEagerClient` is the same for code that uses
:class:`dtaskq.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Coroutine, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, Unpack, cast

from .. import job_args, validate
from ..calls import Arg
from ..codec import at, optional_at, unpack
from ..errors import InvalidArgument
from ..handlers import Registry
from ..job_client import job_spec, not_found, timed_out
from ..job_handle import DEADLINE_PREFIX, AsyncJob, Job
from ..job_models import ClaimedJob, DeadJob, JobInfo, JobOptions, JobSpec, JobStatus
from ..job_ops import Report
from ..worker.job_exec import COMPLETED, FAILED_FOR_GOOD, Attempt, prepare, run_async, run_sync

if TYPE_CHECKING:
    from ..job_aio import AsyncJobMethods
    from ..job_client import JobMethods

T = TypeVar("T")
NODE = "eager"
"""The node an eager job's record names (``JobInfo.node``)."""
MISSED_DEADLINE = f"{DEADLINE_PREFIX} the deadline passed before the job started"

Steps = Generator[Coroutine[Any, Any, Report], Report, T]
"""How an eager job runs, without deciding how a coroutine is awaited: it yields the
coroutine of each attempt of an ``async def`` handler and is sent back its report."""


class _Record(NamedTuple):
    """One job's ARGV record (:func:`dtaskq.job_args.record`), typed."""

    id: str
    handler: str
    arguments: bytes
    priority: int
    delay_ms: int | None
    run_at_ms: int | None
    deadline_ms: int | None
    drop: bool
    timeout_ms: int | None
    max_attempts: int
    backoff: str
    result_ttl_ms: int

    @classmethod
    def of(cls, values: list[Arg]) -> _Record:
        def ms(value: Arg) -> int | None:
            return None if value == "" else int(value)

        job_id, handler, arguments, priority, delay, run_at, deadline, drop, timeout = values[:9]
        attempts, backoff, ttl = values[9:]
        return cls(
            str(job_id),
            str(handler),
            cast(bytes, arguments),
            int(priority),
            ms(delay),
            ms(run_at),
            ms(deadline),
            drop == "1",
            ms(timeout),
            int(attempts),
            str(backoff),
            int(ttl),
        )


def _now_ms() -> int:
    return round(time.time() * 1000)


class _EagerJobs:
    """What both eager clients share: the registry, the jobs' records and dead letters, and
    the steps that run one job."""

    def __init__(self, registry: Registry, queues: Sequence[str] | None = None) -> None:
        if not isinstance(registry, Registry):
            raise InvalidArgument("an eager client needs a dtaskq.Registry")
        served = registry.queues() if queues is None else queues
        self.registry = registry
        self.queues = frozenset(validate.namespace(q) for q in served)
        """The queues whose jobs run; a job of any other queue stays QUEUED, as it would
        with no worker serving its queue."""
        self._lock = threading.RLock()
        self._records: dict[tuple[str, str], JobInfo] = {}
        self._dead: list[DeadJob] = []

    def _records_of(self, queue: str, specs: Iterable[JobSpec]) -> list[_Record]:
        validate.namespace(queue)
        # Every spec is checked, and its arguments encoded, before any job runs.
        return [_Record.of(job_args.record(spec)) for spec in specs]

    def _info(self, queue: str, job_id: str) -> JobInfo | None:
        validate.namespace(queue)
        validate.ident(job_id, "job id")
        with self._lock:
            return self._records.get((queue, job_id))

    def _wait(self, queue: str, job_id: str, timeout: float | None) -> JobInfo:
        if timeout is not None:
            validate.seconds(timeout, "timeout")
        info = self._info(queue, job_id)
        if info is None:
            raise not_found(queue, job_id)
        if not info.status.terminal:  # its queue is not served: waiting would never end
            raise timed_out(queue, job_id)
        return info

    def _cancel(self, queue: str, job_id: str) -> JobStatus | None:
        info = self._info(queue, job_id)
        if info is None or info.status.terminal:
            return info.status if info else None
        with self._lock:
            self._records[(queue, job_id)] = replace(
                info, status=JobStatus.CANCELLED, finished_at=at(_now_ms())
            )
        return info.status

    def _dead_jobs(self, queue: str, limit: int) -> list[DeadJob]:
        validate.namespace(queue)
        validate.integer(limit, "limit", 1, 1_000_000)
        with self._lock:
            return [dead for dead in self._dead if dead.queue == queue][:limit]

    def _run(self, queue: str, record: _Record) -> Steps[tuple[str, bool]]:
        """Enqueues one job and runs its attempts; returns its id and whether it was made
        (False: its idempotency key's job exists)."""
        key = (queue, record.id)
        now = _now_ms()
        run_at = now + record.delay_ms if record.delay_ms is not None else record.run_at_ms
        with self._lock:
            if key in self._records:
                return record.id, False
            self._records[key] = info = JobInfo(
                queue=queue,
                id=record.id,
                handler=record.handler,
                status=JobStatus.QUEUED,
                attempt=0,
                failures=0,
                max_attempts=record.max_attempts,
                priority=record.priority,
                enqueued_at=at(now),
                run_at=optional_at(run_at or 0),
                deadline=optional_at(record.deadline_ms or 0),
                started_at=None,
                finished_at=None,
                error="",
                node=None,
                idempotency_key=record.id[1:] if record.id.startswith("=") else None,
            )
        if queue not in self.queues:
            return record.id, True
        while True:
            now = _now_ms()
            if record.deadline_ms is not None and record.deadline_ms <= now:
                self._miss_deadline(info, record)
                return record.id, True
            info = replace(
                info,
                status=JobStatus.RUNNING,
                attempt=info.attempt + 1,
                node=NODE,
                started_at=at(now),
            )
            with self._lock:
                self._records[key] = info
            attempt = Attempt(self._claimed(info, record), lambda: True)
            prepared = prepare(attempt, self.registry)
            if isinstance(prepared, Report):
                report = prepared
            elif prepared[0].is_async:
                report = yield run_async(attempt, *prepared)
            else:
                report = run_sync(attempt, *prepared)
                if attempt.ends_at is not None and time.monotonic() >= attempt.ends_at:
                    # A worker reports the timeout once it passes and drops the late result.
                    report = attempt.timed_out()
            info = self._settle(info, report, record.result_ttl_ms)
            if info.status.terminal:
                return record.id, True

    @staticmethod
    def _claimed(info: JobInfo, record: _Record) -> ClaimedJob:
        """The claim a worker would have made for the job's next attempt."""
        return ClaimedJob(
            queue=info.queue,
            partition=0,
            id=info.id,
            token=info.attempt,
            handler=info.handler,
            arguments=record.arguments,
            timeout_ms=record.timeout_ms,
            deadline_ms=record.deadline_ms,
            failures=info.failures,
            max_attempts=info.max_attempts,
            backoff=job_args.decode_backoff(record.backoff.encode()),
        )

    def _settle(self, info: JobInfo, report: Report, ttl_ms: int) -> JobInfo:
        """The job's record once ``report`` is settled as the claim function settles it: a
        failed attempt with attempts left is retried at once, without its backoff."""
        now = at(_now_ms())
        if report.code == COMPLETED:
            ended = replace(info, status=JobStatus.COMPLETED, finished_at=now)
            return self._end(replace(ended, result=unpack(report.value)), ttl_ms)
        error = report.value.decode("utf-8", "replace")
        failures = info.failures + 1
        if report.code != FAILED_FOR_GOOD and failures < info.max_attempts:
            status = JobStatus.SCHEDULED if report.delay_ms else JobStatus.QUEUED
            return self._store(replace(info, status=status, failures=failures, error=error))
        failed = replace(
            info, status=JobStatus.FAILED, failures=failures, finished_at=now, error=error
        )
        with self._lock:
            self._dead.append(DeadJob(info.queue, info.id, now, info.handler, error, failures))
        # A dead job's record is kept whatever its result TTL (for 7 days on a server).
        return self._store(failed)

    def _miss_deadline(self, info: JobInfo, record: _Record) -> None:
        if record.drop:
            with self._lock:
                del self._records[(info.queue, info.id)]
            return
        failed = replace(
            info, status=JobStatus.FAILED, finished_at=at(_now_ms()), error=MISSED_DEADLINE
        )
        self._end(failed, record.result_ttl_ms)

    def _end(self, info: JobInfo, ttl_ms: int) -> JobInfo:
        """Stores an ended job's record, or drops it for a result TTL of 0 (its record is
        then gone, as on a server). Records are otherwise kept for the client's life."""
        if ttl_ms:
            return self._store(info)
        with self._lock:
            self._records.pop((info.queue, info.id), None)
        return info

    def _store(self, info: JobInfo) -> JobInfo:
        with self._lock:
            self._records[(info.queue, info.id)] = info
        return info


class EagerClient(_EagerJobs):
    """Runs jobs in-process at enqueue time with the handlers of ``registry``, for tests:
    ``handler.enqueue(EagerClient(registry), ...)`` returns a :class:`dtaskq.Job` that has
    already ended. Jobs of ``queues`` run (default: the queues of the registry's handlers);
    a job of another queue stays QUEUED, and its ``result()`` raises ``JobTimeout`` at once.

    Every attempt runs before ``enqueue`` returns, up to the job's ``max_attempts``; a retry
    runs at once, without sleeping for its backoff or ``Retry`` delay. ``delay``, ``run_at``
    and ``priority`` are recorded but do not hold a job back; a deadline already passed when
    an attempt would start fails the job (or drops it) as a worker does. A sync handler runs
    on the calling thread; an ``async def`` one in a fresh event loop on a helper thread, never
    the caller's loop (docs/testing.md says why)."""

    def enqueue(
        self,
        queue: str,
        handler: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Enqueues and runs a job, as :meth:`dtaskq.Client.enqueue` enqueues one."""
        return self.enqueue_many(queue, [job_spec(handler, args, kwargs, dict(options))])[0]

    def enqueue_many(self, queue: str, specs: Iterable[JobSpec]) -> list[Job]:
        """Enqueues and runs jobs in the order given, as :meth:`dtaskq.Client.enqueue_many`
        enqueues them: every spec is checked before any job runs."""
        jobs = []
        for record in self._records_of(queue, specs):
            job_id, created = _drive(self._run(queue, record))
            jobs.append(Job(self._as_client(), queue, job_id, created))
        return jobs

    def job(self, queue: str, job_id: str) -> Job:
        """A handle on a job by id."""
        return Job(self._as_client(), validate.namespace(queue), validate.ident(job_id, "job id"))

    def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """A job's record, or None (see :meth:`dtaskq.Client.get_job`)."""
        return self._info(queue, job_id)

    def wait_for_job(self, queue: str, job_id: str, timeout: float | None = None) -> JobInfo:
        """The record of an ended job; ``JobNotFound`` without one, ``JobTimeout`` at once for
        a job that never runs (its queue is not served)."""
        return self._wait(queue, job_id, timeout)

    def cancel_job(self, queue: str, job_id: str) -> JobStatus | None:
        """Cancels a job that has not ended (one of a queue that is not served) and returns
        the status it had; None when there is no such job."""
        return self._cancel(queue, job_id)

    def dead_jobs(self, queue: str, limit: int = 1000) -> list[DeadJob]:
        """The queue's jobs that failed for good, oldest first."""
        return self._dead_jobs(queue, limit)

    def _as_client(self) -> JobMethods:
        # A Job handle calls only get_job, wait_for_job and cancel_job, which this class
        # has with the signatures of Client's.
        return cast("JobMethods", self)


class AsyncEagerClient(_EagerJobs):
    """:class:`EagerClient` for code that uses :class:`dtaskq.AsyncClient`: its methods are
    coroutines, ``enqueue`` returns a :class:`dtaskq.AsyncJob`, and an ``async def`` handler
    is awaited on the caller's own event loop (a sync one runs on the calling thread)."""

    async def enqueue(
        self,
        queue: str,
        handler: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncJob:
        """See :meth:`EagerClient.enqueue`."""
        spec = job_spec(handler, args, kwargs, dict(options))
        return (await self.enqueue_many(queue, [spec]))[0]

    async def enqueue_many(self, queue: str, specs: Iterable[JobSpec]) -> list[AsyncJob]:
        """See :meth:`EagerClient.enqueue_many`."""
        jobs = []
        for record in self._records_of(queue, specs):
            job_id, created = await _drive_async(self._run(queue, record))
            jobs.append(AsyncJob(self._as_client(), queue, job_id, created))
        return jobs

    def job(self, queue: str, job_id: str) -> AsyncJob:
        """See :meth:`EagerClient.job`."""
        queue, job_id = validate.namespace(queue), validate.ident(job_id, "job id")
        return AsyncJob(self._as_client(), queue, job_id)

    async def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """See :meth:`EagerClient.get_job`."""
        return self._info(queue, job_id)

    async def wait_for_job(self, queue: str, job_id: str, timeout: float | None = None) -> JobInfo:
        """See :meth:`EagerClient.wait_for_job`."""
        return self._wait(queue, job_id, timeout)

    async def cancel_job(self, queue: str, job_id: str) -> JobStatus | None:
        """See :meth:`EagerClient.cancel_job`."""
        return self._cancel(queue, job_id)

    async def dead_jobs(self, queue: str, limit: int = 1000) -> list[DeadJob]:
        """See :meth:`EagerClient.dead_jobs`."""
        return self._dead_jobs(queue, limit)

    def _as_client(self) -> AsyncJobMethods:
        # As EagerClient._as_client, for an AsyncJob.
        return cast("AsyncJobMethods", self)


def _drive(steps: Steps[T]) -> T:
    """Runs a job's steps, each ``async def`` attempt in a fresh event loop of its own."""
    try:
        coroutine = next(steps)
        while True:
            coroutine = steps.send(_run_in_fresh_loop(coroutine))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _drive_async(steps: Steps[T]) -> T:
    """Runs a job's steps, awaiting each ``async def`` attempt on the running loop."""
    try:
        coroutine = next(steps)
        while True:
            coroutine = steps.send(await coroutine)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _run_in_fresh_loop(coroutine: Coroutine[Any, Any, Report]) -> Report:
    # A helper thread, whether or not the caller runs a loop: a running loop cannot be
    # re-entered, and asyncio.run on the calling thread would also reset its current loop.
    # The caller's context variables go along, as they would into a task it created.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="dtaskq-eager") as pool:
        return pool.submit(context.run, asyncio.run, coroutine).result()
