"""What a node's scheduler reads: task_view (a task cut to one node's units) and
task_summaries (every task of a namespace, page by page, over every partition); both agree
with get_task, and a view's cost follows the node's units, not the task's."""

from __future__ import annotations

import dataclasses
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from support import server_time, wait_for_leases_to_end, wait_until

import dtaskq
from dtaskq import TaskRef, TaskStatus, TaskSummary, UnitSpec, UnitStatus
from dtaskq.keys import TASK_KEY_KINDS, Partition, namespaces_key
from dtaskq.scripts import LIBRARY

C = UnitStatus.COMPLETED


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def view_of(client: dtaskq.Client, ref: TaskRef, node: str) -> dtaskq.TaskView:
    view = client.task_view(ref.namespace, ref.task_id, node)
    assert view is not None
    return view


def expected_view(task: dtaskq.Task, node: str) -> dtaskq.Task:
    """``task`` as a view for ``node`` shows it: no payload, only the named units the node
    owns, only the COMPLETED count."""
    return dataclasses.replace(
        task,
        payload=b"",
        units={k: u for k, u in task.units.items() if u.node == node and task.unit_count is None},
        counts={C: task.counts[C]},
    )


def groups_left(task: dtaskq.Task, node: str) -> dict[str, int]:
    """For each group of ``node``'s named units: how many units of the group are not
    complete (range tasks have no groups)."""
    if task.unit_count is not None:
        return {}
    mine = {u.group for u in task.units.values() if u.node == node}
    return {
        g: sum(1 for u in task.units.values() if u.group == g and u.status is not C) for g in mine
    }


def check_views(client: dtaskq.Client, ref: TaskRef, nodes: list[str]) -> dtaskq.Task:
    """Every node's view agrees with one get_task snapshot; returns the snapshot."""
    task = task_of(client, ref)
    for node in nodes:
        view = view_of(client, ref, node)
        assert view.task == expected_view(task, node), node
        assert view.groups_left == groups_left(task, node), node
    return task


# --- task_view ---


def test_a_view_is_the_task_cut_to_the_nodes_units(client: dtaskq.Client, namespace: str) -> None:
    """Fields, acks and owners as get_task has them; units and group counters only for the
    node's own units, whatever their status; no payload; claimable while a unit waits."""
    units = [UnitSpec("a", "g1"), UnitSpec("b", "g1"), UnitSpec("c", "g2"), "d", "e"]
    ref = client.add_task(
        namespace,
        "t",
        units=units,
        payload=b"p" * 1000,
        ack_barrier=True,
        max_attempts=2,
        retry_backoff_ms=0,
    )
    nodes = ["n1", "n2", "n3"]
    task = check_views(client, ref, nodes)
    assert all(view_of(client, ref, n).claimable for n in nodes)
    assert task.payload == b"p" * 1000

    ta = client.claim_unit(ref, "n1", "a")
    client.claim_unit(ref, "n1", "c")
    client.complete_unit(ref, "n1", "a", ta)
    client.claim_unit(ref, "n2", "b")
    td = client.claim_unit(ref, "n2", "d")
    assert client.fail_unit(ref, "n2", "d", "flaky", td, retryable=True) is True
    task = check_views(client, ref, nodes)
    n1, n2 = view_of(client, ref, "n1"), view_of(client, ref, "n2")
    assert set(n1.task.units) == {"a", "c"} and n1.groups_left == {"g1": 1, "g2": 1}
    assert set(n2.task.units) == {"b"} and n2.groups_left == {"g1": 1}
    assert n1.task.counts == {C: 1} and n1.task.nodes == {"n1": 2, "n2": 1}
    assert view_of(client, ref, "n3").task.units == {}
    assert all(view_of(client, ref, n).claimable for n in nodes)  # d backs off, e is fresh

    for unit, node in (("b", "n2"), ("c", "n1"), ("e", "n3")):
        client.complete_unit(ref, node, unit)
    client.record_post_ack(ref, "n1")
    # d backs off for a millisecond; then it completes under a new claim.
    ready = task_of(client, ref).units["d"].ready_at
    assert ready is not None
    wait_until(lambda: server_time(client.redis) >= ready, "d may be claimed again")
    client.complete_unit(ref, "n3", "d")
    task = check_views(client, ref, nodes)
    assert task.status is TaskStatus.SWAPPING and task.units_finished_at is not None
    assert not any(view_of(client, ref, n).claimable for n in nodes)
    n3 = view_of(client, ref, "n3")
    assert set(n3.task.units) == {"d", "e"} and n3.groups_left == {"": 0}
    assert n3.task.prepare_acks == {} and set(n3.task.post_acks) == {"n1"}


