"""Running one attempt of a job (docs/runtime.md, "Jobs"): decode its arguments, find and
call its handler, and turn what happened into the report the worker sends with its next
claim. Sync handlers run on a thread pool, ``async def`` ones on the worker's one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..codec import optional_at
from ..handlers import Fail, Handler, JobContext, Registry, Retry
from ..job_models import ClaimedJob, job_lease_ms
from ..job_ops import Report

log = logging.getLogger("dtaskq.worker")

COMPLETED, FAILED, FAILED_FOR_GOOD = "c", "f", "F"
MAX_ERROR_CHARS = 4096
CANCEL_CHECK_S = 1.0


class EventLoopThread:
    """One asyncio event loop on its own thread, for every ``async def`` handler of a worker
    (not one loop per job)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="dtaskq-job-loop", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops the loop once its queued callbacks ran, and waits for its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, cut to MAX_ERROR_CHARS."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def renew_period_s(timeout_ms: int | None) -> float:
    """Seconds between two heartbeats of a running job: a third of its lease, so two can
    fail before it runs out, and at most CANCEL_CHECK_S, which bounds how long a handler
    runs on before it learns that its job was cancelled."""
    return min(CANCEL_CHECK_S, job_lease_ms(timeout_ms) / 3000)


class Attempt:
    """One attempt of a claimed job on this worker: its context, its report once decided, and
    whether the worker gave up on it (timed out, released or lost): a late outcome is then
    dropped."""

    __slots__ = (
        "_context",
        "_heartbeat",
        "abandoned",
        "ends_at",
        "future",
        "is_async",
        "job",
        "renew_at",
    )

    def __init__(self, job: ClaimedJob, heartbeat: Callable[[Attempt], bool]) -> None:
        self.job = job
        started = time.monotonic()
        self.ends_at = started + job.timeout_ms / 1000 if job.timeout_ms else None
        self.renew_at = started + renew_period_s(job.timeout_ms)
        self.is_async = False
        self.future: asyncio.Task[None] | None = None
        self.abandoned = False
        self._heartbeat = heartbeat
        self._context: JobContext | None = None

    @property
    def context(self) -> JobContext:
        """The handler's view of this attempt, made when first asked for: most handlers
        never take one."""
        if self._context is None:
            job = self.job
            self._context = JobContext(
                job.queue,
                job.id,
                job.attempt,
                job.max_attempts,
                optional_at(job.deadline_ms or 0),
                lambda: self._heartbeat(self),
            )
            if self.abandoned:
                self._context.cancel()
        return self._context

    def give_up(self) -> None:
        """The worker no longer cares for this attempt: its outcome will be dropped, and its
        handler, if it took a context, sees ``cancelled``."""
        self.abandoned = True
        if self._context is not None:
            self._context.cancel()

    def cancel_task(self) -> None:
        """Cancels the asyncio task of an async attempt (call on its loop)."""
        if self.future is not None:
            self.future.cancel()

    def report(self, code: str, value: bytes, delay_ms: int = 0) -> Report:
        """The report of this attempt."""
        return Report(self.job.id, self.job.token, code, value, delay_ms)

    def failure(self, exc: BaseException) -> Report:
        """The report of a handler that raised ``exc``: ``Fail`` ends the job; any other
        error is retried after ``Retry``'s delay or the job's backoff while attempts remain."""
        if isinstance(exc, Fail):
            return self.report(FAILED_FOR_GOOD, exc.reason.encode(errors="replace"))
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = int(exc.delay * 1000)
        else:
            delay = self.job.backoff.delay_ms(self.job.failures + 1)
        return self.report(FAILED, error_text(exc).encode(errors="replace"), delay)

    def timed_out(self) -> Report:
        """The report of an attempt that ran past its timeout."""
        error = TimeoutError(f"the job ran past its timeout of {self.job.timeout_ms} ms")
        return self.failure(error)


def prepare(attempt: Attempt, registry: Registry) -> tuple[Handler[Any, Any], Any, Any] | Report:
    """The handler and arguments of an attempt, or the report that fails it for good: an
    unknown handler, arguments that do not decode, or that do not fit the function."""
    job = attempt.job
    handler = registry.get(job.handler)
    if handler is None:
        return attempt.report(
            FAILED_FOR_GOOD, f"UnknownHandler: no handler named {job.handler}".encode()
        )
    try:
        args, kwargs = msgpack.unpackb(job.arguments, raw=False)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError("expected [args, kwargs]")
    except Exception as exc:
        return attempt.report(FAILED_FOR_GOOD, f"BadPayload: {exc}"[:MAX_ERROR_CHARS].encode())
    try:
        handler.check(args, kwargs)
    except Exception as exc:
        return attempt.report(FAILED_FOR_GOOD, error_text(exc).encode())
    if handler.takes_context:
        args = [attempt.context, *args]
    return handler, args, kwargs


def completed(attempt: Attempt, value: Any) -> Report:
    """The report of a handler that returned ``value``; a value msgpack cannot encode fails
    the job for good (it would fail the same way again)."""
    try:
        packed = msgpack.packb(value, use_bin_type=True)
    except Exception as exc:
        error = f"BadResult: the handler's return value cannot be encoded with msgpack: {exc}"
        return attempt.report(FAILED_FOR_GOOD, error[:MAX_ERROR_CHARS].encode())
    return attempt.report(COMPLETED, packed)


def failed(attempt: Attempt, exc: Exception) -> Report:
    """Logs a handler's error (with its traceback unless it asked for a retry or a failure)
    and returns the attempt's report."""
    asked = isinstance(exc, (Retry, Fail))
    log.log(
        logging.INFO if asked else logging.WARNING,
        "job %s failed: %s",
        attempt.job.id,
        error_text(exc),
        exc_info=not asked,
    )
    return attempt.failure(exc)


def run_sync(attempt: Attempt, handler: Handler[Any, Any], args: Any, kwargs: Any) -> Report:
    """Runs a sync handler on the calling thread; its report."""
    try:
        return completed(attempt, handler.fn(*args, **kwargs))
    except Exception as exc:
        return failed(attempt, exc)


async def run_async(attempt: Attempt, handler: Handler[Any, Any], args: Any, kwargs: Any) -> Report:
    """Runs an ``async def`` handler on the worker's loop, cancelled at its timeout."""
    timeout = attempt.job.timeout_ms / 1000 if attempt.job.timeout_ms else None
    try:
        value = await asyncio.wait_for(handler.fn(*args, **kwargs), timeout)
    except TimeoutError:
        return attempt.timed_out()
    except Exception as exc:
        return failed(attempt, exc)
    return completed(attempt, value)
