"""Eager mode of ``dtaskq.testing`` (docs/testing.md): jobs run in-process at enqueue time,
with the msgpack round trips and the outcomes of real jobs, and no server."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

import dtaskq
from dtaskq import (
    DeadlineExceeded,
    Fail,
    InvalidArgument,
    JobCancelled,
    JobContext,
    JobFailed,
    JobNotFound,
    JobSpec,
    JobStatus,
    JobTimeout,
    Retry,
)
from dtaskq.testing import AsyncEagerClient, EagerClient

Q = "jobs"
registry = dtaskq.Registry(queue=Q)
calls: list[tuple[str, object]] = []
"""What the handlers below saw, in order; cleared before each test."""
tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="")


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


@registry.handler("echo")
def echo(*args: object, **kwargs: object) -> list[object]:
    calls.append(("echo", (args, kwargs)))
    return [list(args), kwargs]


@registry.handler("returns")
def returns(value: str) -> object:
    return {"set": {1}, "tuple": (1, 2), "bytes": b"\xff", "none": None}[value]


@registry.handler("flaky", max_attempts=3)
def flaky(ctx: JobContext, succeed_on: int, error: str = "retry") -> int:
    calls.append(("flaky", ctx.attempt))
    if ctx.attempt < succeed_on:
        if error == "retry":
            raise Retry("not yet", delay=3600)
        raise ValueError(f"attempt {ctx.attempt}")
    return ctx.attempt


@registry.handler("refuse", max_attempts=5)
def refuse(reason: str) -> None:
    raise Fail(reason)


@registry.handler("double")
async def double(x: int) -> int:
    calls.append(("double", (asyncio.get_running_loop(), threading.get_ident(), tag.get())))
    await asyncio.sleep(0)
    return 2 * x


@registry.handler("sleepy", timeout=0.05)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@registry.handler("slow", timeout=0.2)
async def slow() -> str:
    await asyncio.sleep(60)
    return "never"


@registry.handler("introspect")
def introspect(ctx: JobContext) -> list[object]:
    info = eager_client.get_job(Q, ctx.job_id)
    assert info is not None
    child = echo.enqueue(eager_client, "child")
    return [info.status.value, info.attempt, ctx.heartbeat(), child.result()]


@registry.handler("self_cancel")
def self_cancel(ctx: JobContext) -> str:
    before = (ctx.heartbeat(), ctx.cancelled)
    assert eager_client.cancel_job(Q, ctx.job_id) is JobStatus.RUNNING
    calls.append(("self_cancel", (before, ctx.heartbeat(), ctx.cancelled)))
    return "turned away"


eager_client = EagerClient(registry)


def test_a_job_runs_at_enqueue_and_its_handle_is_a_real_job() -> None:
    eager = EagerClient(registry)
    job = echo.enqueue(eager, 1, "two", three=3.0)
    assert calls == [("echo", ((1, "two"), {"three": 3.0}))]
    assert isinstance(job, dtaskq.Job) and job.created
    assert job.status() is JobStatus.COMPLETED
    assert job.result() == [[1, "two"], {"three": 3.0}]
    info = job.info()
    assert info is not None
    assert (info.handler, info.attempt, info.failures, info.node) == ("echo", 1, 0, "eager")
    assert info.started_at is not None and info.finished_at is not None
    assert eager.get_job(Q, job.id) == info
    assert eager.job(Q, job.id).result() == job.result()
    assert not job.cancel()  # it has ended


def test_arguments_and_results_go_through_msgpack() -> None:
    eager = EagerClient(registry)
    job = eager.enqueue(Q, "echo", ((1, 2), b"\x00\xff"), {"k": {"n": None}})
    # A tuple arrives as a list, as it does on a worker; bytes stay bytes.
    assert calls == [("echo", (([1, 2], b"\x00\xff"), {"k": {"n": None}}))]
    assert job.result() == [[[1, 2], b"\x00\xff"], {"k": {"n": None}}]
    assert returns.enqueue(eager, "tuple").result() == [1, 2]
    assert returns.enqueue(eager, "bytes").result() == b"\xff"
    assert returns.enqueue(eager, "none").result() is None


def test_what_msgpack_cannot_encode_is_refused_or_fails_the_job() -> None:
    eager = EagerClient(registry)
    with pytest.raises(InvalidArgument, match="cannot be encoded with msgpack"):
        echo.enqueue(eager, object())
    # Every spec is checked before any job runs.
    specs = [JobSpec("echo", ("fine",)), JobSpec("echo", ({1, 2},))]
    with pytest.raises(InvalidArgument, match="cannot be encoded with msgpack"):
        eager.enqueue_many(Q, specs)
    assert calls == []
    with pytest.raises(JobFailed, match="BadResult") as failed:
        returns.enqueue(eager, "set").result()
    assert failed.value.error.startswith("BadResult: the handler's return value cannot be")


def test_arguments_that_do_not_fit_and_unknown_handlers_fail_the_job() -> None:
    eager = EagerClient(registry)
    with pytest.raises(InvalidArgument, match="bad arguments for handler flaky"):
        flaky.enqueue(eager, 1, 2, 3)  # checked by Handler.enqueue, as with a real client
    with pytest.raises(JobFailed, match="bad arguments for handler flaky"):
        eager.enqueue(Q, "flaky", (1, 2, 3)).result()  # by name: the worker's check
    with pytest.raises(JobFailed, match="UnknownHandler: no handler named nope"):
        eager.enqueue(Q, "nope").result()


def test_retries_run_at_once_up_to_max_attempts() -> None:
    eager = EagerClient(registry)
    started = time.monotonic()
    job = flaky.enqueue(eager, 3)
    assert time.monotonic() - started < 60  # Retry's delay of an hour was not slept
    assert job.result() == 3
    info = job.info()
    assert info is not None
    assert (info.attempt, info.failures, info.error) == (3, 2, "Retry: not yet")
    assert calls == [("flaky", 1), ("flaky", 2), ("flaky", 3)]

    calls.clear()
    failing = flaky.enqueue(eager, 9, "raise")
    with pytest.raises(JobFailed, match="ValueError: attempt 3") as failed:
        failing.result()
    assert failed.value.job_id == failing.id
    assert calls == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    assert [(d.id, d.failures, d.error) for d in eager.dead_jobs(Q)] == [
        (failing.id, 3, "ValueError: attempt 3")
    ]


def test_fail_ends_the_job_whatever_attempts_are_left() -> None:
    eager = EagerClient(registry)
    job = refuse.enqueue(eager, "bad input")
    with pytest.raises(JobFailed) as failed:
        job.result()
    assert failed.value.error == "bad input"
    info = job.info()
    assert info is not None
    assert (info.status, info.attempt, info.failures) == (JobStatus.FAILED, 1, 1)
    assert [d.id for d in eager.dead_jobs(Q)] == [job.id]


def test_timeouts_fail_the_attempt_as_on_a_worker() -> None:
    eager = EagerClient(registry)
    assert sleepy.enqueue(eager, 0).result() == "woke"
    # A sync handler cannot be stopped: its late result is dropped, as a worker drops it.
    with pytest.raises(JobFailed, match="TimeoutError: the job ran past its timeout of 50 ms"):
        sleepy.enqueue(eager, 0.1).result()
    with pytest.raises(JobFailed, match="TimeoutError: the job ran past its timeout of 200 ms"):
        slow.enqueue(eager).result()


def test_async_handlers_run_in_a_fresh_loop_of_their_own() -> None:
    eager = EagerClient(registry)
    token = tag.set("outer")
    try:
        assert double.enqueue(eager, 21).result() == 42
        assert double.enqueue(eager, 1).result() == 2
    finally:
        tag.reset(token)
    (_, (loop1, thread1, seen)), (_, (loop2, _, _)) = calls
    assert loop1 is not loop2
    assert thread1 != threading.get_ident()
    assert seen == "outer"  # the caller's context variables go along


async def test_the_sync_client_works_inside_a_running_loop() -> None:
    eager = EagerClient(registry)
    assert double.enqueue(eager, 5).result() == 10
    assert echo.enqueue(eager, "x").result() == [["x"], {}]
    ((_, (loop, _, _)), _) = calls
    assert loop is not asyncio.get_running_loop()


async def test_the_async_client_awaits_handlers_on_the_running_loop() -> None:
    eager = AsyncEagerClient(registry)
    job = await double.enqueue(eager, 4)
    assert isinstance(job, dtaskq.AsyncJob)
    assert await job.result() == 8
    assert await job.status() is JobStatus.COMPLETED
    assert calls[0][1][0] is asyncio.get_running_loop()  # type: ignore[index]
    assert await (await flaky.enqueue(eager, 2)).result() == 2
    with pytest.raises(JobFailed):
        await (await refuse.enqueue(eager, "no")).result()
    assert [d.error for d in await eager.dead_jobs(Q)] == ["no"]
    info = await eager.get_job(Q, job.id)
    assert info is not None and info.result == 8
    assert await eager.job(Q, job.id).result() == 8


def test_handlers_see_their_running_job_and_may_enqueue_more() -> None:
    status, attempt, alive, child = introspect.enqueue(eager_client).result()
    assert (status, attempt, alive) == ("RUNNING", 1, True)
    assert child == [["child"], {}]


def test_a_job_cancelled_while_it_runs_ends_cancelled() -> None:
    job = self_cancel.enqueue(eager_client)
    assert calls == [("self_cancel", ((True, False), False, True))]
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        job.result()


def test_jobs_of_queues_that_are_not_served_never_run() -> None:
    eager = EagerClient(registry, queues=["other"])
    job = echo.enqueue(eager, 1)
    assert calls == []
    assert job.status() is JobStatus.QUEUED
    with pytest.raises(JobTimeout):
        job.result()
    assert job.cancel()
    with pytest.raises(JobCancelled):
        job.result()
    assert eager.enqueue("other", "echo", (2,)).result() == [[2], {}]


def test_options_idempotency_result_ttl_and_deadlines() -> None:
    eager = EagerClient(registry)
    first = echo.using(idempotency_key="once").enqueue(eager, 1)
    again = echo.using(idempotency_key="once").enqueue(eager, 2)
    assert (first.id, first.created, again.id, again.created) == ("=once", True, "=once", False)
    assert again.result() == [[1], {}] and len(calls) == 1
    info = first.info()
    assert info is not None and info.idempotency_key == "once"

    # delay and priority are recorded, not waited for.
    delayed = echo.using(delay=3600, priority=5).enqueue(eager, 3)
    info = delayed.info()
    assert info is not None and info.priority == 5 and info.run_at is not None
    assert delayed.result() == [[3], {}]

    with pytest.raises(JobNotFound):  # a result TTL of 0 keeps no record
        echo.using(result_ttl=0).enqueue(eager, 4).result()

    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(DeadlineExceeded, match="deadline passed before the job started"):
        echo.using(deadline=past).enqueue(eager, 5).result()
    with pytest.raises(JobNotFound):
        echo.using(deadline=past, on_deadline="drop").enqueue(eager, 6).result()
    assert len(calls) == 3
    assert echo.using(deadline=past + timedelta(hours=1)).enqueue(eager, 7).result()


def test_eager_client_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="Registry"):
        EagerClient({"echo": echo})  # type: ignore[arg-type]
    eager = EagerClient(registry)
    with pytest.raises(InvalidArgument, match="namespace"):
        eager.enqueue("bad queue", "echo")
    with pytest.raises(InvalidArgument, match="unknown job options: colour"):
        eager.enqueue(Q, "echo", colour="red")  # type: ignore[call-arg]
    with pytest.raises(InvalidArgument, match="timeout"):
        eager.wait_for_job(Q, echo.enqueue(eager).id, timeout=-1)
    assert eager.get_job(Q, "missing") is None
    with pytest.raises(JobNotFound):
        eager.job(Q, "missing").result()
