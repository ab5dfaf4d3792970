"""Range units take part in every rule of docs/rules.md that applies to them: progress, completion,
fail-fast, retries, leases, sticky units, cancel and cleanup, barriers, and lost replies."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from support import LossyConnection, Rejects, Unchanged, completed_units, lose_next_reply

import dtaskq
from dtaskq import (
    DONE,
    AcksMissing,
    ClaimedUnit,
    ClaimStatus,
    LeaseLost,
    TaskDoesNotExist,
    TaskNotFinalizing,
    TaskNotRunning,
    TaskRef,
    TaskStatus,
    UnitAlreadyTerminal,
    UnitNotReady,
    UnitStatus,
    UnitWrongNode,
)
from dtaskq.keys import Partition

HELD, LOST, NOT_RUNNING = ClaimStatus.HELD, ClaimStatus.LOST, ClaimStatus.NOT_RUNNING
# A lease that tests let expire, and a sleep long enough for it to have. It is long enough for
# the claims made after that sleep to stay held while the test checks them on a busy machine:
# over half a second.
SHORT_MS = 600
EXPIRE_S = 0.65
BITMAP_UNITS = 2**20


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def claimed(unit: ClaimedUnit | dtaskq.Done) -> ClaimedUnit:
    assert isinstance(unit, ClaimedUnit), unit
    return unit


def spans(r: redis.Redis, prefix: str, ref: TaskRef) -> list[str]:
    """The task's unclaimed spans as "<start> <end> <node>", by start."""
    key = Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)[9]
    return [m.decode() for m in r.zrange(key, 0, -1)]


def assert_partitioned(client: dtaskq.Client, r: redis.Redis, prefix: str, ref: TaskRef) -> None:
    """Spans, units with a record that are not complete, and completion bits cover 0..N-1 once
    each; the bits agree with units_completed and the COMPLETED count."""
    task = task_of(client, ref)
    assert task.unit_count is not None
    keys = Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)
    found = [int(u) for u in task.units]
    for member in spans(r, prefix, ref):
        start, end, _ = member.split(" ", 2)
        found.extend(range(int(start), int(end)))
    done = completed_units(r, prefix, ref)
    assert sorted(found + sorted(done)) == list(range(task.unit_count))
    assert len(done) == task.counts[UnitStatus.COMPLETED]
    assert int(r.hget(keys[0], "units_completed") or 0) == len(done)


# --- progress (rules 6, 8, 9) ---


def test_progress_claims_carves_and_is_monotonic(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str, unchanged: Unchanged
) -> None:
    """The first progress report claims an unclaimed unit out of its span; progress never drops."""
    ref = client.add_task(namespace, "p", unit_count=10, workers_hint=2)
    assert spans(r, prefix, ref) == ["0 5 ", "5 10 "]
    token = client.update_progress(ref, "n1", "3", 0.6)
    assert token == 1
    assert spans(r, prefix, ref) == ["0 3 ", "4 5 n1", "5 10 "]
    assert client.update_progress(ref, "n1", 3, 0.2, token) == token
    unit = task_of(client, ref).units["3"]
    assert (unit.status, unit.node, unit.progress, unit.attempt) == (
        UnitStatus.IN_PROGRESS,
        "n1",
        0.6,
        1,
    )
    assert unit.lease_expires_at is not None
    # The claimer continues right after the unit it claimed.
    nxt = claimed(client.claim_next(ref, "n1", 3))
    assert (nxt, nxt.token) == (4, 1)
    assert spans(r, prefix, ref) == ["0 3 ", "5 10 "]
    assert client.complete_unit(ref, "n1", nxt, nxt.token) == 1
    # Progress on a completed unit is ignored, whoever reports it.
    assert unchanged(client.update_progress, ref, "n1", 4, 0.5, nxt.token) is None
    assert unchanged(client.update_progress, ref, "n2", 4, 0.5) is None
    assert_partitioned(client, r, prefix, ref)


