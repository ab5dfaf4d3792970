"""Handles on enqueued jobs: :class:`Job` for the sync client, :class:`AsyncJob` for the
asyncio one. A handle holds only the queue and the id; every method asks the server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DeadlineExceeded, JobCancelled, JobFailed
from .job_models import JobInfo, JobStatus

if TYPE_CHECKING:
    from .job_aio import AsyncJobMethods
    from .job_client import JobMethods

DEADLINE_PREFIX = "DeadlineExceeded:"


def outcome(info: JobInfo) -> Any:
    """The result of an ended job, or the error it ended with."""
    context: dict[str, Any] = {"queue": info.queue, "job_id": info.id, "error": info.error}
    if info.status is JobStatus.COMPLETED:
        return info.result
    if info.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {info.id} of queue {info.queue} was cancelled", **context)
    if info.error.startswith(DEADLINE_PREFIX):
        raise DeadlineExceeded(
            f"job {info.id} of queue {info.queue} missed its deadline: {info.error}", **context
        )
    raise JobFailed(f"job {info.id} of queue {info.queue} failed: {info.error}", **context)


class Job:
    """A job of the sync client: ``status()``, ``info()``, ``result(timeout)``, ``cancel()``."""

    __slots__ = ("_client", "created", "id", "queue")

    def __init__(self, client: JobMethods, queue: str, job_id: str, created: bool = False) -> None:
        self._client = client
        self.queue = queue
        self.id = job_id
        self.created = created
        """True when the enqueue that returned this handle made the job (False: a job of its
        idempotency key existed already)."""

    def __repr__(self) -> str:
        return f"Job({self.queue!r}, {self.id!r})"

    def info(self) -> JobInfo | None:
        """The job's record; None once it has expired (or was dropped)."""
        return self._client.get_job(self.queue, self.id)

    def status(self) -> JobStatus | None:
        """The job's status; None once its record has expired."""
        info = self.info()
        return info.status if info else None

    def result(self, timeout: float | None = None) -> Any:
        """Waits for the job to end, blocked on the server (no polling), and returns what its
        handler returned. Raises ``JobFailed`` (``DeadlineExceeded`` for a missed deadline),
        ``JobCancelled``, ``JobNotFound`` when its record is gone, or ``JobTimeout`` (a
        ``TimeoutError``) after ``timeout`` seconds; the job itself goes on."""
        return outcome(self._client.wait_for_job(self.queue, self.id, timeout))

    def cancel(self) -> bool:
        """Cancels the job unless it has ended; True when this call cancelled it. A running
        job's handler sees it (docs/jobs.md, rule J10)."""
        before = self._client.cancel_job(self.queue, self.id)
        return before is not None and not before.terminal


class AsyncJob:
    """A job of the asyncio client; the methods of :class:`Job`, as coroutines."""

    __slots__ = ("_client", "created", "id", "queue")

    def __init__(
        self, client: AsyncJobMethods, queue: str, job_id: str, created: bool = False
    ) -> None:
        self._client = client
        self.queue = queue
        self.id = job_id
        self.created = created

    def __repr__(self) -> str:
        return f"AsyncJob({self.queue!r}, {self.id!r})"

    async def info(self) -> JobInfo | None:
        """See :meth:`Job.info`."""
        return await self._client.get_job(self.queue, self.id)

    async def status(self) -> JobStatus | None:
        """See :meth:`Job.status`."""
        info = await self.info()
        return info.status if info else None

    async def result(self, timeout: float | None = None) -> Any:
        """See :meth:`Job.result`."""
        return outcome(await self._client.wait_for_job(self.queue, self.id, timeout))

    async def cancel(self) -> bool:
        """See :meth:`Job.cancel`."""
        before = await self._client.cancel_job(self.queue, self.id)
        return before is not None and not before.terminal
