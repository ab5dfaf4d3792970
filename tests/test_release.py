"""release: a node gives its claims back at once, each lease ending as an expiry would
(docs/rules.md rule 25, docs/runtime.md shutdown)."""

from __future__ import annotations

import time

import redis
from support import Events, LossyConnection, Rejects, Unchanged, ev, lose_next_reply, unit_of
from test_range_invariants import N, check_storage

import dtaskq
from dtaskq import (
    DONE,
    ClaimedUnit,
    ClaimStatus,
    LeaseLost,
    TaskRef,
    TaskStatus,
    UnitStatus,
    UnitWrongNode,
)
from dtaskq.keys import Partition, partition_of

HELD, LOST = ClaimStatus.HELD, ClaimStatus.LOST
SHORT_MS = 100
EXPIRE_S = 0.13


def spans(r: redis.Redis, prefix: str, ref: TaskRef) -> list[str]:
    key = Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)[9]
    return [m.decode() for m in r.zrange(key, 0, -1)]


def test_a_released_unit_goes_to_the_next_claimer_at_once(
    client: dtaskq.Client,
    namespace: str,
    events: Events,
    rejects: Rejects,
    unchanged: Unchanged,
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c"])
    ta = client.claim_unit(ref, "n1", "a")
    tb = client.claim_unit(ref, "n1", "b")
    tc = client.claim_unit(ref, "n2", "c")
    events.new()
    assert client.release("n1", [(ref, "a", ta), (ref, "b", tb)]) == [True, True]
    # Both units are anybody's again: one event.
    assert events.new() == [ev("returned", ref, node="")]
    task = client.get_task(namespace, "t")
    for unit_id in ("a", "b"):
        u = task.units[unit_id]
        assert (u.status, u.node, u.attempt, u.lease_expires_at) == (
            UnitStatus.PENDING,
            None,
            1,
            None,
        )
    assert task.nodes == {"n2": 1}
    # The old token is dead at once; the retry of the release gives nothing back.
    rejects(LeaseLost, client.update_progress, ref, "n1", "a", 0.5, ta)
    rejects(LeaseLost, client.complete_unit, ref, "n1", "a", ta)
    assert unchanged(client.heartbeat, "n1", [(ref, "a", ta)]) == [LOST]
    assert unchanged(client.release, "n1", [(ref, "a", ta), (ref, "b", tb)]) == [False, False]
    # No waiting for a lease: another node claims it now, under the next token.
    assert client.claim_unit(ref, "n2", "a") == ta + 1
    rejects(UnitWrongNode, client.complete_unit, ref, "n1", "a", ta)
    assert client.heartbeat("n2", [(ref, "a", ta + 1), (ref, "c", tc)]) == [HELD, HELD]
    assert client.complete_unit(ref, "n2", "a", ta + 1) == ta + 1


def test_a_released_sticky_unit_waits_for_its_node(
    client: dtaskq.Client, namespace: str, events: Events, rejects: Rejects
) -> None:
    ref = client.add_task(namespace, "t", units=["shard", "x"], on_lease_expiry="sticky")
    old = client.claim_unit(ref, "n1", "shard")
    events.new()
    assert client.release("n1", [(ref, "shard", old)]) == [True]
    assert events.new() == [ev("returned", ref, node="n1")]
    u = unit_of(client, ref, "shard")
    assert (u.status, u.node, u.attempt) == (UnitStatus.PENDING, "n1", 1)
    assert client.get_task(namespace, "t").nodes == {"n1": 1}
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "shard")
    rejects(LeaseLost, client.complete_unit, ref, "n1", "shard", old)
    new = client.claim_unit(ref, "n1", "shard")
    assert new == old + 1
    assert client.complete_unit(ref, "n1", "shard", new) == new


def test_a_released_sticky_range_unit_waits_for_its_node(
    client: dtaskq.Client, namespace: str, events: Events, rejects: Rejects
) -> None:
    ref = client.add_task(namespace, "t", unit_count=2, on_lease_expiry="sticky")
    got = client.claim(ref, "n1", max_units=2)
    assert isinstance(got, list) and got == [0, 1]
    events.new()
    assert client.release("n1", [(ref, u, u.token) for u in got]) == [True, True]
    assert events.new() == [ev("returned", ref, node="n1")]
    assert client.claim_first(ref, "n2") is DONE
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", 0)
    again = client.claim(ref, "n1", max_units=2)
    assert isinstance(again, list) and again == [0, 1]
    assert [u.token for u in again] == [2, 2]