# --- completion (rules 7, 11, 12, 15) ---


def test_completion_retries_and_rejections(
    client: dtaskq.Client,
    namespace: str,
    r: redis.Redis,
    prefix: str,
    rejects: Rejects,
    unchanged: Unchanged,
) -> None:
    """Completing the last unit finishes the task; retries succeed, stale or foreign ones fail."""
    ref = client.add_task(namespace, "c", unit_count=3)
    u0 = claimed(client.claim_first(ref, "n1"))
    assert client.complete_unit(ref, "n1", u0, u0.token) == u0.token
    assert unchanged(client.complete_unit, ref, "n1", u0, u0.token) == u0.token
    assert unchanged(client.complete_unit, ref, "n1", str(u0)) == u0.token
    rejects(UnitAlreadyTerminal, client.complete_unit, ref, "n9", u0, u0.token)
    u1 = claimed(client.claim_next(ref, "n1", u0))
    assert u1 == 1
    rejects(LeaseLost, client.complete_unit, ref, "n1", u1, u1.token + 1)
    rejects(UnitWrongNode, client.complete_unit, ref, "n2", u1, u1.token)
    rejects(UnitWrongNode, client.complete_unit, ref, "n2", u1)
    assert client.complete_unit(ref, "n1", u1, u1.token) == 1
    assert task_of(client, ref).status is TaskStatus.STARTED
    # Completing an unclaimed unit claims it for the reporter; it was the last one.
    assert client.complete_unit(ref, "n2", 2) == 1
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and task.finished_at is not None
    assert task.units == {} and task.counts[UnitStatus.COMPLETED] == 3
    assert unchanged(client.complete_unit, ref, "n2", 2, 1) == 1
    assert task_of(client, ref).finished_at == task.finished_at
    assert client.claim_first(ref, "n3") is DONE
    assert_partitioned(client, r, prefix, ref)


@pytest.mark.parametrize("unit", ["007", "00", "10", "-1", "+1", "1.0", "x", "1" + "0" * 20])
def test_non_canonical_unit_ids_do_not_exist(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unit: str
) -> None:
    """Unit ids that are not canonical decimals in [0, N) name no unit, and nothing is written."""
    ref = client.add_task(namespace, "ids", unit_count=10)
    client.claim_first(ref, "n1")  # unit 0 now has a record, which "00" must not alias
    rejects(TaskDoesNotExist, client.claim_unit, ref, "n1", unit)
    rejects(TaskDoesNotExist, client.update_progress, ref, "n1", unit, 0.5)
    rejects(TaskDoesNotExist, client.complete_unit, ref, "n1", unit)
    rejects(TaskDoesNotExist, client.fail_unit, ref, "n1", unit, "boom")


# --- fail-fast (rules 10, 13) ---


