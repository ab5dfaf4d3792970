"""The job API of the asyncio client: the coroutine forms of :mod:`dtaskq.job_client`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Unpack

from . import job_ops, validate
from .aio_connected import AsyncConnected
from .job_client import job_spec, not_found, timed_out, timeout_deadline, wait_seconds
from .job_handle import AsyncJob
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


class AsyncJobMethods(AsyncConnected):
    """The job methods of :class:`dtaskq.AsyncClient`; each is the coroutine form of the
    :class:`dtaskq.Client` method of the same name."""

    async def enqueue(
        self,
        queue: str,
        handler: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncJob:
        """See :meth:`dtaskq.Client.enqueue`."""
        return (await self.enqueue_many(queue, [job_spec(handler, args, kwargs, dict(options))]))[0]

    async def enqueue_many(self, queue: str, specs: Iterable[JobSpec]) -> list[AsyncJob]:
        """See :meth:`dtaskq.Client.enqueue_many`."""
        answers = await self._drive(job_ops.enqueue(self._core.router, queue, specs))
        return [AsyncJob(self, queue, a.id, a.created) for a in answers]

    def job(self, queue: str, job_id: str) -> AsyncJob:
        """See :meth:`dtaskq.Client.job`."""
        return AsyncJob(self, validate.namespace(queue), validate.ident(job_id, "job id"))

    async def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """See :meth:`dtaskq.Client.get_job`."""
        return await self._drive(job_ops.get_job(self._core.router, queue, job_id))

    async def cancel_job(self, queue: str, job_id: str) -> JobStatus | None:
        """See :meth:`dtaskq.Client.cancel_job`."""
        return await self._drive(job_ops.cancel_job(self._core.router, queue, job_id))

    async def wait_for_job(self, queue: str, job_id: str, timeout: float | None = None) -> JobInfo:
        """See :meth:`dtaskq.Client.wait_for_job`."""
        deadline = timeout_deadline(timeout)
        while True:
            state, done = await self._drive(job_ops.await_job(self._core.router, queue, job_id))
            if state is None:
                raise not_found(queue, job_id)
            if isinstance(state, JobInfo):
                return state
            wait = wait_seconds(deadline, self.redis)
            if wait <= 0:
                raise timed_out(queue, job_id)
            await self._run(
                "wait_for_job",
                {"queue": queue, "job_id": job_id},
                partial(self._send, "BLMOVE", done, done, "RIGHT", "RIGHT", max(wait, 0.01)),
            )

    async def configure_queue(self, queue: str, *, aging_ms: int) -> None:
        """See :meth:`dtaskq.Client.configure_queue`."""
        await self._drive(job_ops.configure_queue(self._core.router, queue, aging_ms))

    async def dead_jobs(self, queue: str, limit: int = 1000) -> list[DeadJob]:
        """See :meth:`dtaskq.Client.dead_jobs`."""
        return await self._drive(job_ops.dead_jobs(self._core.router, queue, limit))

    async def requeue_dead(
        self, queue: str, job_ids: Iterable[str] | None = None, *, handler: str | None = None
    ) -> int:
        """See :meth:`dtaskq.Client.requeue_dead`."""
        return await self._drive(
            job_ops.handle_dead(self._core.router, queue, "requeue", job_ids, handler)
        )

    async def purge_dead(
        self, queue: str, job_ids: Iterable[str] | None = None, *, handler: str | None = None
    ) -> int:
        """See :meth:`dtaskq.Client.purge_dead`."""
        return await self._drive(
            job_ops.handle_dead(self._core.router, queue, "purge", job_ids, handler)
        )

    async def queue_partitions(self, queue: str) -> list[QueuePartition]:
        """See :meth:`dtaskq.Client.queue_partitions`."""
        return await self._drive(self._core.router.queue_partitions(validate.namespace(queue)))

    async def claim_jobs(
        self,
        part: QueuePartition,
        node: str,
        max_jobs: int,
        reports: Sequence[job_ops.Report] = (),
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> JobClaim:
        """See :meth:`dtaskq.Client.claim_jobs`."""
        return await self._drive(
            job_ops.claim_jobs(self._core.router, part, node, max_jobs, reports, lease_ms)
        )

    async def heartbeat_jobs(
        self,
        part: QueuePartition,
        node: str,
        claims: Iterable[tuple[str, int]],
        lease_ms: int = DEFAULT_LEASE_MS,
    ) -> list[int]:
        """See :meth:`dtaskq.Client.heartbeat_jobs`."""
        return await self._drive(
            job_ops.heartbeat_jobs(self._core.router, part, node, claims, lease_ms)
        )

    async def release_jobs(
        self, part: QueuePartition, node: str, claims: Iterable[tuple[str, int]]
    ) -> list[bool]:
        """See :meth:`dtaskq.Client.release_jobs`."""
        return await self._drive(job_ops.release_jobs(self._core.router, part, node, claims))

    async def sweep_jobs(
        self,
        part: QueuePartition,
        limit: int = 2048,
        *,
        sweeper: str | None = None,
        lock_ms: int = 0,
    ) -> JobSweepResult:
        """See :meth:`dtaskq.Client.sweep_jobs`."""
        return await self._drive(
            job_ops.sweep_jobs(self._core.router, part, limit, sweeper, lock_ms)
        )

    async def wait_for_jobs(
        self, parts: Sequence[QueuePartition], timeout: float
    ) -> QueuePartition | None:
        """See :meth:`dtaskq.Client.wait_for_jobs`."""
        wake = job_ops.wake_keys(parts, timeout)
        popped: Any = await self._run(
            "wait_for_jobs", {}, lambda: self._send("BLPOP", *wake, timeout)
        )
        if popped is None:
            return None
        key = popped[0].decode() if isinstance(popped[0], bytes) else popped[0]
        return next(part for part in parts if part.wake_key() == key)
