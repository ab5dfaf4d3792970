"""Leases, heartbeats, expiry and the sweeper (``docs/rules.md`` rules 24-25,
``docs/runtime.md`` on sweeping)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from support import Rejects, Unchanged, unit_of

import dtaskq
from dtaskq import (
    ClaimStatus,
    InvalidArgument,
    LeaseLost,
    SweepResult,
    TaskRef,
    TaskStatus,
    UnitStatus,
    UnitWrongNode,
)
from dtaskq.keys import Partition, partition_of

HELD, LOST, NOT_RUNNING = ClaimStatus.HELD, ClaimStatus.LOST, ClaimStatus.NOT_RUNNING
# A lease that tests let expire, and a sleep long enough for it to have.
SHORT_MS = 100
EXPIRE_S = 0.13
# The same for tests that also check that a claim made after the sleep is held: its lease
# outlasts those checks by over half a second, even on a loaded machine.
HELD_MS = 600
HELD_EXPIRE_S = 0.65

# --- rule 24: heartbeats ---


def test_heartbeats_keep_a_lease_for_many_lease_times(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    # Renewed every 0.1 s: each renewal has 0.7 s of margin.
    lease_ms = 800
    ref = client.add_task(namespace, "hb", units=["a"], lease_ms=lease_ms)
    token = client.claim_unit(ref, "n1", "a")
    deadline = unit_of(client, ref, "a").lease_expires_at
    started = time.monotonic()
    while time.monotonic() - started < 3.2 * lease_ms / 1000:
        time.sleep(0.1)
        assert client.heartbeat("n1", [(ref, "a", token)]) == [HELD]
        renewed = unit_of(client, ref, "a").lease_expires_at
        assert renewed > deadline
        deadline = renewed
    # Still held long after the first lease would have ended.
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "a")
    assert client.update_progress(ref, "n1", "a", 0.5, token) == token
    assert client.complete_unit(ref, "n1", "a", token) == token
    assert unit_of(client, ref, "a").attempt == 1


def test_heartbeat_answers_per_claim_in_order(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    one = client.add_task(namespace, "one", units=["a", "b", "c"])
    two = client.add_task(namespace, "two", units=["x", "y"])
    gone = client.add_task(namespace, "gone", units=["z"])
    ta = client.claim_unit(one, "n1", "a")
    tb = client.claim_unit(one, "n2", "b")  # another node's
    tx = client.claim_unit(two, "n1", "x")
    ty = client.claim_unit(two, "n1", "y")
    tz = client.claim_unit(gone, "n1", "z")
    client.complete_unit(one, "n1", "c")
    client.cancel_task(gone)
    before = {ref.task_id: client.get_task(namespace, ref.task_id) for ref in (one, two)}
    time.sleep(0.005)
    claims = [
        (two, "y", ty),  # held
        (one, "b", tb),  # held by n2, not n1
        (gone, "z", tz),  # cancelled task
        (one, "a", ta),  # held
        (two, "x", tx + 1),  # stale token
        (one, "c", 1),  # completed unit
        (TaskRef(namespace, "never", 1), "a", 1),  # unknown task
        (TaskRef(namespace, "two", two.version + 1), "x", tx),  # unknown version
        (one, "nope", 1),  # unknown unit
        (two, "x", tx),  # held
    ]
    assert client.heartbeat("n1", claims) == [
        HELD,
        LOST,
        NOT_RUNNING,
        HELD,
        LOST,
        LOST,
        NOT_RUNNING,
        NOT_RUNNING,
        LOST,
        HELD,
    ]
    after = {ref.task_id: client.get_task(namespace, ref.task_id) for ref in (one, two)}
    renewed = [("two", "y"), ("one", "a"), ("two", "x")]
    for task_id, unit_id in renewed:
        old, new = before[task_id].units[unit_id], after[task_id].units[unit_id]
        assert new.lease_expires_at > old.lease_expires_at
    # Nothing else moved: n2's lease, the completed unit.
    assert after["one"].units["b"] == before["one"].units["b"]
    assert after["one"].units["c"] == before["one"].units["c"]
    # Claims that are not held change nothing at all.
    assert unchanged(client.heartbeat, "n1", [claims[1], claims[2], claims[4], claims[6]]) == [
        LOST,
        NOT_RUNNING,
        LOST,
        NOT_RUNNING,
    ]
    assert client.heartbeat("n1", []) == []


@pytest.fixture
def client4(server_url: str, prefix: str, namespace: str) -> Iterator[dtaskq.Client]:
    """A client whose namespace is spread over 4 partitions."""
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={namespace: 4}) as c:
        yield c


def one_id_per_partition(count: int) -> list[str]:
    ids: dict[int, str] = {}
    i = 0
    while len(ids) < count:
        ids.setdefault(partition_of(f"t{i}", count), f"t{i}")
        i += 1
    return [ids[p] for p in range(count)]


def test_heartbeat_across_partitions_answers_in_order(
    client4: dtaskq.Client, namespace: str, prefix: str, r: redis.Redis
) -> None:
    refs = [client4.add_task(namespace, tid, units=["u"]) for tid in one_id_per_partition(4)]
    for p, ref in enumerate(refs):
        assert r.exists(Partition(prefix, namespace, p).task_keys(ref.task_id)[0])
    tokens = [client4.claim_unit(ref, "n1", "u") for ref in refs]
    before = [unit_of(client4, ref, "u").lease_expires_at for ref in refs]
    client4.cancel_task(refs[2])
    time.sleep(0.005)
    claims = [
        (refs[3], "u", tokens[3]),
        (refs[1], "u", tokens[1] + 1),
        (refs[0], "u", tokens[0]),
        (refs[2], "u", tokens[2]),
        (refs[1], "u", tokens[1]),
    ]
    assert client4.heartbeat("n1", claims) == [HELD, LOST, HELD, NOT_RUNNING, HELD]
    after = [unit_of(client4, ref, "u").lease_expires_at for ref in refs]
    assert [after[p] > before[p] for p in range(4)] == [True, True, False, True]


def test_heartbeat_with_stale_token_is_lost(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a"])
    token = client.claim_unit(ref, "n1", "a")
    assert unchanged(client.heartbeat, "n1", [(ref, "a", token - 1)]) == [LOST]
    assert unchanged(client.heartbeat, "n1", [(ref, "a", token + 1)]) == [LOST]
    assert unchanged(client.heartbeat, "n2", [(ref, "a", token)]) == [LOST]


@pytest.mark.parametrize("end", ["finished", "cancelled", "failed", "swapping"])
def test_heartbeat_on_a_task_that_left_started_is_not_running(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged, end: str
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], ack_barrier=end == "swapping")
    ta = client.claim_unit(ref, "n1", "a")
    tb = client.claim_unit(ref, "n1", "b")
    if end == "cancelled":
        client.cancel_task(ref)
    elif end == "failed":
        client.fail_unit(ref, "n1", "b", "x", tb)
    else:
        client.complete_unit(ref, "n1", "b", tb)
        client.complete_unit(ref, "n1", "a", ta)
    assert client.get_task(namespace, "t").status is not TaskStatus.STARTED
    assert unchanged(client.heartbeat, "n1", [(ref, "a", ta), (ref, "b", tb)]) == [
        NOT_RUNNING,
        NOT_RUNNING,
    ]


def test_heartbeat_on_an_unknown_task_is_not_running(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    client.add_task(namespace, "known", units=["a"])
    claims = [(TaskRef(namespace, "unknown", 1), "a", 1), (TaskRef("elsewhere", "t", 1), "a", 1)]
    assert unchanged(client.heartbeat, "n1", claims) == [NOT_RUNNING, NOT_RUNNING]


def test_heartbeat_after_the_lease_expired_is_lost(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a"], lease_ms=SHORT_MS)
    token = client.claim_unit(ref, "n1", "a")
    time.sleep(EXPIRE_S)
    assert unchanged(client.heartbeat, "n1", [(ref, "a", token)]) == [LOST]


# --- rule 25: expiry ---


def test_expired_reassign_lease_goes_to_the_next_claimer(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], lease_ms=HELD_MS)
    old = client.claim_unit(ref, "n1", "a")
    time.sleep(HELD_EXPIRE_S)
    # Until someone claims it, the old holder's reports with its token are stale.
    rejects(LeaseLost, client.update_progress, ref, "n1", "a", 0.5, old)
    rejects(LeaseLost, client.complete_unit, ref, "n1", "a", old)
    rejects(LeaseLost, client.fail_unit, ref, "n1", "a", "x", old)
    assert unchanged(client.heartbeat, "n1", [(ref, "a", old)]) == [LOST]
    # No sweep needed: the expired lease is honoured by the claim itself.
    new = client.claim_unit(ref, "n2", "a")
    assert new == old + 1
    assert unchanged(client.heartbeat, "n1", [(ref, "a", old)]) == [LOST]
    assert client.heartbeat("n2", [(ref, "a", new)]) == [HELD]
    # Now owned by n2, the old holder is the wrong node (checked before the token).
    rejects(UnitWrongNode, client.complete_unit, ref, "n1", "a", old)
    assert client.complete_unit(ref, "n2", "a", new) == new
    assert unchanged(client.heartbeat, "n1", [(ref, "a", old)]) == [LOST]
    a = unit_of(client, ref, "a")
    assert (a.status, a.node, a.attempt) == (UnitStatus.COMPLETED, "n2", new)


def test_expired_lease_taken_again_by_a_token_less_report(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], lease_ms=SHORT_MS)
    old = client.claim_unit(ref, "n1", "a")
    time.sleep(EXPIRE_S)
    assert client.update_progress(ref, "n2", "a", 0.1) == old + 1
    assert unit_of(client, ref, "a").node == "n2"


def test_expired_sticky_lease_stays_with_its_node(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    ref = client.add_task(
        namespace, "t", units=["shard", "b"], lease_ms=HELD_MS, on_lease_expiry="sticky"
    )
    old = client.claim_unit(ref, "n1", "shard")
    time.sleep(HELD_EXPIRE_S)
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "shard")
    rejects(UnitWrongNode, client.update_progress, ref, "n2", "shard", 0.5)
    assert unchanged(client.heartbeat, "n1", [(ref, "shard", old)]) == [LOST]
    rejects(LeaseLost, client.update_progress, ref, "n1", "shard", 0.5, old)
    # Re-delivered to the same node under a new token; the old token stays dead.
    new = client.claim_unit(ref, "n1", "shard")
    assert new == old + 1
    assert client.heartbeat("n1", [(ref, "shard", old), (ref, "shard", new)]) == [LOST, HELD]
    rejects(LeaseLost, client.complete_unit, ref, "n1", "shard", old)
    assert client.complete_unit(ref, "n1", "shard", new) == new


# --- sweep ---


def test_sweep_reclaims_expired_leases(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c"], lease_ms=SHORT_MS)
    sticky = client.add_task(
        namespace, "s", units=["a"], lease_ms=SHORT_MS, on_lease_expiry="sticky"
    )
    client.claim_unit(ref, "n1", "a")
    client.claim_unit(ref, "n2", "b")
    client.claim_unit(sticky, "n1", "a")
    time.sleep(EXPIRE_S)
    fresh = client.add_task(namespace, "f", units=["a"])
    client.claim_unit(fresh, "n3", "a")  # a lease that is not due
    # Before the sweep the stored state still shows the expired claims.
    assert unit_of(client, ref, "a").status is UnitStatus.IN_PROGRESS
    assert client.sweep(namespace) == SweepResult(reclaimed=3, deleted=0, more=False)
    task = client.get_task(namespace, "t")
    assert task.status is TaskStatus.STARTED
    for unit_id in ("a", "b"):
        u = task.units[unit_id]
        assert (u.status, u.node, u.attempt, u.lease_expires_at) == (
            UnitStatus.PENDING,
            None,
            1,
            None,
        )
    assert task.units["c"].status is UnitStatus.PENDING
    assert unit_of(client, fresh, "a").status is UnitStatus.IN_PROGRESS
    s = unit_of(client, sticky, "a")
    assert (s.status, s.node, s.attempt) == (UnitStatus.PENDING, "n1", 1)
    # Idempotent: a second sweep finds nothing and writes nothing.
    assert unchanged(client.sweep, namespace) == SweepResult(0, 0, False)
    # The attempt moves on at the next claim.
    assert client.claim_unit(ref, "n2", "a") == 2
    assert client.claim_unit(sticky, "n1", "a") == 2


def test_sweep_is_bounded_by_limit(client: dtaskq.Client, namespace: str) -> None:
    units = [f"u{i}" for i in range(5)]
    ref = client.add_task(namespace, "t", units=units, lease_ms=SHORT_MS)
    for u in units:
        client.claim_unit(ref, "n1", u)
    time.sleep(EXPIRE_S)
    assert client.sweep(namespace, limit=3) == SweepResult(3, 0, True)
    assert client.get_task(namespace, "t").counts[UnitStatus.PENDING] == 3
    assert client.sweep(namespace, limit=3) == SweepResult(2, 0, False)
    assert client.get_task(namespace, "t").counts[UnitStatus.PENDING] == 5
    assert client.sweep(namespace, limit=3) == SweepResult(0, 0, False)


def test_sweep_deletes_terminal_tasks_past_their_ttl(
    client: dtaskq.Client, namespace: str, prefix: str, r: redis.Redis, unchanged: Unchanged
) -> None:
    cancelled = client.add_task(namespace, "old-cancelled", units=["a"], completed_ttl_ms=0)
    finished = client.add_task(namespace, "old-finished", units=["a"], completed_ttl_ms=0)
    failed = client.add_task(namespace, "old-failed", units=["a"], completed_ttl_ms=0)
    fresh = client.add_task(namespace, "fresh", units=["a"])
    client.add_task(namespace, "running", units=["a"], completed_ttl_ms=0)
    client.cancel_task(cancelled)
    client.complete_unit(finished, "n1", "a")
    client.fail_unit(failed, "n1", "a", "x")
    client.cancel_task(fresh)
    time.sleep(0.005)
    assert client.sweep(namespace) == SweepResult(reclaimed=0, deleted=3, more=False)
    for ref in (cancelled, finished, failed):
        assert client.get_task(namespace, ref.task_id) is None
        assert not r.exists(*Partition(prefix, namespace, 0).task_keys(ref.task_id)[:4])
    assert client.get_task(namespace, "fresh").status is TaskStatus.CANCELLED
    assert client.get_task(namespace, "running").status is TaskStatus.STARTED
    listed = [t.task_id for t in client.list_tasks(namespace)[namespace]]
    assert listed == ["running", "fresh"]
    assert unchanged(client.sweep, namespace) == SweepResult(0, 0, False)
    # The id is free for a new version.
    assert client.add_task(namespace, "old-cancelled", units=["a"]).version > cancelled.version


def test_sweep_limit_covers_deletions_too(client: dtaskq.Client, namespace: str) -> None:
    for i in range(3):
        client.cancel_task(client.add_task(namespace, f"t{i}", units=["a"], completed_ttl_ms=0))
    time.sleep(0.005)
    assert client.sweep(namespace, limit=2) == SweepResult(0, 2, True)
    assert client.sweep(namespace, limit=2) == SweepResult(0, 1, False)
    assert client.list_tasks(namespace) == {}


def test_sweep_limit_is_shared_by_leases_and_deletions(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], lease_ms=SHORT_MS)
    client.claim_unit(ref, "n1", "a")
    client.claim_unit(ref, "n1", "b")
    client.cancel_task(client.add_task(namespace, "old", units=["a"], completed_ttl_ms=0))
    time.sleep(EXPIRE_S)
    assert client.sweep(namespace, limit=2) == SweepResult(2, 0, True)
    assert client.get_task(namespace, "old") is not None
    assert client.sweep(namespace, limit=2) == SweepResult(0, 1, False)
    assert client.get_task(namespace, "old") is None


def test_sweep_works_per_partition(client4: dtaskq.Client, namespace: str) -> None:
    refs = [
        client4.add_task(namespace, tid, units=["u"], lease_ms=SHORT_MS)
        for tid in one_id_per_partition(4)
    ]
    for ref in refs:
        client4.claim_unit(ref, "n1", "u")
    time.sleep(EXPIRE_S)
    assert client4.sweep(namespace, partition=2) == SweepResult(1, 0, False)
    statuses = [unit_of(client4, ref, "u").status for ref in refs]
    assert statuses == [UnitStatus.IN_PROGRESS] * 2 + [UnitStatus.PENDING, UnitStatus.IN_PROGRESS]
    assert [client4.sweep(namespace, partition=p).reclaimed for p in range(4)] == [1, 1, 0, 1]


def test_sweep_of_a_partition_that_does_not_exist_is_invalid(
    client: dtaskq.Client, client4: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    client4.add_task(namespace, "t", units=["a"])
    rejects(InvalidArgument, client4.sweep, namespace, partition=4)
    rejects(InvalidArgument, client4.sweep, namespace, partition=-1)
    rejects(InvalidArgument, client4.sweep, namespace, limit=0)
    client.add_task(namespace + "x", "t", units=["a"])
    rejects(InvalidArgument, client.sweep, namespace + "x", partition=1)
