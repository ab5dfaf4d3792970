"""Eager mode (docs/testing.md): jobs that run in-process when they are enqueued, with no
server.

An :class:`EagerClient` offers the job methods of :class:`dtaskq.Client` that producers and
tests call, with the same signatures, and runs each job before ``enqueue`` returns, every
attempt through the worker's own code: the arguments go through the checks and the msgpack
encoding of a real enqueue (:func:`dtaskq.job_args.record`), the handler is found, its
arguments decoded and checked, and its outcome turned into a report by
:mod:`dtaskq.worker.job_exec`, and a result is decoded from its msgpack as a real job's is.
The reports are then settled as the claim function settles them
(:mod:`dtaskq.testing.eager_jobs`). :class:`AsyncEagerClient` is the same for code that uses
:class:`dtaskq.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, cast

from .. import validate
from ..job_client import job_spec
from ..job_handle import AsyncJob, Job
from ..job_models import DeadJob, JobInfo, JobOptions, JobSpec, JobStatus
from ..job_ops import Report
from .eager_jobs import EagerJobs, Steps

if TYPE_CHECKING:
    from ..job_aio import AsyncJobMethods
    from ..job_client import JobMethods

T = TypeVar("T")


class EagerClient(EagerJobs):
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


class AsyncEagerClient(EagerJobs):
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
