"""UnitRunner, the ready-made task handle, in this process against a real server."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from netcut import Proxy
from waiting import until

import dtaskq
from dtaskq import InvalidArgument, TaskStatus, UnitStatus
from dtaskq.worker import Claims, FatalError, Gate, Recorder, UnitContext, UnitRunner


def runner_for(
    client: dtaskq.Client, namespace: str, fn: object, *, slots: int = 2, **options: object
) -> tuple[UnitRunner, Claims]:
    task = client.get_task(namespace, "t")
    assert task is not None
    claims = Claims()
    recorder = Recorder(client, task, "n1", claims, Gate(slots))
    return UnitRunner(task, recorder, fn, **options), claims  # type: ignore[arg-type]


def status(client: dtaskq.Client, namespace: str) -> dtaskq.Task:
    task = client.get_task(namespace, "t")
    assert task is not None
    return task


@pytest.mark.parametrize("batch", [1, 5])
def test_every_range_unit_runs_once(client: dtaskq.Client, namespace: str, batch: int) -> None:
    client.add_task(namespace, "t", unit_count=23, workers_hint=2)
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def work(ctx: UnitContext) -> None:
        with lock:
            ran[ctx.unit_number] += 1

    runner, claims = runner_for(client, namespace, work, batch=batch)
    runner.join(10)
    assert runner.done()
    assert ran == Counter(range(23))
    assert status(client, namespace).status is TaskStatus.FINISHED
    assert len(claims) == 0


def test_terminating_releases_units_claimed_ahead(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "t", unit_count=100)
    started, release = threading.Event(), threading.Event()

    def work(ctx: UnitContext) -> None:
        started.set()
        release.wait(10)

    runner, claims = runner_for(client, namespace, work, slots=1, batch=10)
    assert started.wait(5)
    runner.terminate()
    release.set()
    runner.join(5)
    task = status(client, namespace)
    # The running unit returned after termination: left to the next claimer, like the nine
    # claimed ahead of it. Nothing stays IN_PROGRESS, nothing completed.
    assert task.counts[UnitStatus.IN_PROGRESS] == 0
    assert task.counts[UnitStatus.COMPLETED] == 0
    assert len(claims) == 0


def test_exceptions_fail_only_their_unit(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "t", units=["ok", "flaky"], max_attempts=2, retry_backoff_ms=1)

    def work(ctx: UnitContext) -> None:
        if ctx.unit == "flaky" and ctx.token == 1:
            raise RuntimeError("first try")

    runner, _ = runner_for(client, namespace, work)
    runner.join(10)
    task = status(client, namespace)
    # The retried unit came back while the runner still ran: it was claimed again.
    assert task.status is TaskStatus.FINISHED
    assert (task.units["ok"].attempt, task.units["flaky"].attempt) == (1, 2)


def test_fatal_error_fails_the_task_at_once(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "t", units=["bad"], max_attempts=5)

    def work(ctx: UnitContext) -> None:
        raise FatalError("no point retrying")

    runner, _ = runner_for(client, namespace, work)
    runner.join(10)
    task = status(client, namespace)
    assert task.status is TaskStatus.FAILED
    assert task.error == "unit bad failed: FatalError: no point retrying"


def test_coroutine_functions_run(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "t", units=["a", "b"])
    seen: list[str] = []

    async def work(ctx: UnitContext) -> None:
        await asyncio.sleep(0.01)
        seen.append(ctx.unit)

    runner, _ = runner_for(client, namespace, work)
    runner.join(10)
    assert sorted(seen) == ["a", "b"]
    assert status(client, namespace).status is TaskStatus.FINISHED


def test_coroutine_units_of_a_thread_share_one_event_loop(
    client: dtaskq.Client, namespace: str
) -> None:
    client.add_task(namespace, "t", units=["a", "b", "c"])
    loops: list[tuple[int, asyncio.AbstractEventLoop]] = []

    async def work(ctx: UnitContext) -> None:
        await asyncio.sleep(0)
        loops.append((threading.get_ident(), asyncio.get_running_loop()))

    runner, _ = runner_for(client, namespace, work, concurrency=1)
    runner.join(10)
    assert runner.done()
    assert status(client, namespace).status is TaskStatus.FINISHED
    (thread, loop), *others = loops
    assert len(others) == 2
    assert all(t == thread and other is loop for t, other in others)
    assert loop.is_closed()  # with the thread that ran it


def test_bad_batch_is_rejected(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "t", unit_count=3)
    with pytest.raises(InvalidArgument):
        runner_for(client, namespace, lambda ctx: None, batch=0)
    assert status(client, namespace).counts[UnitStatus.PENDING] == 3


def test_a_named_unit_back_from_a_dead_node_runs_while_siblings_work(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", units=["long", "lost"], lease_ms=1000)
    client.claim_unit(ref, "dead", "lost")  # its holder never reports: the lease runs out
    done: list[str] = []
    release = threading.Event()

    def work(ctx: UnitContext) -> None:
        while ctx.unit == "long" and not release.wait(0.05):
            ctx.heartbeat()  # no worker here renews leases: the unit does it itself
        done.append(ctx.unit)

    runner, _ = runner_for(client, namespace, work)
    # Only the dead node's lease runs out: "long" is renewed every 50 ms.
    assert until(lambda: client.sweep(namespace).reclaimed, what="the dead lease to end") == 1
    runner.recorder.units_returned()  # what the scheduler does on the `returned` event
    until(lambda: "lost" in done, what="the returned unit to run")
    assert done == ["lost"]  # while "long" still runs on the other thread
    release.set()
    runner.join(5)
    assert status(client, namespace).status is TaskStatus.FINISHED


@pytest.mark.parametrize("found_by", ["heartbeat", "report"])
def test_nothing_is_reported_for_a_unit_whose_lease_was_lost(
    client: dtaskq.Client, namespace: str, found_by: str
) -> None:
    client.add_task(namespace, "t", units=["u"], lease_ms=1000)
    seen: list[tuple[bool, bool]] = []

    def work(ctx: UnitContext) -> None:
        if ctx.token > 1:
            return  # the unit came back and was claimed again: this run counts
        # Nothing renews the lease here: wait until the sweep hands the unit back to anyone.
        until(lambda: client.sweep(namespace).reclaimed, what="the lease to run out")
        if found_by == "heartbeat":
            ctx.heartbeat()  # finds the lease lost, as the worker's heartbeat thread would
        seen.append((ctx.progress(0.5), ctx.terminated))
        raise RuntimeError("gave up")  # even a failure no longer counts

    runner, claims = runner_for(client, namespace, work)
    runner.join(20)
    assert runner.done()
    assert seen == [(False, True)]
    task = status(client, namespace)
    unit = task.units["u"]
    # The failure of the first run was never reported: the unit was claimed again (by the
    # runner itself, as any returned unit) and completed under the next token.
    assert (task.status, unit.status, unit.attempt, unit.error) == (
        TaskStatus.FINISHED,
        UnitStatus.COMPLETED,
        2,
        "",
    )
    assert len(claims) == 0


class WatchedRecorder(Recorder):
    """A recorder that tells when a runner thread has gone idle, waiting for units to come
    back."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.idle = threading.Event()

    def wait_returned(self, timeout: float) -> bool:
        self.idle.set()
        return super().wait_returned(timeout)


