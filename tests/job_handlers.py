"""Job handlers for tests that run real ``dtaskq worker --handlers job_handlers`` processes.

Every side effect is appended, as JSON, to the Redis list ``$DTQ_TEST_LOG`` on the server
``$DTQ_TEST_URL``: an append-only record of what each node ran, so that tests can count
at-least-once executions against dtaskq's own accounting.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from support import raw_client

import dtaskq
from dtaskq import Fail, JobContext, Retry

jobs = dtaskq.Registry("jobs")
_local = threading.local()


def _log(ctx: JobContext, what: str, **fields: Any) -> None:
    if not hasattr(_local, "redis"):
        _local.redis = raw_client(os.environ["DTQ_TEST_URL"])
    entry = {
        "what": what,
        "job": ctx.job_id,
        "attempt": ctx.attempt,
        "node": os.environ.get("DTQ_TEST_NODE", ""),
        "thread": threading.get_ident(),
        "t": time.time(),
        **fields,
    }
    _local.redis.rpush(os.environ["DTQ_TEST_LOG"], json.dumps(entry))


@jobs.handler("record")
def record(ctx: JobContext, value: Any, work_s: float = 0.0) -> Any:
    """Logs that it ran, works ``work_s`` (stopping early when cancelled), returns ``value``."""
    _log(ctx, "ran")
    end = time.monotonic() + work_s
    while time.monotonic() < end and not ctx.cancelled:
        time.sleep(0.005)
    _log(ctx, "cancelled" if ctx.cancelled else "done")
    return value


@jobs.handler("block")
def block(ctx: JobContext, seconds: float) -> str:
    """Logs, then sleeps ``seconds`` in one call, ignoring cancellation."""
    _log(ctx, "ran")
    time.sleep(seconds)
    _log(ctx, "done")
    return "late"


@jobs.handler("arecord")
async def arecord(ctx: JobContext, value: Any, work_s: float = 0.0) -> Any:
    """The async ``record``: a cancellation or a timeout interrupts its sleep."""
    _log(ctx, "ran")
    try:
        await asyncio.sleep(work_s)
    except asyncio.CancelledError:
        _log(ctx, "cancelled")
        raise
    _log(ctx, "done")
    return value


@jobs.handler("flaky")
def flaky(ctx: JobContext, succeed_on: int) -> int:
    """Asks for a retry until attempt ``succeed_on``."""
    _log(ctx, "ran")
    if ctx.attempt < succeed_on:
        raise Retry(delay=0.05)
    return ctx.attempt


@jobs.handler("doomed")
def doomed(ctx: JobContext) -> None:
    """Fails for good."""
    _log(ctx, "ran")
    raise Fail("doomed from the start")


@jobs.handler("crash")
def crash(ctx: JobContext) -> None:
    """Raises an unexpected error."""
    _log(ctx, "ran")
    raise RuntimeError("boom")
