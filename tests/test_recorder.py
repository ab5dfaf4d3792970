"""The recorder (``docs/runtime.md``): its throttle, driven by a fake clock, and its tokens,
against a real server."""

from __future__ import annotations

import time

import pytest
from netcut import Proxy
from waiting import until

import dtaskq
from dtaskq import InvalidArgument, LeaseLost, TaskStatus, TransientError, UnitStatus
from dtaskq.worker import Claims, Gate, Recorder, Worker


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder_for(
    client: dtaskq.Client, namespace: str, clock: Clock, **options: object
) -> Recorder:
    client.add_task(namespace, "t", units=["u1", "u2"], **options)  # type: ignore[arg-type]
    task = client.get_task(namespace, "t")
    assert task is not None
    return Recorder(client, task, "n1", Claims(), Gate(1), interval=3.0, clock=clock)


def progress(client: dtaskq.Client, namespace: str, unit: str) -> float:
    task = client.get_task(namespace, "t")
    assert task is not None
    return task.units[unit].progress


def test_progress_is_forwarded_at_most_once_per_interval(
    client: dtaskq.Client, namespace: str
) -> None:
    clock = Clock()
    rec = recorder_for(client, namespace, clock)
    assert rec.claim("u1") == 1
    assert rec.progress("u1", 0.2) is True
    clock.now += 1.0
    assert rec.progress("u1", 0.3) is False
    clock.now += 1.999
    assert rec.progress("u1", 0.4) is False
    assert progress(client, namespace, "u1") == 0.2
    clock.now += 0.001
    assert rec.progress("u1", 0.5) is True
    assert progress(client, namespace, "u1") == 0.5
    # Throttling is per unit.
    assert rec.claim("u2") == 1
    assert rec.progress("u2", 0.1) is True


def test_claims_completions_and_failures_are_never_throttled(
    client: dtaskq.Client, namespace: str
) -> None:
    clock = Clock()
    rec = recorder_for(client, namespace, clock)
    rec.claim("u1")
    assert rec.progress("u1", 0.5) is True
    assert rec.progress("u1", 0.0) is True  # what a claim reports: forwarded, progress stays
    assert progress(client, namespace, "u1") == 0.5
    rec.complete("u1")
    rec.claim("u2")
    assert rec.progress("u2", 0.5) is True
    assert rec.fail("u2", "broken") is False
    task = client.get_task(namespace, "t")
    assert task is not None
    assert (task.units["u1"].status, task.units["u2"].status) == (
        UnitStatus.COMPLETED,
        UnitStatus.FAILED,
    )


def test_the_entry_goes_when_the_unit_ends(client: dtaskq.Client, namespace: str) -> None:
    clock = Clock()
    rec = recorder_for(client, namespace, clock, max_attempts=2, retry_backoff_ms=1)
    rec.claim("u1")
    assert rec.progress("u1", 0.5) is True
    assert rec.fail("u1", "flaky", retryable=True) is True
    time.sleep(0.01)
    assert rec.claim("u1") == 2
    assert rec.progress("u1", 0.6) is True  # same fake instant: no entry left to throttle it


def test_a_failed_forward_leaves_no_entry(
    client: dtaskq.Client, server_url: str, namespace: str, prefix: str
) -> None:
    client.add_task(namespace, "t", units=["u1"])
    task = client.get_task(namespace, "t")
    assert task is not None
    clock = Clock()
    with (
        Proxy(server_url) as proxy,
        dtaskq.Client.from_url(proxy.url, prefix=prefix, retry_attempts=1) as cut_off,
    ):
        rec = Recorder(cut_off, task, "n1", Claims(), Gate(1), interval=3.0, clock=clock)
        rec.claim("u1")
        assert rec.progress("u1", 0.5) is True
        clock.now += 3.0
        proxy.cut()
        with pytest.raises(TransientError):
            rec.progress("u1", 0.6)  # the server cannot be reached: the forward fails
        proxy.restore()
        assert rec.progress("u1", 0.7) is True  # same fake instant, forwarded: nothing throttles it
    assert progress(client, namespace, "u1") == 0.7