@pytest.fixture
def proxy(server_url: str) -> Iterator[Proxy]:
    """A proxy to the test server whose link the test cuts and restores."""
    with Proxy(server_url) as p:
        yield p


def test_a_thread_waiting_for_units_outlives_an_outage(
    client: dtaskq.Client,
    namespace: str,
    prefix: str,
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dtaskq")
    ref = client.add_task(namespace, "t", units=["long", "back"])
    held = client.claim_unit(ref, "dead", "back")
    started, finish = threading.Event(), threading.Event()
    ran: list[str] = []

    def work(ctx: UnitContext) -> None:
        ran.append(ctx.unit)
        if ctx.unit == "long":
            started.set()
            finish.wait(30)

    # The runner reaches the server through the proxy, and gives up on a call at once.
    with dtaskq.Client.from_url(proxy.url, prefix=prefix, retry_attempts=1) as cut_off:
        task = cut_off.get_task(namespace, "t")
        assert task is not None
        recorder = WatchedRecorder(cut_off, task, "n1", Claims(), Gate(2))
        runner = UnitRunner(task, recorder, work, concurrency=2)
        # One thread runs "long"; the other found "back" held elsewhere and waits idle.
        assert started.wait(10) and recorder.idle.wait(10)
        proxy.cut()
        client.release("dead", [(ref, "back", held)])
        recorder.units_returned()  # what the scheduler does on the `returned` event
        until(
            lambda: any("claim failed" in r.getMessage() for r in caplog.records),
            what="a failed attempt to claim the returned unit",
        )
        proxy.restore()
        until(lambda: "back" in ran, what="the returned unit to run")
        finish.set()
        runner.join(10)
        assert runner.done()
    task = status(client, namespace)
    assert task.status is TaskStatus.FINISHED
    assert Counter(ran) == {"long": 1, "back": 1}