def test_a_released_range_unit_comes_back_first_then_its_continuation(
    client: dtaskq.Client, namespace: str, events: Events, r: redis.Redis, prefix: str
) -> None:
    ref = client.add_task(namespace, "t", unit_count=N)
    got = client.claim(ref, "n1", max_units=3)
    assert isinstance(got, list) and got == [0, 1, 2]
    u0, u1, u2 = got
    assert spans(r, prefix, ref) == [f"3 {N} n1"]
    # A unit in the middle: only it comes back; n1 still continues after 2.
    assert client.release("n1", [(ref, u1, u1.token)]) == [True]
    assert spans(r, prefix, ref) == [f"3 {N} n1"]
    check_storage(r, prefix, ref, {})
    # The unit n1 was continuing from: the span after it is fresh.
    assert client.release("n1", [(ref, u2, u2.token)]) == [True]
    assert spans(r, prefix, ref) == [f"3 {N} "]
    check_storage(r, prefix, ref, {})
    assert events.new()[-2:] == [ev("returned", ref, node="")] * 2
    # The released units are handed out first, then the fresh span: nothing is lost.
    rest = client.claim(ref, "n2", max_units=N)
    assert isinstance(rest, list)
    assert [int(u) for u in rest] == [1, 2, *range(3, N)]
    assert [u.token for u in rest[:2]] == [2, 2]
    assert client.claim_first(ref, "n3") is DONE
    check_storage(r, prefix, ref, {})
    completer: dict[int, str] = {0: "n1"}
    client.complete_unit(ref, "n1", u0, u0.token)
    for unit in rest:
        client.complete_unit(ref, "n2", unit, unit.token)
        completer[int(unit)] = "n2"
    check_storage(r, prefix, ref, completer)
    task = client.get_task(namespace, "t")
    assert task.status is TaskStatus.FINISHED
    assert task.nodes == {"n1": 1, "n2": N - 1}


def test_claims_that_are_not_held_answer_false_and_change_nothing(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c", "d"], lease_ms=SHORT_MS)
    spans_ref = client.add_task(namespace, "s", unit_count=4)
    cancelled = client.add_task(namespace, "x", units=["a"])
    ta = client.claim_unit(ref, "n1", "a")
    tb = client.claim_unit(ref, "n2", "b")
    tc = client.complete_unit(ref, "n1", "c")
    td = client.claim_unit(ref, "n1", "d")
    tx = client.claim_unit(cancelled, "n1", "a")
    client.cancel_task(cancelled)
    claims = [
        (ref, "a", ta + 1),  # stale token
        (ref, "b", tb),  # another node's
        (ref, "c", tc),  # completed
        (ref, "nope", 1),  # unknown unit
        (cancelled, "a", tx),  # task not running
        (TaskRef(namespace, "never", 1), "a", 1),  # unknown task
        (TaskRef(namespace, "t", ref.version + 1), "a", ta),  # unknown version
        (TaskRef(namespace + "x", "t", 1), "a", 1),  # unknown namespace
        (spans_ref, 3, 1),  # unclaimed range unit
    ]
    assert unchanged(client.release, "n1", claims) == [False] * len(claims)
    # An expired lease is no longer held either: the sweep or the next claim ends it.
    time.sleep(EXPIRE_S)
    assert unchanged(client.release, "n1", [(ref, "d", td)]) == [False]
    assert client.release("n1", []) == []


def test_release_answers_per_claim_across_partitions(
    server_url: str, prefix: str, namespace: str
) -> None:
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={namespace: 4}) as client:
        ids: dict[int, str] = {}
        i = 0
        while len(ids) < 4:
            ids.setdefault(partition_of(f"t{i}", 4), f"t{i}")
            i += 1
        refs = [client.add_task(namespace, ids[p], units=["u"]) for p in range(4)]
        tokens = [client.claim_unit(ref, "n1", "u") for ref in refs]
        claims = [(ref, "u", token) for ref, token in zip(refs, tokens, strict=True)]
        claims[2] = (refs[2], "u", tokens[2] + 1)
        assert client.release("n1", claims) == [True, True, False, True]
        statuses = [unit_of(client, ref, "u").status for ref in refs]
        assert statuses == [UnitStatus.PENDING] * 2 + [UnitStatus.IN_PROGRESS, UnitStatus.PENDING]


def test_a_release_retried_after_a_lost_reply_releases_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str, events: Events
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"])
    token = lossy.claim_unit(ref, "n1", "a")
    events.new()
    lose_next_reply("release")
    # The retry finds the unit no longer held: it cannot tell that its first try released it.
    assert lossy.release("n1", [(ref, "a", token)]) == [False]
    assert LossyConnection.runs["release"] == 2
    assert events.new() == [ev("returned", ref, node="")]
    assert client.claim_unit(ref, "n2", "a") == token + 1


async def test_the_async_client_releases_too(aclient: dtaskq.AsyncClient, namespace: str) -> None:
    ref = await aclient.add_task(namespace, "t", unit_count=4)
    got = await aclient.claim(ref, "n1", max_units=2)
    assert isinstance(got, list)
    claims = [(ref, u, u.token) for u in got]
    assert await aclient.release("n1", claims) == [True, True]
    assert await aclient.release("n1", claims) == [False, False]
    again = await aclient.claim_first(ref, "n2")
    assert isinstance(again, ClaimedUnit) and (again, again.token) == (0, 2)
    task = await aclient.get_task(namespace, "t")
    assert task is not None and task.nodes == {"n2": 1}
