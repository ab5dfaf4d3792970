"""Real ``dtaskq worker`` processes serving job queues: crashes lose no job, a SIGTERM lets
running jobs finish and hands the rest back, and every job ends once in dtaskq's accounting
however often its side effects ran."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from worker_procs import Workers

import dtaskq
from dtaskq import JobSpec, JobStatus


@pytest.fixture
def queue(namespace: str) -> str:
    """A queue no other test uses."""
    return namespace


def statuses(client: dtaskq.Client, queue: str, jobs: list[dtaskq.Job]) -> Counter[JobStatus]:
    """How many of ``jobs`` are in each status."""
    infos = [client.get_job(queue, job.id) for job in jobs]
    return Counter(info.status for info in infos if info is not None)


def test_a_killed_worker_loses_no_job(client: dtaskq.Client, workers: Workers, queue: str) -> None:
    # A timeout of 1 s gives each job a lease of 6 s: the killed worker's jobs come back then.
    specs = [JobSpec("record", (i, 0.01), timeout=1.0) for i in range(1000)]
    jobs = client.enqueue_many(queue, specs)
    workers.start_jobs("a", queue, concurrency=4)
    workers.start_jobs("b", queue, concurrency=4)
    workers.until(lambda: len(workers.log("done", node="a")) >= 50, what="node a at work")
    workers.procs.kill("a")
    workers.until(
        lambda: (
            statuses(client, queue, jobs[-10:])[JobStatus.COMPLETED] == 10
            and statuses(client, queue, jobs)[JobStatus.COMPLETED] == 1000
        ),
        timeout=120,
        what=lambda: f"every job completed: {statuses(client, queue, jobs)}",
    )
    infos = [client.get_job(queue, job.id) for job in jobs]
    assert [info.result for info in infos if info] == list(range(1000))
    runs = Counter(entry["job"] for entry in workers.log("ran"))
    assert set(runs) == {job.id for job in jobs}, "every job ran at least once"
    again = {job for job, count in runs.items() if count > 1}
    first_node = {}
    for entry in workers.log("ran"):
        first_node.setdefault(entry["job"], entry["node"])
    # Only what the killed node had started but not reported runs twice.
    assert all(first_node[job] == "a" for job in again)
    # A job the killed node claimed runs again under a second claim; it may not have started.
    assert all(runs[info.id] <= info.attempt <= 2 for info in infos if info)


def test_sigterm_lets_running_jobs_finish_and_claims_no_more(
    client: dtaskq.Client, workers: Workers, queue: str
) -> None:
    running = client.enqueue_many(queue, [JobSpec("record", (i, 1.5)) for i in range(2)])
    workers.start_jobs("a", queue, concurrency=2, grace_ms=20_000)
    workers.until(lambda: len(workers.log("ran")) == 2, what="both jobs running")
    waiting = client.enqueue_many(queue, [JobSpec("record", (i,)) for i in range(5)])
    workers.signal("a", signal.SIGTERM)
    code, log = workers.wait("a")
    assert code == 0, log
    assert [job.result(timeout=5) for job in running] == [0, 1]
    assert statuses(client, queue, waiting) == {JobStatus.QUEUED: 5}


def test_past_its_grace_a_stopping_worker_releases_what_still_runs(
    client: dtaskq.Client, workers: Workers, queue: str
) -> None:
    # "block" ignores cancellation: only the release hands its job back.
    job = client.enqueue(queue, "block", args=(60,))
    workers.start_jobs("a", queue, concurrency=1, grace_ms=500)
    workers.until(lambda: workers.log("ran"), what="the job running")
    workers.signal("a", signal.SIGTERM)
    code, log = workers.wait("a", timeout=20)
    assert code == 0, log
    info = client.get_job(queue, job.id)
    assert info is not None and info.status is JobStatus.QUEUED
    assert (info.attempt, info.failures, info.leases_lost) == (0, 0, 0), "a release costs nothing"
    # Another worker takes it at once, under the next token.
    workers.start_jobs("b", queue, concurrency=1)
    workers.until(lambda: workers.log("ran", node="b"), what="node b running the job")
    info = client.get_job(queue, job.id)
    assert info is not None and info.attempt == 1 and info.node == "b"


def test_one_process_serves_tasks_and_jobs(
    client: dtaskq.Client, workers: Workers, queue: str, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", units=["u1", "u2"])
    options = [
        "--url", workers.url, "--prefix", workers.prefix,
        "--namespace", namespace, "--provider", "worker_provider:factory",
        "--queue", queue, "--handlers", "job_handlers:jobs", "--node-id", "both",
    ]  # fmt: skip
    workers.procs.start("both", options, {"DTQ_TEST_NODE": "both"})
    job = client.enqueue(queue, "record", args=("hello",))
    assert job.result(timeout=20) == "hello"
    workers.until(
        lambda: (t := client.get_task(namespace, "t")) and t.status is dtaskq.TaskStatus.FINISHED,
        what="the task finished",
    )
    assert ref.version >= 1