def test_units_kept_for_a_node_are_in_its_view_and_claimable_only_by_it(
    client: dtaskq.Client, namespace: str
) -> None:
    """Sticky tasks: a unit whose lease ended is kept for its node (rule 25); it stays in that
    node's view, and only that node could be handed it."""
    ref = client.add_task(namespace, "s", units=["a", "b", "c"], on_lease_expiry="sticky")
    held = client.claim_any(ref, "n1", max_units=2)
    assert client.claim_any(ref, "n2").units == ["c"]
    assert client.release("n1", [(ref, "a", held.units[0].token)]) == [True]
    check_views(client, ref, ["n1", "n2", "n3"])
    kept = view_of(client, ref, "n1").task.units["a"]
    assert (kept.status, kept.node) == (UnitStatus.PENDING, "n1")
    assert view_of(client, ref, "n1").claimable
    assert not view_of(client, ref, "n2").claimable
    assert not view_of(client, ref, "n3").claimable

    spans = client.add_task(namespace, "r", unit_count=4, on_lease_expiry="sticky")
    claimed = client.claim(spans, "n1", max_units=4)
    assert isinstance(claimed, list) and len(claimed) == 4
    assert not view_of(client, spans, "n1").claimable  # every unit is held
    assert client.release("n1", [(spans, claimed[1], claimed[1].token)]) == [True]
    assert view_of(client, spans, "n1").claimable
    assert not view_of(client, spans, "n2").claimable
    check_views(client, spans, ["n1", "n2"])


def test_a_range_view_has_counts_and_owners_but_no_units(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "r", unit_count=10, workers_hint=2, prepare_barrier=True)
    first = client.claim(ref, "n1", max_units=3)
    assert isinstance(first, list)
    for unit in first[:2]:
        client.complete_unit(ref, "n1", unit, unit.token)
    task = check_views(client, ref, ["n1", "n2"])
    assert task.counts[C] == 2 and len(task.units) == 1
    view = view_of(client, ref, "n1")
    assert view.task.units == {} and view.groups_left == {} and view.task.counts == {C: 2}
    assert view.task.unit_count == 10 and view.claimable
    rest = client.claim(ref, "n2", max_units=10)
    assert isinstance(rest, list) and len(rest) == 7
    assert not view_of(client, ref, "n3").claimable  # all held
    assert client.release("n2", [(ref, rest[0], rest[0].token)]) == [True]
    assert view_of(client, ref, "n3").claimable  # returned to any node
    check_views(client, ref, ["n1", "n2", "n3"])


def test_claimable_needs_a_started_task(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "c", units=["a", "b"])
    assert view_of(client, ref, "n1").claimable
    client.cancel_task(ref)
    view = view_of(client, ref, "n1")
    assert not view.claimable and view.task.status is TaskStatus.CANCELLED
    assert view.task.units_finished_at is None and view.task.finished_at is not None