def test_a_final_failure_fails_the_range_task_at_once(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    """A final failure fails the task; other holders learn it from reports and heartbeats."""
    ref = client.add_task(namespace, "ff", unit_count=30, workers_hint=3, max_attempts=3)
    a, b, c = (claimed(client.claim_first(ref, n)) for n in ("n1", "n2", "n3"))
    assert (a, b, c) == (0, 10, 20)
    assert client.fail_unit(ref, "n1", a, "disk full", a.token) is False
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED and task.finished_at is not None
    assert task.error == "unit 0 failed: disk full"
    assert (task.units["0"].status, task.units["0"].error) == (UnitStatus.FAILED, "disk full")
    rejects(TaskNotRunning, client.update_progress, ref, "n2", b, 0.5, b.token)
    rejects(TaskNotRunning, client.complete_unit, ref, "n2", b, b.token)
    rejects(TaskNotRunning, client.fail_unit, ref, "n3", c, "late", c.token)
    rejects(TaskNotRunning, client.claim_first, ref, "n4")
    rejects(TaskNotRunning, client.claim_next, ref, "n2", b)
    rejects(TaskNotRunning, client.claim, ref, "n3", 5, c)
    claims = [(ref, b, b.token), (ref, c, c.token)]
    assert unchanged(client.heartbeat, "n2", claims[:1]) == [NOT_RUNNING]
    assert unchanged(client.heartbeat, "n3", claims[1:]) == [NOT_RUNNING]


# --- retries (rule 14) ---


def test_retryable_failure_backs_off_then_another_node_gets_it(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str, rejects: Rejects
) -> None:
    """A retried unit is handed out again only after its backoff, under the next token."""
    ref = client.add_task(namespace, "rt", unit_count=3, max_attempts=3, retry_backoff_ms=250)
    u0, u1 = client.claim(ref, "n1", max_units=2)
    assert client.fail_unit(ref, "n1", u0, "flaky", u0.token, retryable=True) is True
    unit = task_of(client, ref).units["0"]
    assert (unit.status, unit.node, unit.attempt, unit.error) == (
        UnitStatus.PENDING,
        None,
        1,
        "flaky",
    )
    assert unit.ready_at is not None and unit.updated_at is not None
    assert unit.ready_at - unit.updated_at == timedelta(milliseconds=250)
    # While unit 0 backs off, the unit still unclaimed is handed out first ...
    assert claimed(client.claim_first(ref, "n2")) == 2
    # ... and then nothing is ready: not DONE, a wait.
    error = rejects(UnitNotReady, client.claim_first, ref, "n3")
    assert error.retry_after_ms is not None and 0 < error.retry_after_ms <= 250
    rejects(LeaseLost, client.complete_unit, ref, "n1", u0, u0.token)
    time.sleep(0.27)
    again = claimed(client.claim_first(ref, "n3"))
    assert (again, again.token) == (0, 2)
    unit = task_of(client, ref).units["0"]
    assert (unit.status, unit.node, unit.ready_at) == (UnitStatus.IN_PROGRESS, "n3", None)
    assert client.complete_unit(ref, "n1", u1, u1.token) == 1
    assert_partitioned(client, r, prefix, ref)


def test_exhausted_retries_fail_the_range_task(client: dtaskq.Client, namespace: str) -> None:
    """The last allowed attempt fails the task even when reported as retryable."""
    ref = client.add_task(namespace, "ex", unit_count=1, max_attempts=3, retry_backoff_ms=1)
    for attempt, node in enumerate(["n1", "n2", "n3"], start=1):
        time.sleep(0.005)  # at most 2 ms of backoff
        unit = claimed(client.claim_first(ref, node))
        assert (unit, unit.token) == (0, attempt)
        retried = client.fail_unit(ref, node, unit, f"e{attempt}", unit.token, retryable=True)
        assert retried is (attempt < 3)
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED and task.error == "unit 0 failed: e3"
    assert (task.units["0"].status, task.units["0"].node) == (UnitStatus.FAILED, "n3")


# --- leases (rules 24, 25) ---


def test_heartbeats_keep_range_claims_held(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    """Heartbeats keep range claims held for longer than a lease; others cannot take them."""
    ref = client.add_task(namespace, "hb", unit_count=5, lease_ms=SHORT_MS)
    u0, u1 = client.claim(ref, "n1", max_units=2)
    claims = [(ref, u0, u0.token), (ref, u1, u1.token)]
    for _ in range(12):  # two lease times, each renewal with half a second of margin
        time.sleep(0.1)
        assert client.heartbeat("n1", claims) == [HELD, HELD]
    assert client.heartbeat("n1", [(ref, u0, u0.token + 1)]) == [LOST]
    # Neither is handed out again: n2 splits what is left of n1's span instead.
    assert claimed(client.claim_first(ref, "n2")) == 3
    rejects(UnitWrongNode, client.update_progress, ref, "n2", u0, 0.5)
    assert client.complete_unit(ref, "n1", u0, u0.token) == 1


@pytest.mark.parametrize("swept", [True, False], ids=["sweep", "claim-sweeps"])
def test_expired_range_claims_come_back_before_fresh_spans_and_splits(
    client: dtaskq.Client,
    namespace: str,
    r: redis.Redis,
    prefix: str,
    rejects: Rejects,
    unchanged: Unchanged,
    swept: bool,
) -> None:
    """Expired units go to the next claimers first; the dead holder's span becomes fresh."""
    ref = client.add_task(namespace, "ex", unit_count=20, lease_ms=SHORT_MS)
    u0, u1 = client.claim(ref, "n1", max_units=2)
    assert spans(r, prefix, ref) == ["2 20 n1"]
    time.sleep(EXPIRE_S)
    assert unchanged(client.heartbeat, "n1", [(ref, u0, u0.token)]) == [LOST]
    rejects(LeaseLost, client.update_progress, ref, "n1", u0, 0.5, u0.token)
    if swept:
        result = client.sweep(namespace)
        assert (result.reclaimed, result.deleted) == (2, 0)
        assert spans(r, prefix, ref) == ["2 20 "]
        rejects(LeaseLost, client.complete_unit, ref, "n1", u1, u1.token)
    got = [claimed(client.claim_first(ref, n)) for n in ("n2", "n3", "n4", "n5")]
    # The returned units first (not the fresh span 2.., not a split at 11), then the span n1
    # was continuing, as a fresh span; only then a split.
    assert [(u, u.token) for u in got] == [(0, 2), (1, 2), (2, 1), (11, 1)]
    rejects(UnitWrongNode, client.complete_unit, ref, "n1", u0, u0.token)
    assert spans(r, prefix, ref) == ["3 11 n4", "12 20 n5"]
    assert {u.id: u.node for u in task_of(client, ref).units.values()} == {
        "0": "n2",
        "1": "n3",
        "2": "n4",
        "11": "n5",
    }
    assert_partitioned(client, r, prefix, ref)


def test_sticky_range_unit_waits_for_its_node(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str, rejects: Rejects
) -> None:
    """After expiry a sticky unit goes back only to its node, under a new token, first."""
    ref = client.add_task(
        namespace, "st", unit_count=9, workers_hint=3, lease_ms=SHORT_MS, on_lease_expiry="sticky"
    )
    u0 = claimed(client.claim_first(ref, "n1"))
    time.sleep(EXPIRE_S)
    # n2 gets the span n1 no longer continues (then runs on into region 3..6), never unit 0.
    got = client.claim(ref, "n2", max_units=3)
    assert got is not DONE and [int(u) for u in got] == [1, 2, 3]
    kept = Partition(prefix, namespace, 0).task_keys(ref.task_id)[12]
    assert b"n1\n0" in r.zrange(kept, 0, -1)
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", u0)
    # n1 gets it back before the fresh region 6..9.
    again = claimed(client.claim_first(ref, "n1"))
    assert (again, again.token) == (0, 2)
    rest = client.claim(ref, "n3", max_units=10)
    assert rest is not DONE and sorted(int(u) for u in rest) == [4, 5, 6, 7, 8]
    assert client.claim_first(ref, "n3") is DONE
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", again)
    rejects(UnitWrongNode, client.update_progress, ref, "n3", again, 0.5)
    rejects(LeaseLost, client.complete_unit, ref, "n1", again, u0.token)
    assert b"n1\n0" not in r.zrange(kept, 0, -1)
    assert_partitioned(client, r, prefix, ref)


# --- cancel and cleanup (rules 21, 22) ---


def test_cancel_range_task(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    """A cancelled range task hands out nothing and refuses every report."""
    ref = client.add_task(namespace, "cx", unit_count=10, workers_hint=2)
    u0 = claimed(client.claim_first(ref, "n1"))
    client.cancel_task(ref)
    task = task_of(client, ref)
    assert task.status is TaskStatus.CANCELLED and task.finished_at is not None
    rejects(TaskNotRunning, client.claim_first, ref, "n2")
    rejects(TaskNotRunning, client.claim_next, ref, "n1", u0)
    rejects(TaskNotRunning, client.claim_unit, ref, "n2", 7)
    rejects(TaskNotRunning, client.update_progress, ref, "n1", u0, 0.5, u0.token)
    rejects(TaskNotRunning, client.complete_unit, ref, "n1", u0, u0.token)
    rejects(TaskNotRunning, client.cancel_task, ref)
    assert unchanged(client.heartbeat, "n1", [(ref, u0, u0.token)]) == [NOT_RUNNING]


def populated(
    client: dtaskq.Client, prefix: str, namespace: str, sticky: bool
) -> tuple[TaskRef, list[str]]:
    """A cancelled range task with state in every kind of key it has (two completion bitmaps;
    a retried unit waiting in ``kept`` or ``returned``), and those keys' names."""
    ref = client.add_task(
        namespace,
        "doomed",
        unit_count=BITMAP_UNITS + 10,
        workers_hint=2,
        completed_ttl_ms=0,
        max_attempts=2,
        retry_backoff_ms=60_000,
        on_lease_expiry="sticky" if sticky else "reassign",
    )
    u0, u1 = client.claim(ref, "n1", max_units=2)
    client.complete_unit(ref, "n1", u0, u0.token)
    client.complete_unit(ref, "n2", BITMAP_UNITS + 1)
    client.fail_unit(ref, "n1", u1, "flaky", u1.token, retryable=True)
    client.claim_first(ref, "n3")
    client.cancel_task(ref)
    part = Partition(prefix, namespace, 0)
    keys = part.task_keys(ref.task_id)
    waiting = keys[12] if sticky else keys[11]
    names = [keys[i] for i in (0, 1, 3, 9, 10, 13)] + [waiting]
    names += [f"{part.base}done{k}:{ref.task_id}" for k in (0, 1)]
    return ref, names


def task_key_suffixes(r: redis.Redis, prefix: str, task_id: str) -> list[str]:
    found = [
        k.decode()
        for k in list(r.scan_iter(match=f"*{prefix}*", count=1000))
        if k.decode().endswith(":" + task_id)
    ]
    return sorted(k.rsplit("}:", 1)[1] for k in found)


@pytest.mark.parametrize("sticky", [False, True], ids=["reassign", "sticky"])
def test_cleanup_deletes_every_key_of_a_range_task(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str, sticky: bool
) -> None:
    """cleanup_task past the TTL deletes spans, order, waiting sets and bitmaps too."""
    ref, names = populated(client, prefix, namespace, sticky)
    assert all(r.exists(name) for name in names), [n for n in names if not r.exists(n)]
    time.sleep(0.005)
    client.cleanup_task(ref)
    assert task_key_suffixes(r, prefix, ref.task_id) == ["cleaned:doomed"]
    assert client.get_task(namespace, ref.task_id) is None


@pytest.mark.parametrize("sticky", [False, True], ids=["reassign", "sticky"])
def test_sweep_deletes_every_key_of_an_expired_range_task(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str, sticky: bool
) -> None:
    """The sweeper deletes a terminal range task past its TTL with all its keys."""
    ref, names = populated(client, prefix, namespace, sticky)
    assert all(r.exists(name) for name in names)
    time.sleep(0.005)
    assert client.sweep(namespace).deleted == 1
    assert task_key_suffixes(r, prefix, ref.task_id) == []
    assert client.get_task(namespace, ref.task_id) is None


# --- barriers (rules 16-20) ---


@pytest.mark.parametrize("phase", ["post", "prepare"])
def test_range_barrier_expects_nodes_that_hold_or_completed_units(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged, phase: str
) -> None:
    """The ack set is the nodes that completed range units, not one whose unit moved away."""
    barrier = {"prepare_barrier": True} if phase == "prepare" else {"ack_barrier": True}
    ref = client.add_task(
        namespace, "b", unit_count=6, workers_hint=2, lease_ms=SHORT_MS, **barrier
    )
    assert claimed(client.claim_first(ref, "n3")) == 0
    time.sleep(EXPIRE_S)
    moved = claimed(client.claim_first(ref, "n1"))  # n3's only unit moved to n1
    assert (moved, moved.token) == (0, 2)
    for unit in [moved, *client.claim(ref, "n1", max_units=2, last=moved)]:
        client.complete_unit(ref, "n1", unit)
    for unit in client.claim(ref, "n2", max_units=2):
        client.complete_unit(ref, "n2", unit)
    assert task_of(client, ref).status is TaskStatus.STARTED
    client.complete_unit(ref, "n4", 5)  # never claimed: completing it makes n4 an owner
    if phase == "prepare":
        assert task_of(client, ref).status is TaskStatus.PREPARING
        rejects(TaskNotFinalizing, client.finalize_task, ref)
        assert unchanged(client.record_prepare_ack, ref, "n3") is False
        for node in ("n1", "n2", "n4"):
            assert client.record_prepare_ack(ref, node) is True
    assert task_of(client, ref).status is TaskStatus.SWAPPING
    assert client.claim_first(ref, "n5") is DONE
    assert unchanged(client.record_post_ack, ref, "n3") is False
    assert sorted(rejects(AcksMissing, client.finalize_task, ref).nodes) == ["n1", "n2", "n4"]
    for node in ("n2", "n4"):
        assert client.record_post_ack(ref, node) is True
    assert rejects(AcksMissing, client.finalize_task, ref).nodes == ("n1",)
    assert client.record_post_ack(ref, "n1") is True
    assert client.finalize_task(ref) is True
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and set(task.post_acks) == {"n1", "n2", "n4"}


# --- a reply lost after the script ran ---


def test_claim_retried_after_a_lost_reply_gets_the_same_units(
    lossy: dtaskq.Client,
    client: dtaskq.Client,
    namespace: str,
    r: redis.Redis,
    prefix: str,
) -> None:
    """A claim whose reply was lost recognises its retry and answers the units it claimed,
    so none of them waits for a lease to expire; the next call claims on from there."""
    ref = lossy.add_task(namespace, "lost", unit_count=10)
    lose_next_reply("claim_range")
    got = lossy.claim(ref, "n1", max_units=2)
    assert LossyConnection.runs["claim_range"] == 2
    assert got is not DONE and [(int(u), u.token) for u in got] == [(0, 1), (1, 1)]
    units = task_of(client, ref).units
    assert sorted(units, key=int) == ["0", "1"]
    for unit_id in ("0", "1"):
        unit = units[unit_id]
        assert (unit.status, unit.node, unit.attempt) == (UnitStatus.IN_PROGRESS, "n1", 1)
    assert [int(u) for u in lossy.claim(ref, "n1", max_units=2, last=1)] == [2, 3]
    assert_partitioned(client, r, prefix, ref)


def test_a_batch_takes_returned_units_then_the_span_after_them(
    client: dtaskq.Client, namespace: str
) -> None:
    """A batch hands out the expired units first, each under its new token, then continues
    into the span their holder had been continuing."""
    ref = client.add_task(namespace, "mix", unit_count=10, workers_hint=2, lease_ms=50)
    assert [int(u) for u in client.claim(ref, "n1", max_units=2)] == [0, 1]
    time.sleep(0.08)
    got = client.claim(ref, "n2", max_units=5)
    assert got is not DONE
    assert [(int(u), u.token) for u in got] == [(0, 2), (1, 2), (2, 1), (3, 1), (4, 1)]
