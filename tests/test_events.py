"""The event stream of a partition (docs/keys.md): which function writes which event, with
which fields; nothing on a rejected call or on a retry that changes nothing; capped near 1 000."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from support import Events, LossyConnection, Rejects, Unchanged, ev, lose_next_reply

import dtaskq
from dtaskq import (
    LeaseLost,
    TaskExists,
    TaskNotRunning,
    TaskRef,
    TaskStatus,
    UnitAlreadyTerminal,
    UnitSpec,
    UnitWrongNode,
)
from dtaskq.keys import Partition, partition_of

# A lease that tests let expire, and a sleep long enough for it to have.
SHORT_MS = 100
EXPIRE_S = 0.13
# The same for a test whose claims must stay held while it reports on them before the sleep:
# the lease outlasts those reports by over half a second, even on a loaded machine.
HELD_MS = 600
HELD_EXPIRE_S = 0.65


def group_counters(r: redis.Redis, prefix: str, ref: TaskRef) -> dict[str, int]:
    task_key = Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)[0]
    fields = r.hgetall(task_key)
    return {k.decode()[6:]: int(v) for k, v in fields.items() if k.startswith(b"group:")}


# --- added ---


def test_added_by_both_kinds_of_task_and_never_by_a_rejected_add(
    client: dtaskq.Client, namespace: str, events: Events, rejects: Rejects
) -> None:
    named = client.add_task(namespace, "named", units=["a"])
    spans = client.add_task(namespace, "spans", unit_count=10, workers_hint=2)
    assert events.new() == [ev("added", named), ev("added", spans)]
    rejects(TaskExists, client.add_task, namespace, "named", units=["a"])
    rejects(TaskExists, client.add_task, namespace, "spans", unit_count=3)
    client.cancel_task(named)
    again = client.add_task(namespace, "named", units=["b"])
    assert events.new() == [ev("status", named, status="CANCELLED"), ev("added", again)]


def test_an_add_retried_after_a_lost_reply_is_added_once(
    lossy: dtaskq.Client, namespace: str, events: Events
) -> None:
    lose_next_reply("add_task")
    ref = lossy.add_task(namespace, "t", units=["a"])
    assert LossyConnection.runs["add_task"] == 2
    lose_next_reply("add_range_task")
    spans = lossy.add_task(namespace, "s", unit_count=5)
    assert LossyConnection.runs["add_range_task"] == 2
    assert events.new() == [ev("added", ref), ev("added", spans)]


# --- claimed: only when a node becomes an owner ---


def test_claimed_only_when_a_node_owns_its_first_unit(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c", "d", "e"], lease_ms=HELD_MS)
    events.new()
    ta = client.claim_unit(ref, "n1", "a")
    assert events.new() == [ev("claimed", ref, node="n1")]
    client.claim_unit(ref, "n1", "a")  # a holder claiming again
    client.claim_unit(ref, "n1", "b")
    client.update_progress(ref, "n1", "a", 0.5, ta)
    client.heartbeat("n1", [(ref, "a", ta)])
    client.complete_unit(ref, "n1", "a", ta)
    assert events.new() == []
    # A first progress report and a completion of an unassigned unit also make an owner.
    client.update_progress(ref, "n2", "c", 0.1)
    client.complete_unit(ref, "n3", "d")
    assert events.new() == [ev("claimed", ref, node="n2"), ev("claimed", ref, node="n3")]
    # n2's only unit comes back (reassign): n2 owns nothing, so its next claim is told again.
    time.sleep(HELD_EXPIRE_S)
    client.sweep(namespace)
    # n1 keeps its completed a; b (n1's) and c (n2's) are both returned to any node: one event.
    assert client.get_task(namespace, "t").nodes == {"n1": 1, "n3": 1}
    assert events.new() == [ev("returned", ref, node="")]
    client.claim_unit(ref, "n2", "e")
    assert events.new() == [ev("claimed", ref, node="n2")]


def test_range_claims_tell_a_new_owner_once(
    client: dtaskq.Client, namespace: str, events: Events, r: redis.Redis
) -> None:
    ref = client.add_task(namespace, "t", unit_count=1000, workers_hint=2)
    events.new()
    unit = client.claim_first(ref, "n1")
    assert events.new() == [ev("claimed", ref, node="n1")]
    length = r.xlen(events.key)
    # The hot path writes no event: claim_next and batches of an owner.
    for _ in range(20):
        assert isinstance(unit, dtaskq.ClaimedUnit)
        unit = client.claim_next(ref, "n1", unit)
    batch = client.claim(ref, "n1", max_units=100)
    assert isinstance(batch, list) and len(batch) == 100
    assert r.xlen(events.key) == length
    assert events.new() == []
    client.claim(ref, "n2", max_units=10)
    client.claim(ref, "n2", max_units=10)
    assert events.new() == [ev("claimed", ref, node="n2")]


def test_a_retried_range_claim_tells_nothing_new(
    lossy: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = lossy.add_task(namespace, "t", unit_count=10)
    events.new()
    lose_next_reply("claim_range")
    assert lossy.claim(ref, "n1", max_units=3) == [0, 1, 2]
    assert LossyConnection.runs["claim_range"] == 2
    assert events.new() == [ev("claimed", ref, node="n1")]


# --- returned ---


def test_returned_by_the_sweep_once_per_task_and_node(
    client: dtaskq.Client, namespace: str, events: Events, unchanged: Unchanged
) -> None:
    units = [f"u{i}" for i in range(6)]
    ref = client.add_task(namespace, "r", units=units, lease_ms=SHORT_MS)
    sticky = client.add_task(
        namespace, "s", units=units, lease_ms=SHORT_MS, on_lease_expiry="sticky"
    )
    for i, unit in enumerate(units):
        client.claim_unit(ref, f"n{i % 3}", unit)
        client.claim_unit(sticky, f"n{i % 2}", unit)
    events.new()
    time.sleep(EXPIRE_S)
    assert client.sweep(namespace).reclaimed == 12
    got = events.new()
    # Reassign: every unit is anybody's, one event; sticky: one per node it is kept for.
    assert sorted(got, key=lambda e: (e["task"], e["node"])) == [
        ev("returned", ref, node=""),
        ev("returned", sticky, node="n0"),
        ev("returned", sticky, node="n1"),
    ]
    assert unchanged(client.sweep, namespace).reclaimed == 0


def test_a_sweep_in_batches_tells_each_batch(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    units = [f"u{i}" for i in range(5)]
    ref = client.add_task(namespace, "t", units=units, lease_ms=SHORT_MS)
    for unit in units:
        client.claim_unit(ref, "n1", unit)
    events.new()
    time.sleep(EXPIRE_S)
    assert client.sweep(namespace, limit=3).reclaimed == 3
    assert client.sweep(namespace, limit=3).reclaimed == 2
    # One event per call: a scheduler that read the first must look again after the second.
    assert events.new() == [ev("returned", ref, node="")] * 2


def test_returned_by_the_expired_leases_a_range_claim_ends(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = client.add_task(namespace, "t", unit_count=10, lease_ms=SHORT_MS)
    client.claim(ref, "n1", max_units=3)
    events.new()
    time.sleep(EXPIRE_S)
    got = client.claim(ref, "n2", max_units=3)
    assert got == [0, 1, 2]  # the returned units first
    assert events.new() == [ev("returned", ref, node=""), ev("claimed", ref, node="n2")]


def test_a_claim_that_takes_over_an_expired_lease_returns_nothing(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    """The unit never waits in PENDING: it goes from one holder to the next."""
    ref = client.add_task(namespace, "t", units=["a"], lease_ms=SHORT_MS)
    client.claim_unit(ref, "n1", "a")
    events.new()
    time.sleep(EXPIRE_S)
    assert client.claim_unit(ref, "n2", "a") == 2
    assert events.new() == [ev("claimed", ref, node="n2")]


@pytest.mark.parametrize("sticky", [False, True], ids=["reassign", "sticky"])
def test_returned_by_a_retryable_failure(
    lossy: dtaskq.Client, namespace: str, events: Events, sticky: bool
) -> None:
    ref = lossy.add_task(
        namespace,
        "t",
        units=["a", "b"],
        max_attempts=3,
        retry_backoff_ms=0,
        on_lease_expiry="sticky" if sticky else "reassign",
    )
    token = lossy.claim_unit(ref, "n1", "a")
    events.new()
    lose_next_reply("fail_unit")
    assert lossy.fail_unit(ref, "n1", "a", "flaky", token, retryable=True) is True
    assert LossyConnection.runs["fail_unit"] == 2
    assert events.new() == [ev("returned", ref, node="n1" if sticky else "")]
    # The last attempt's failure fails the task: no unit comes back.
    time.sleep(0.005)  # the backoff is at least 1 ms
    token = lossy.claim_unit(ref, "n1", "a")
    lossy.fail_unit(ref, "n1", "a", "flaky", token, retryable=True)
    events.new()
    time.sleep(0.005)
    token = lossy.claim_unit(ref, "n1", "a")
    # A reassign unit came back to nobody, so n1 owns it again; a sticky one stayed n1's.
    assert events.new() == ([] if sticky else [ev("claimed", ref, node="n1")])
    assert lossy.fail_unit(ref, "n1", "a", "flaky", token, retryable=True) is False
    assert events.new() == [ev("status", ref, status="FAILED")]


def test_a_retryable_failure_of_an_unclaimed_unit_returns_nothing(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    """It was PENDING before and is PENDING after: nothing became claimable."""
    ref = client.add_task(namespace, "t", units=["a"], max_attempts=2, retry_backoff_ms=0)
    events.new()
    assert client.fail_unit(ref, "n1", "a", "flaky", retryable=True) is True
    assert events.new() == []


# --- group ---


def test_group_counters_and_events(
    client: dtaskq.Client,
    namespace: str,
    events: Events,
    r: redis.Redis,
    prefix: str,
    unchanged: Unchanged,
    rejects: Rejects,
) -> None:
    units = [
        "plain-1",
        UnitSpec("g1-a", group="g1"),
        UnitSpec("g2-a", group="g2 x"),
        "plain-2",
        UnitSpec("g1-b", group="g1"),
        UnitSpec("ü", group="ünï"),
    ]
    ref = client.add_task(namespace, "t", units=units, max_attempts=2, retry_backoff_ms=0)
    assert group_counters(r, prefix, ref) == {"": 2, "g1": 2, "g2 x": 1, "ünï": 1}
    events.new()

    token = client.complete_unit(ref, "n1", "g1-a")
    assert events.new() == [ev("claimed", ref, node="n1")]
    unchanged(client.complete_unit, ref, "n1", "g1-a", token)  # an identical retry
    rejects(UnitAlreadyTerminal, client.complete_unit, ref, "n2", "g1-a")
    # A retryable failure leaves the unit incomplete.
    assert client.fail_unit(ref, "n1", "g1-b", "flaky", retryable=True) is True
    assert group_counters(r, prefix, ref)["g1"] == 1
    events.new()
    time.sleep(0.005)  # the backoff is at least 1 ms
    client.complete_unit(ref, "n1", "g1-b")
    assert events.new() == [ev("group", ref, group="g1")]
    client.complete_unit(ref, "n1", "plain-1")
    client.complete_unit(ref, "n1", "g2-a")
    client.complete_unit(ref, "n1", "ü")
    assert events.new() == [ev("group", ref, group="g2 x"), ev("group", ref, group="ünï")]
    # The last unit completes its group, then the task.
    client.complete_unit(ref, "n2", "plain-2")
    assert events.new() == [
        ev("claimed", ref, node="n2"),
        ev("group", ref, group=""),
        ev("status", ref, status="FINISHED"),
    ]
    assert group_counters(r, prefix, ref) == {"": 0, "g1": 0, "g2 x": 0, "ünï": 0}


def test_range_tasks_have_no_groups(
    client: dtaskq.Client, namespace: str, events: Events, r: redis.Redis, prefix: str
) -> None:
    ref = client.add_task(namespace, "t", unit_count=2)
    assert group_counters(r, prefix, ref) == {}
    events.new()
    client.complete_unit(ref, "n1", 0)
    client.complete_unit(ref, "n1", 1)
    assert events.new() == [ev("claimed", ref, node="n1"), ev("status", ref, status="FINISHED")]


# --- status and acked ---


def test_status_and_acks_through_both_barriers(
    client: dtaskq.Client, namespace: str, events: Events, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], prepare_barrier=True)
    client.complete_unit(ref, "n1", "a")
    client.complete_unit(ref, "n2", "b")
    kinds = ["added", "claimed", "claimed", "group", "status"]
    assert [e["kind"] for e in events.new()] == kinds
    assert client.record_prepare_ack(ref, "n1") is True
    unchanged(client.record_prepare_ack, ref, "n1")  # the first ack wins
    unchanged(client.record_prepare_ack, ref, "n3")  # not an owner
    assert client.record_prepare_ack(ref, "n2") is True
    assert client.record_post_ack(ref, "n1") is True
    assert client.record_post_ack(ref, "n2") is True
    assert client.finalize_task(ref) is True
    assert unchanged(client.finalize_task, ref) is False
    assert events.new() == [
        ev("acked", ref, node="n1", phase="prepare", success=1),
        ev("acked", ref, node="n2", phase="prepare", success=1),
        ev("status", ref, status="SWAPPING"),
        ev("acked", ref, node="n1", phase="post", success=1),
        ev("acked", ref, node="n2", phase="post", success=1),
        ev("status", ref, status="FINISHED"),
    ]
    unchanged(client.record_post_ack, ref, "n1", success=False, error="late")


def test_early_prepare_acks_pass_both_statuses_in_one_call(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b"], prepare_barrier=True)
    client.complete_unit(ref, "n1", "a")
    client.record_prepare_ack(ref, "n1")
    events.new()
    client.complete_unit(ref, "n1", "b")
    assert events.new() == [
        ev("group", ref, group=""),
        ev("status", ref, status="PREPARING"),
        ev("status", ref, status="SWAPPING"),
    ]


def test_a_failed_ack_is_acked_then_failed(
    client: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = client.add_task(namespace, "t", units=["a"], ack_barrier=True)
    client.complete_unit(ref, "n1", "a")
    assert events.new()[-1] == ev("status", ref, status="SWAPPING")
    assert client.record_post_ack(ref, "n1", success=False, error="disk full") is True
    assert events.new() == [
        ev("acked", ref, node="n1", phase="post", success=0),
        ev("status", ref, status="FAILED"),
    ]


def test_cancel_and_final_failure_tell_their_status_once(
    lossy: dtaskq.Client, namespace: str, events: Events, unchanged: Unchanged, rejects: Rejects
) -> None:
    cancelled = lossy.add_task(namespace, "c", units=["a"])
    failed = lossy.add_task(namespace, "f", units=["a", "b"])
    token = lossy.claim_unit(failed, "n1", "a")
    events.new()
    lose_next_reply("cancel_task")
    lossy.cancel_task(cancelled)
    assert LossyConnection.runs["cancel_task"] == 2
    lose_next_reply("fail_unit")
    assert lossy.fail_unit(failed, "n1", "a", "boom", token) is False
    assert LossyConnection.runs["fail_unit"] == 2
    assert events.new() == [
        ev("status", cancelled, status="CANCELLED"),
        ev("status", failed, status="FAILED"),
    ]
    rejects(TaskNotRunning, lossy.cancel_task, cancelled)
    rejects(TaskNotRunning, lossy.complete_unit, failed, "n2", "b")


# --- removed ---


def test_removed_by_cleanup_and_by_the_sweep(
    lossy: dtaskq.Client, namespace: str, events: Events, unchanged: Unchanged
) -> None:
    cleaned = lossy.add_task(namespace, "c", units=["a"], completed_ttl_ms=0)
    swept = lossy.add_task(namespace, "s", unit_count=3, completed_ttl_ms=0)
    lossy.cancel_task(cleaned)
    lossy.cancel_task(swept)
    events.new()
    time.sleep(0.005)
    lose_next_reply("cleanup_task")
    lossy.cleanup_task(cleaned)
    assert LossyConnection.runs["cleanup_task"] == 2
    assert lossy.sweep(namespace).deleted == 1
    assert events.new() == [ev("removed", cleaned), ev("removed", swept)]
    assert unchanged(lossy.sweep, namespace).deleted == 0


# --- no event from calls that change nothing ---


def test_rejected_calls_write_no_event(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    """``rejects`` and ``unchanged`` compare the whole stream too."""
    ref = client.add_task(namespace, "t", units=["a", "b"])
    spans = client.add_task(namespace, "s", unit_count=4)
    token = client.claim_unit(ref, "n1", "a")
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "a")
    rejects(LeaseLost, client.complete_unit, ref, "n1", "a", token + 1)
    rejects(dtaskq.InvalidArgument, client.claim, ref, "n1")  # named units
    rejects(dtaskq.TaskDoesNotExist, client.claim_unit, TaskRef(namespace, "t", 9), "n1", "a")
    unchanged(client.heartbeat, "n2", [(ref, "a", token)])
    unchanged(client.release, "n2", [(ref, "a", token)])
    unchanged(client.get_task, namespace, "t")
    unchanged(client.list_tasks, namespace)
    client.cancel_task(spans)
    rejects(TaskNotRunning, client.claim_first, spans, "n1")
    rejects(dtaskq.TaskTooFresh, client.cleanup_task, spans)
    rejects(dtaskq.TaskStillRunning, client.cleanup_task, ref)


# --- where events go, and how many are kept ---


@pytest.fixture
def client4(server_url: str, prefix: str, namespace: str) -> Iterator[dtaskq.Client]:
    """A client whose namespace is spread over 4 partitions."""
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={namespace: 4}) as c:
        yield c


def test_each_partition_has_its_own_stream(
    client4: dtaskq.Client, namespace: str, prefix: str, r: redis.Redis
) -> None:
    ids = [f"t{i}" for i in range(12)]
    refs = [client4.add_task(namespace, task_id, units=["a"]) for task_id in ids]
    for p in range(4):
        stream = Events(r, Partition(prefix, namespace, p).events_key())
        expected = [ev("added", ref) for ref in refs if partition_of(ref.task_id, 4) == p]
        assert stream.all() == expected
    assert sum(r.xlen(Partition(prefix, namespace, p).events_key()) for p in range(4)) == 12


def test_the_stream_is_capped_near_1000(
    client: dtaskq.Client, namespace: str, events: Events, r: redis.Redis
) -> None:
    refs = [client.add_task(namespace, f"t{i}", units=["a"]) for i in range(1500)]
    length = r.xlen(events.key)
    # MAXLEN ~ trims whole stream nodes (100 entries by default), never below the cap.
    assert 1000 <= length <= 1100, length
    assert events.all() == [ev("added", ref) for ref in refs[-length:]]


def test_task_nodes_are_the_owners_and_their_unit_counts(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c"], ack_barrier=True)
    assert client.get_task(namespace, "t").nodes == {}
    client.claim_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "b")
    client.update_progress(ref, "n2", "c", 0.5)
    assert client.get_task(namespace, "t").nodes == {"n1": 2, "n2": 1}
    spans = client.add_task(namespace, "s", unit_count=10)
    client.claim(spans, "n1", max_units=4)
    client.claim(spans, "n2", max_units=1)
    task = client.get_task(namespace, "s")
    assert task.nodes == {"n1": 4, "n2": 1}
    assert task.status is TaskStatus.STARTED
