"""Burst mode of ``dtaskq.testing`` (docs/testing.md): a real worker drains real queues on
every kind of server the ``client`` fixture gives, and its counts match what the server
recorded for each job."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import one_server, python_snippets

import dtaskq
from dtaskq import BurstTimeout, Fail, InvalidArgument, JobContext, JobFailed, JobStatus, Retry
from dtaskq.testing import run_burst

QUEUE = "burst"
DOC = Path(__file__).parents[1] / "docs" / "testing.md"


@pytest.fixture
def registry(client: dtaskq.Client) -> dtaskq.Registry:
    """Handlers of every outcome: a sum, a Fail, an error, one that succeeds on its second
    attempt, an async one, one that returns what msgpack cannot encode, and one that
    enqueues a job of ``add`` on the test's client."""
    registry = dtaskq.Registry(queue=QUEUE)

    @registry.handler("add")
    def add(a: int, b: int) -> int:
        return a + b

    @registry.handler("refuse")
    def refuse(why: str) -> None:
        raise Fail(why)

    @registry.handler("crash", max_attempts=2, backoff=0.001)
    def crash() -> None:
        raise ValueError("always")

    @registry.handler("second_time", max_attempts=3, backoff=0.001)
    def second_time(ctx: JobContext, tag: str) -> list[object]:
        if ctx.attempt == 1:
            raise Retry("not yet", delay=0.05)
        return [tag, ctx.attempt]

    @registry.handler("double")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @registry.handler("opaque")
    def opaque() -> object:
        return object()

    @registry.handler("chain")
    def chain(n: int) -> int:
        add.enqueue(client, n, 1)
        return n

    return registry


def handler(registry: dtaskq.Registry, name: str) -> dtaskq.Handler[..., object]:
    found = registry.get(name)
    assert found is not None
    return found


def test_a_burst_drains_a_queue_and_counts_what_the_server_settled(
    client: dtaskq.Client, registry: dtaskq.Registry
) -> None:
    adds = [handler(registry, "add").enqueue(client, i, i) for i in range(5)]
    refused = handler(registry, "refuse").enqueue(client, "no")
    crashed = handler(registry, "crash").enqueue(client)
    retried = handler(registry, "second_time").enqueue(client, "t")
    doubled = handler(registry, "double").enqueue(client, 21)
    opaque = handler(registry, "opaque").enqueue(client)

    result = run_burst(client, registry, timeout=60)

    # add x5, second_time and double completed; refuse, crash and opaque failed for good;
    # crash's first attempt and second_time's first were retried.
    assert (result.completed, result.failed, result.retried) == (7, 3, 2)
    assert (result.started, result.turned_away, result.next_due) == (12, 0, None)
    assert [job.result(timeout=5) for job in adds] == [0, 2, 4, 6, 8]
    assert retried.result(timeout=5) == ["t", 2]
    assert doubled.result(timeout=5) == 42
    for job, error in [
        (refused, "no"),
        (crashed, "ValueError: always"),
        (opaque, "BadResult: "),
    ]:
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=5)
        assert failed.value.error.startswith(error)
    everything = [*adds, refused, crashed, retried, doubled, opaque]
    assert {result.status(job) for job in everything} == {JobStatus.COMPLETED, JobStatus.FAILED}
    for job in everything:
        info = job.info()
        assert info is not None
        assert result.status(job) is info.status
        assert info.node is not None and info.node.startswith("burst-")
    assert len(result.statuses) == len(everything)
    assert {dead.id for dead in client.dead_jobs(QUEUE)} == {refused.id, crashed.id, opaque.id}


def test_a_burst_runs_the_jobs_its_handlers_enqueue(
    client: dtaskq.Client, registry: dtaskq.Registry
) -> None:
    chained = [handler(registry, "chain").enqueue(client, n) for n in range(3)]
    # One slot: each chained job is enqueued while the only slot is busy, so the runner
    # learns of it only from its wake marker, after the report of the job that enqueued it.
    result = run_burst(client, registry, concurrency=1, timeout=60)
    assert (result.completed, result.failed, result.started) == (6, 0, 6)
    assert [job.result(timeout=5) for job in chained] == [0, 1, 2]