@pytest.mark.parametrize("found_by", ["heartbeat", "report"])
def test_reports_after_the_lease_ran_out_are_turned_away_by_their_token(
    client: dtaskq.Client, namespace: str, found_by: str
) -> None:
    rec = recorder_for(client, namespace, Clock(), lease_ms=1000)
    assert (rec.claim("u1"), rec.claim("u2")) == (1, 1)
    # Nothing renews the leases: once they run out, the sweep hands the units to anyone, and
    # a report without a token would claim them again.
    swept: list[int] = []
    until(
        lambda: swept.append(client.sweep(namespace).reclaimed) or sum(swept) == 2,
        what="the leases to run out",
    )
    if found_by == "heartbeat":
        rec.heartbeat()
        assert rec.is_lost("u1") and rec.is_lost("u2")
    assert rec.progress("u1", 0.5) is False
    assert rec.is_lost("u1")
    with pytest.raises(LeaseLost):
        rec.complete("u1")
    with pytest.raises(LeaseLost):
        rec.fail("u2", "late", retryable=True)
    with pytest.raises(InvalidArgument):
        rec.progress("u1", 0.6)  # forgotten: this recorder holds no claim on it any more
    task = client.get_task(namespace, "t")
    assert task is not None and task.status is TaskStatus.STARTED
    assert {(u.id, u.status, u.node, u.attempt) for u in task.units.values()} == {
        ("u1", UnitStatus.PENDING, None, 1),
        ("u2", UnitStatus.PENDING, None, 1),
    }


def test_range_claims_are_held_and_renewed(client: dtaskq.Client, namespace: str) -> None:
    client.add_task(namespace, "r", unit_count=10)
    task = client.get_task(namespace, "r")
    assert task is not None
    claims = Claims()
    rec = Recorder(client, task, "n1", claims, Gate(1), clock=Clock())
    first = rec.claim_next()
    second = rec.claim_next(int(first))  # type: ignore[arg-type]
    assert (first, second) == (0, 1)
    assert {(c.unit, c.token) for c in claims.snapshot()} == {("0", 1), ("1", 1)}
    rec.heartbeat()
    assert not rec.is_lost(0)
    rec.complete(0)
    assert [c.unit for c in claims.snapshot()] == ["1"]


@pytest.mark.parametrize(
    "options",
    [
        {"node_id": "has space"},
        {"concurrency": 0},
        {"lease_ms": 0},
        {"grace_ms": -1},
        {"resync_s": -1.0},
        {"sweep_batch": 0},
    ],
)
def test_worker_rejects_bad_options(client: dtaskq.Client, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        Worker(client, {"ns": object()}, **options)  # type: ignore[arg-type,dict-item]


def test_worker_needs_a_namespace(client: dtaskq.Client) -> None:
    with pytest.raises(InvalidArgument):
        Worker(client, {})
    with pytest.raises(InvalidArgument):
        Worker(client, {"bad name": object()})  # type: ignore[dict-item]


def test_returned_units_are_claimed_before_the_span_goes_on(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "r", unit_count=10, lease_ms=2000)
    task = client.get_task(namespace, "r")
    assert task is not None
    dead = client.claim(ref, "dead", max_units=1, last=4)  # unit 5, left to expire
    assert dead == [5]
    time.sleep(1.0)
    rec = Recorder(client, task, "n1", Claims(), Gate(1), clock=Clock())
    assert rec.claim_next() == 0  # the dead node's lease has 1 s left
    time.sleep(1.2)  # the dead node's lease has run out, n1's has 0.8 s left
    assert rec.claim_next(0) == 1  # this claim ends the dead lease: unit 5 waits again
    rec.units_returned()
    back = rec.claim_next(1)
    assert (back, getattr(back, "token", None)) == (5, 2)
    assert rec.claim_next(5) == 6  # a first claim again: back to following spans
    assert rec.claim_next(6) == 7