def test_there_is_no_view_of_a_missing_task(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    assert client.task_view(namespace, "t", "n1") is None  # a namespace without tasks
    assert r.exists(namespaces_key(prefix)) == 0  # reads register no namespace
    client.add_task(namespace, "t", units=["a"])
    assert client.task_view(namespace, "other", "n1") is None


def test_a_unit_whose_lease_ran_out_is_claimable(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """Rule 25: every call treats a lease past its deadline as ended, even before the sweep
    has recorded it; so views and summaries see the unit as one a node could be handed."""
    ref = client.add_task(namespace, "e", units=["a"], lease_ms=300)
    assert client.claim_any(ref, "n1").units == ["a"]
    assert not view_of(client, ref, "n2").claimable
    wait_for_leases_to_end(client, r, ref, ["a"])
    summaries = {s.task_id: s for s in client.task_summaries(namespace, "n2")}
    assert view_of(client, ref, "n2").claimable and summaries["e"].claimable


# --- the cost of a view ---


def lua_commands(r: redis.Redis, call: Callable[[], object]) -> list[list[str]]:
    """The commands the functions that ``call`` makes run on the server, as MONITOR shows
    them, in order."""
    marker = "end-of-call-" + uuid.uuid4().hex
    commands: list[list[str]] = []
    with r.monitor() as monitor:
        call()
        r.echo(marker)
        for item in monitor.listen():
            if marker in item["command"]:
                break
            if item.get("client_type") == "lua":
                commands.append(item["command"].split(" "))
    return commands


def test_a_view_reads_the_nodes_units_and_nothing_sized_by_the_task(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    """A 5 000-unit task of which the node owns 3: the view returns those 3 records, reads the
    units hash once for exactly them, and runs the very commands it runs on a 10-unit task."""
    runs: dict[int, list[list[str]]] = {}
    for size in (10, 5_000):
        ns = f"{namespace}-{size}"
        ref = client.add_task(ns, "t", units=[f"u{i}" for i in range(size)])
        mine = client.claim_any(ref, "n1", max_units=3)
        client.claim_any(ref, "n2", max_units=2)
        client.complete_unit(ref, "n1", mine.units[0], mine.units[0].token)
        view = view_of(client, ref, "n1")
        assert sorted(view.task.units) == ["u0", "u1", "u2"]
        commands = lua_commands(r, lambda ns=ns: client.task_view(ns, "t", "n1"))
        runs[size] = [[part.replace(ns, "NS") for part in cmd] for cmd in commands]
    keys = dict(zip(TASK_KEY_KINDS, Partition(prefix, "NS", 0).task_keys("t"), strict=True))
    for commands in runs.values():
        assert [cmd for cmd in commands if keys["units"] in cmd] == [
            ["HMGET", keys["units"], "u0", "u1", "u2"]
        ]
        assert [cmd[0].upper() for cmd in commands if keys["pending"] in cmd] == ["ZCARD"]
    assert runs[10] == runs[5_000]
    big = view_of(client, TaskRef(f"{namespace}-5000", "t", 1), "n1")
    assert big.task.counts == {C: 1} and big.task.nodes == {"n1": 3, "n2": 2}


def test_a_view_returns_every_unit_of_a_node_that_owns_thousands(
    client: dtaskq.Client, namespace: str
) -> None:
    """The view reads a node's units in slices; 2 500 owned units come back whole, with the
    counters of their groups."""
    units = [UnitSpec(f"u{i:04d}", group=f"g{i % 3}") for i in range(2_600)]
    ref = client.add_task(namespace, "many", units=units)
    for k in (1_000, 1_000, 500):
        claimed = client.claim_any(ref, "n1", max_units=k)
        assert len(claimed.units) == k
    client.complete_unit(ref, "n1", claimed.units[0], claimed.units[0].token)
    assert len(client.claim_any(ref, "n2", max_units=1_000).units) == 100
    task = check_views(client, ref, ["n1", "n2"])
    view = view_of(client, ref, "n1")
    assert len(view.task.units) == 2_500 and not view.claimable
    assert view.groups_left == groups_left(task, "n1") and sum(view.groups_left.values()) == 2_599


# --- task_summaries ---


class CountingRedis(redis.Redis):
    """A real connection that notes the function of every FCALL and FCALL_RO it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.functions: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("FCALL", "FCALL_RO"):
            by_name = {f.server_name: name for name, f in LIBRARY.functions.items()}
            self.functions.append(by_name[args[1]])
        return super().execute_command(*args, **options)


@pytest.fixture
def four(server_url: str, prefix: str, namespace: str) -> Iterator[dtaskq.Client]:
    """A client that gives the test's namespace four partitions, counting its calls."""
    with dtaskq.Client(
        CountingRedis.from_url(server_url), prefix=prefix, partitions={namespace: 4}
    ) as c:
        yield c
        for key in c.redis.scan_iter(match=f"*{prefix}*", count=1000):
            c.redis.delete(key)


def ids_in(partition: int, count: int, stem: str) -> list[str]:
    """``count`` task ids that a 4-partition namespace keeps in ``partition``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        candidate = f"{stem}{i:04d}"
        if zlib.crc32(candidate.encode()) % 4 == partition:
            found.append(candidate)
        i += 1
    return found


def test_summaries_cover_every_partition_page_by_page(four: dtaskq.Client, namespace: str) -> None:
    """503 tasks in partition 0 (two pages of at most 500) and tasks in every other partition
    in every state a resync meets: one summary per task, as get_task and task_view see it, in
    one call per partition and page."""
    assert four.task_summaries(namespace, "n1") == []
    bulk = ids_in(0, 503, "bulk")
    for task_id in bulk:
        four.add_task(namespace, task_id, units=["a"])
    refs: dict[str, TaskRef] = {}
    for p in range(4):
        for task_id in ids_in(p, 4, f"p{p}-"):
            refs[task_id] = four.add_task(namespace, task_id, units=["a", "b"])
    spread = list(refs.values())  # four tasks in each partition, in partition order
    mine, finished, cancelled, other = spread[0], spread[5], spread[10], spread[15]
    four.claim_unit(mine, "n1", "a")  # n1 owns a unit, b is still claimable
    for unit in ("a", "b"):
        four.complete_unit(finished, "n1", unit)
    four.cancel_task(cancelled)
    four.claim_any(other, "n2", max_units=2)  # held by n2: nothing for n1
    sticky = four.add_task(
        namespace, ids_in(2, 5, "p2-")[-1], units=["a"], on_lease_expiry="sticky"
    )
    held = four.claim_any(sticky, "n2")
    assert four.release("n2", [(sticky, "a", held.units[0].token)]) == [True]  # kept for n2
    refs[sticky.task_id] = sticky
    spans = four.add_task(namespace, ids_in(3, 5, "p3-")[-1], unit_count=3)
    four.claim(spans, "n1", max_units=3)
    refs[spans.task_id] = spans

    four.redis.functions.clear()  # type: ignore[attr-defined]
    summaries = four.task_summaries(namespace, "n1")
    calls = four.redis.functions  # type: ignore[attr-defined]
    assert calls == ["list_summaries"] * 5, "two pages for partition 0, one for each other"
    ids = [s.task_id for s in summaries]
    assert len(ids) == len(set(ids)) == len(bulk) + len(refs)
    by_partition = [[i for i in ids if zlib.crc32(i.encode()) % 4 == p] for p in range(4)]
    assert ids == [i for part in by_partition for i in sorted(part)]

    found = {s.task_id: s for s in summaries}
    for task_id in [*bulk, *refs]:
        task = four.get_task(namespace, task_id)
        view = four.task_view(namespace, task_id, "n1")
        assert task is not None and view is not None
        assert found[task_id] == TaskSummary(
            task_id, task.version, task.status, view.claimable, "n1" in task.nodes
        )
    assert found[mine.task_id].owner and found[mine.task_id].claimable
    assert found[finished.task_id] == TaskSummary(
        finished.task_id, finished.version, TaskStatus.FINISHED, False, True
    )
    assert found[cancelled.task_id].status is TaskStatus.CANCELLED
    assert not found[cancelled.task_id].claimable
    assert not found[other.task_id].claimable and not found[other.task_id].owner
    assert not found[sticky.task_id].claimable
    assert found[spans.task_id].owner and not found[spans.task_id].claimable
    n2 = {s.task_id: s for s in four.task_summaries(namespace, "n2")}
    assert n2[sticky.task_id].claimable and n2[sticky.task_id].owner