def test_a_burst_waits_for_delayed_jobs_unless_told_not_to(
    client: dtaskq.Client, registry: dtaskq.Registry
) -> None:
    add = handler(registry, "add")
    soon = add.using(delay=0.3).enqueue(client, 1, 1)
    assert run_burst(client, registry, timeout=60).completed == 1
    assert soon.result(timeout=5) == 2

    later = add.using(delay=60).enqueue(client, 2, 2)
    result = run_burst(client, registry, timeout=60, wait_scheduled=False)
    assert (result.started, result.completed) == (0, 0)
    assert result.next_due is not None and 30 < result.next_due <= 60
    assert later.status() is JobStatus.SCHEDULED
    with pytest.raises(BurstTimeout, match="scheduled"):
        run_burst(client, registry, timeout=5)


def test_a_burst_serves_only_the_queues_it_is_given(
    client: dtaskq.Client, registry: dtaskq.Registry
) -> None:
    @registry.handler("elsewhere", queue="other")
    def elsewhere() -> str:
        return "ran"

    other = elsewhere.enqueue(client)
    here = handler(registry, "add").enqueue(client, 1, 2)
    assert run_burst(client, registry, [QUEUE], timeout=60).completed == 1
    assert (here.status(), other.status()) == (JobStatus.COMPLETED, JobStatus.QUEUED)
    assert run_burst(client, registry, timeout=60).completed == 1
    assert other.result(timeout=5) == "ran"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a handler blocks on; set at the end of the test whatever happened."""
    event = threading.Event()
    yield event
    event.set()


def test_a_burst_that_does_not_drain_raises_and_releases_what_runs(
    client: dtaskq.Client, registry: dtaskq.Registry, gate: threading.Event
) -> None:
    @registry.handler("stuck")
    def stuck() -> None:
        gate.wait(120)

    job = stuck.enqueue(client)
    with pytest.raises(BurstTimeout, match="jobs running on its worker: 1"):
        run_burst(client, registry, timeout=0.5)
    # Released at the stop without counting an attempt: the next worker gets it at once.
    assert job.status() is JobStatus.QUEUED


def test_a_burst_waits_for_jobs_that_run_elsewhere(
    client: dtaskq.Client, registry: dtaskq.Registry
) -> None:
    job = handler(registry, "add").enqueue(client, 1, 2)
    (part,) = client.queue_partitions(QUEUE)
    claimed = client.claim_jobs(part, "another-node", 1).jobs
    assert [c.id for c in claimed] == [job.id]
    with pytest.raises(BurstTimeout, match="jobs run elsewhere: 1"):
        run_burst(client, registry, timeout=0.5)
    assert client.release_jobs(part, "another-node", [(job.id, claimed[0].token)]) == [True]
    assert run_burst(client, registry, timeout=60).completed == 1


@one_server  # checked before any Redis call
def test_burst_arguments_are_checked(client: dtaskq.Client, registry: dtaskq.Registry) -> None:
    with pytest.raises(InvalidArgument, match="timeout"):
        run_burst(client, registry, timeout=-1)
    with pytest.raises(InvalidArgument, match="no handler"):
        run_burst(client, dtaskq.Registry())
    with pytest.raises(InvalidArgument, match="sync client"):
        run_burst(object(), registry)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="Registry"):
        run_burst(client, {"add": registry.get("add")})  # type: ignore[arg-type]


def test_the_eager_and_burst_examples_of_the_docs_run(client: dtaskq.Client) -> None:
    registry_code, eager_example, burst_example, _ = python_snippets(DOC)
    names: dict[str, object] = {"__name__": "docs_testing"}
    for code in (registry_code, eager_example, burst_example):
        exec(compile(code, str(DOC), "exec"), names)
    eager_test = names["test_send_welcome"]
    burst_test = names["test_send_welcome_on_a_worker"]
    assert callable(eager_test) and callable(burst_test)
    eager_test()
    burst_test(client)
