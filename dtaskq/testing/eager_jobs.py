"""The core of eager mode (docs/testing.md), shared by :class:`~dtaskq.testing.EagerClient`
and :class:`~dtaskq.testing.AsyncEagerClient`: the jobs' records, and the steps that run one
job's attempts through the worker's own code (:mod:`dtaskq.worker.job_exec`) and settle each
report as the claim function settles it (``job_settle`` in ``lua/include/jobs.lua``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Coroutine, Generator, Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar, cast

from .. import job_args, validate
from ..calls import Arg
from ..codec import at, optional_at, unpack
from ..errors import InvalidArgument
from ..handlers import Registry
from ..job_client import not_found, timed_out
from ..job_handle import DEADLINE_PREFIX
from ..job_models import ClaimedJob, DeadJob, JobInfo, JobSpec, JobStatus
from ..job_ops import Report
from ..worker.job_exec import COMPLETED, FAILED_FOR_GOOD, Attempt, prepare, run_async, run_sync

T = TypeVar("T")
NODE = "eager"
"""The node an eager job's record names (``JobInfo.node``)."""
MISSED_DEADLINE = f"{DEADLINE_PREFIX} the deadline passed before the job started"

Steps = Generator[Coroutine[Any, Any, Report], Report, T]
"""How an eager job runs, without deciding how a coroutine is awaited: it yields the
coroutine of each attempt of an ``async def`` handler and is sent back its report."""


class Record(NamedTuple):
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
    def of(cls, values: list[Arg]) -> Record:
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


class EagerJobs:
    """What both eager clients share: the registry, the jobs' records and dead letters, and
    the steps that run one job. Not used on its own: see the clients."""

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

    def _records_of(self, queue: str, specs: Iterable[JobSpec]) -> list[Record]:
        validate.namespace(queue)
        # Every spec is checked, and its arguments encoded, before any job runs.
        return [Record.of(job_args.record(spec)) for spec in specs]

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
        with self._lock:
            info = self._info(queue, job_id)
            if info is None or info.status.terminal:
                return info.status if info else None
            cancelled = replace(info, status=JobStatus.CANCELLED, finished_at=at(_now_ms()))
            self._records[(queue, job_id)] = cancelled
        return info.status

    def _holds(self, info: JobInfo) -> bool:
        """True while the job's record is still that of the attempt ``info`` started (a
        cancel, by the handler or code it calls, takes it away)."""
        with self._lock:
            current = self._records.get((info.queue, info.id))
        return (
            current is not None
            and current.status is JobStatus.RUNNING
            and (current.attempt == info.attempt)
        )

    def _dead_jobs(self, queue: str, limit: int) -> list[DeadJob]:
        validate.namespace(queue)
        validate.integer(limit, "limit", 1, 1_000_000)
        with self._lock:
            return [dead for dead in self._dead if dead.queue == queue][:limit]

    def _run(self, queue: str, record: Record) -> Steps[tuple[str, bool]]:
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
                token=None,
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
                token=info.attempt + 1,
                node=NODE,
                started_at=at(now),
            )
            with self._lock:
                self._records[key] = info
            attempt = self._attempt(info, record)
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
            if not self._holds(info):  # cancelled while it ran: its report is turned away
                return record.id, True
            info = self._settle(info, report, record.result_ttl_ms)
            if info.status.terminal:
                return record.id, True

    def _attempt(self, info: JobInfo, record: Record) -> Attempt:
        """The attempt ``info`` starts, whose ``JobContext.heartbeat()`` answers whether the
        job is still this attempt's; when it is not (a cancel, by the handler or code it
        calls), ``cancelled`` becomes True, as a worker's heartbeat makes it."""

        def heartbeat(attempt: Attempt) -> bool:
            held = self._holds(info)
            if not held:
                attempt.context.cancel()
            return held

        return Attempt(self._claimed(info, record), heartbeat)

    @staticmethod
    def _claimed(info: JobInfo, record: Record) -> ClaimedJob:
        """The claim a worker would have made for the job's next attempt."""
        return ClaimedJob(
            queue=info.queue,
            partition=0,
            id=info.id,
            token=info.attempt,
            attempt=info.attempt,
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

    def _miss_deadline(self, info: JobInfo, record: Record) -> None:
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
