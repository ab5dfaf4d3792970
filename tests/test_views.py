"""What a node's scheduler reads: task_view (a task's fields, acks and owners, and the groups
the node owns units of, never its units), node_units (the node's units of one group) and
task_summaries (every task of a namespace, page by page, over every partition). All agree
with get_task, and a view's cost follows the node's groups, not its units or the task's."""

from __future__ import annotations

import dataclasses
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from support import server_time, wait_for_leases_to_end, wait_until

import dtaskq
import dtaskq.urls
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


def expected_view(task: dtaskq.Task) -> dtaskq.Task:
    """``task`` as every node's view shows it: no payload, no units, only the COMPLETED
    count."""
    return dataclasses.replace(task, payload=b"", units={}, counts={C: task.counts[C]})


def groups_left(task: dtaskq.Task, node: str) -> dict[str, int]:
    """For each group in which ``node`` owns named units (any status): how many units of the
    group are not complete (range tasks have no groups)."""
    if task.unit_count is not None:
        return {}
    mine = {u.group for u in task.units.values() if u.node == node}
    return {
        g: sum(1 for u in task.units.values() if u.group == g and u.status is not C) for g in mine
    }


def owned(task: dtaskq.Task, node: str, group: str) -> list[str]:
    """The ids of ``node``'s named units of ``group`` in ``task``, in id (byte) order."""
    if task.unit_count is not None:
        return []
    found = [u.id for u in task.units.values() if u.node == node and u.group == group]
    return sorted(found, key=lambda unit_id: unit_id.encode())


def check_views(client: dtaskq.Client, ref: TaskRef, nodes: list[str]) -> dtaskq.Task:
    """Every node's view, and its units of every group of the task, agree with one get_task
    snapshot; returns the snapshot."""
    task = task_of(client, ref)
    groups = {u.group for u in task.units.values()} | {""}
    for node in nodes:
        view = view_of(client, ref, node)
        assert view.task == expected_view(task), node
        assert view.groups_left == groups_left(task, node), node
        for group in groups:
            assert client.node_units(ref, node, group) == owned(task, node, group), (node, group)
    return task


def units_of(client: dtaskq.Client, ref: TaskRef, node: str) -> dict[str, list[str]]:
    """``node``'s units of each group its view lists, as node_units reads them."""
    view = view_of(client, ref, node)
    return {group: client.node_units(ref, node, group) for group in view.groups_left}


# --- task_view ---


def test_a_view_is_the_task_without_payload_or_units(client: dtaskq.Client, namespace: str) -> None:
    """Fields, acks and owners as get_task has them, no payload and never a unit; the groups
    of the node's units (whatever their status) with how many of their units are left;
    claimable while a unit waits."""
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
    assert task.payload == b"p" * 1000
    for node in nodes:
        view = view_of(client, ref, node)
        assert view.claimable and view.groups_left == {} and view.task.units == {}

    ta = client.claim_unit(ref, "n1", "a")
    client.claim_unit(ref, "n1", "c")
    client.complete_unit(ref, "n1", "a", ta)
    client.claim_unit(ref, "n2", "b")
    td = client.claim_unit(ref, "n2", "d")
    # A retryable failure hands d back to any node: n2 no longer owns a unit of group "".
    assert client.fail_unit(ref, "n2", "d", "flaky", td, retryable=True) is True
    task = check_views(client, ref, nodes)
    n1, n2 = view_of(client, ref, "n1"), view_of(client, ref, "n2")
    assert n1.groups_left == {"g1": 1, "g2": 1} and n1.task.units == {}
    assert units_of(client, ref, "n1") == {"g1": ["a"], "g2": ["c"]}
    assert n2.groups_left == {"g1": 1} and units_of(client, ref, "n2") == {"g1": ["b"]}
    assert n1.task.counts == {C: 1} and n1.task.nodes == {"n1": 2, "n2": 1}
    assert view_of(client, ref, "n3").groups_left == {}
    assert all(view_of(client, ref, n).claimable for n in nodes)  # d backs off, e is fresh

    for unit, node in (("b", "n2"), ("c", "n1"), ("e", "n3")):
        client.complete_unit(ref, node, unit)
    assert view_of(client, ref, "n1").groups_left == {"g1": 0, "g2": 0}
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
    assert n3.groups_left == {"": 0} and units_of(client, ref, "n3") == {"": ["d", "e"]}
    assert n3.task.prepare_acks == {} and set(n3.task.post_acks) == {"n1"}
    assert n3.task.counts == {C: 5} and n3.task.nodes == {"n1": 2, "n2": 1, "n3": 2}


def test_groups_follow_units_from_node_to_node(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """Through a task's life the groups of each view, and each node's units of a group, follow
    its units as they are claimed, released, lost with a lease and claimed again: a node that
    no longer owns a unit of a group no longer sees that group. Node ids that prefix each
    other (n1, n10) and group names that do (g, g1) stay apart."""
    units = [UnitSpec(u, "g") for u in ("a", "b", "c")] + [UnitSpec("d", "g1"), UnitSpec("e", "g1")]
    ref = client.add_task(namespace, "life", units=[*units, "f"], lease_ms=1_000)
    nodes = ["n1", "n10", "n2"]
    tokens = {u: client.claim_unit(ref, "n1", u) for u in ("a", "b", "d")}
    tokens |= {u: client.claim_unit(ref, "n10", u) for u in ("c", "e")}
    check_views(client, ref, nodes)
    assert view_of(client, ref, "n1").groups_left == {"g": 3, "g1": 2}
    assert units_of(client, ref, "n1") == {"g": ["a", "b"], "g1": ["d"]}
    assert view_of(client, ref, "n10").groups_left == {"g": 3, "g1": 2}
    assert units_of(client, ref, "n10") == {"g": ["c"], "g1": ["e"]}
    assert view_of(client, ref, "n2").groups_left == {}

    # A completed unit stays its node's: the count of its group drops for every node.
    client.complete_unit(ref, "n1", "a", tokens["a"])
    check_views(client, ref, nodes)
    assert view_of(client, ref, "n1").groups_left == {"g": 2, "g1": 2}
    assert view_of(client, ref, "n10").groups_left == {"g": 2, "g1": 2}

    # Released: n1 owned no other unit of g1, so g1 leaves its view; then n10 claims d.
    assert client.release("n1", [(ref, "d", tokens["d"])]) == [True]
    task = check_views(client, ref, nodes)
    assert view_of(client, ref, "n1").groups_left == {"g": 2}
    assert client.node_units(ref, "n1", "g1") == [] and task.nodes == {"n1": 2, "n10": 2}
    tokens["d"] = client.claim_unit(ref, "n10", "d")
    check_views(client, ref, nodes)
    assert units_of(client, ref, "n10") == {"g": ["c"], "g1": ["d", "e"]}

    # Every lease held runs out and the sweep ends them: n10 owns nothing any more, n1 only a.
    wait_for_leases_to_end(client, r, ref, ["b", "c", "d", "e"])
    assert client.sweep(namespace).reclaimed == 4
    task = check_views(client, ref, nodes)
    assert task.nodes == {"n1": 1}
    assert view_of(client, ref, "n10").groups_left == {} and units_of(client, ref, "n10") == {}
    assert view_of(client, ref, "n1").groups_left == {"g": 2}
    assert units_of(client, ref, "n1") == {"g": ["a"]}

    # Units that came back are handed out before the fresh one.
    claimed = client.claim_any(ref, "n1", max_units=10)
    assert claimed.units == ["b", "c", "d", "e", "f"]
    check_views(client, ref, nodes)
    assert view_of(client, ref, "n1").groups_left == {"g": 2, "g1": 2, "": 1}
    assert units_of(client, ref, "n1") == {"g": ["a", "b", "c"], "g1": ["d", "e"], "": ["f"]}

    for unit in claimed.units:
        client.complete_unit(ref, "n1", unit, unit.token)
    task = check_views(client, ref, nodes)
    assert task.status is TaskStatus.FINISHED
    view = view_of(client, ref, "n1")
    assert view.groups_left == {"g": 0, "g1": 0, "": 0} and not view.claimable
    assert view.task.nodes == {"n1": 6} and view.task.counts == {C: 6}


def test_units_kept_for_a_node_stay_its_own_and_claimable_only_by_it(
    client: dtaskq.Client, namespace: str
) -> None:
    """Sticky tasks: a unit whose lease ended is kept for its node (rule 25); it stays among
    that node's units and in its groups, and only that node could be handed it."""
    units = [UnitSpec("a", "g"), UnitSpec("b", "g"), UnitSpec("c", "g")]
    ref = client.add_task(namespace, "s", units=units, on_lease_expiry="sticky")
    held = client.claim_any(ref, "n1", max_units=2)
    assert client.claim_any(ref, "n2").units == ["c"]
    assert client.release("n1", [(ref, "a", held.units[0].token)]) == [True]
    task = check_views(client, ref, ["n1", "n2", "n3"])
    assert (task.units["a"].status, task.units["a"].node) == (UnitStatus.PENDING, "n1")
    assert view_of(client, ref, "n1").groups_left == {"g": 3}
    assert units_of(client, ref, "n1") == {"g": ["a", "b"]}
    assert units_of(client, ref, "n2") == {"g": ["c"]}
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


def test_a_range_view_has_counts_and_owners_but_no_groups(
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
    assert view.task.unit_count == 10 and view.claimable and view.task.nodes == {"n1": 3}
    assert client.node_units(ref, "n1") == [] and client.node_units(ref, "n1", "g") == []
    rest = client.claim(ref, "n2", max_units=10)
    assert isinstance(rest, list) and len(rest) == 7
    assert not view_of(client, ref, "n3").claimable  # all held
    assert client.release("n2", [(ref, rest[0], rest[0].token)]) == [True]
    assert view_of(client, ref, "n3").claimable  # returned to any node
    check_views(client, ref, ["n1", "n2", "n3"])
    assert view_of(client, ref, "n2").groups_left == {} and client.node_units(ref, "n2") == []


def test_claimable_needs_a_started_task(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "c", units=["a", "b"])
    client.claim_unit(ref, "n1", "a")
    assert view_of(client, ref, "n1").claimable
    client.cancel_task(ref)
    view = view_of(client, ref, "n1")
    assert not view.claimable and view.task.status is TaskStatus.CANCELLED
    assert view.task.units_finished_at is None and view.task.finished_at is not None
    assert view.groups_left == {"": 2} and client.node_units(ref, "n1") == ["a"]


def test_there_is_no_view_of_a_missing_task(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    assert client.task_view(namespace, "t", "n1") is None  # a namespace without tasks
    assert client.node_units(TaskRef(namespace, "t", 1), "n1") == []
    assert r.exists(namespaces_key(prefix)) == 0  # reads register no namespace
    ref = client.add_task(namespace, "t", units=["a"])
    assert client.task_view(namespace, "other", "n1") is None
    with pytest.raises(dtaskq.TaskDoesNotExist):
        client.node_units(TaskRef(namespace, "other", 1), "n1")
    with pytest.raises(dtaskq.TaskDoesNotExist):
        client.node_units(dataclasses.replace(ref, version=ref.version + 1), "n1")


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


# --- node_units ---


def test_node_units_lists_one_group_in_id_order(client: dtaskq.Client, namespace: str) -> None:
    """A node's units of one group, whatever their status, in byte order of their ids; the
    default group is ""; a unit that moved to another node is listed under that node."""
    ids = ["z", "b", "a10", "a9", "B"]
    units = [UnitSpec(u, "g") for u in ids] + [UnitSpec("y", "g1"), "x", "w"]
    ref = client.add_task(namespace, "ids", units=units, max_attempts=3, retry_backoff_ms=0)
    for unit in [*ids, "y", "x"]:
        client.claim_unit(ref, "n1", unit)
    client.complete_unit(ref, "n1", "a9")
    assert client.fail_unit(ref, "n1", "x", "broken", retryable=False) is False
    assert client.node_units(ref, "n1", "g") == ["B", "a10", "a9", "b", "z"]
    assert client.node_units(ref, "n1", "g1") == ["y"]
    assert client.node_units(ref, "n1") == ["x"] == client.node_units(ref, "n1", "")
    assert client.node_units(ref, "n1", "h") == [] and client.node_units(ref, "n2", "g") == []
    check_views(client, ref, ["n1", "n2"])

    other = client.add_task(namespace, "moves", units=[UnitSpec(u, "g") for u in "abc"])
    tokens = {u: client.claim_unit(other, "n1", u) for u in "abc"}
    assert client.release("n1", [(other, "b", tokens["b"])]) == [True]
    assert client.node_units(other, "n1", "g") == ["a", "c"]
    assert client.node_units(other, "n2", "g") == []
    client.complete_unit(other, "n2", "b")
    assert client.node_units(other, "n1", "g") == ["a", "c"]
    assert client.node_units(other, "n2", "g") == ["b"]
    check_views(client, other, ["n1", "n2"])


# --- the cost of a view ---


def node_connection(r: redis.Redis, key: str) -> redis.Redis:
    """A plain connection to the server that holds ``key``: the primary of its slot on a
    cluster (MONITOR and ECHO go to one server)."""
    if isinstance(r, RedisCluster):
        node = r.get_node_from_key(key)
        return redis.Redis(host=node.host, port=node.port)
    return r


def lua_commands(server: redis.Redis, call: Callable[[], object]) -> list[list[str]]:
    """The commands the functions that ``call`` makes run on ``server``, as MONITOR shows
    them, in order."""
    marker = "end-of-call-" + uuid.uuid4().hex
    commands: list[list[str]] = []
    with server.monitor() as monitor:
        call()
        server.echo(marker)
        for item in monitor.listen():
            if marker in item["command"]:
                break
            if item.get("client_type") == "lua":
                commands.append(item["command"].split(" "))
    return commands


def normalized(commands: list[list[str]], task_id: str) -> list[list[str]]:
    """``commands`` with the task id in key names as ``T`` and server times (ms) as ``NOW``."""

    def part(text: str) -> str:
        if text.endswith(":" + task_id):
            return text[: -len(task_id)] + "T"
        return "NOW" if text.isdigit() and len(text) >= 12 else text

    return [[part(text) for text in command] for command in commands]


def test_a_view_reads_the_nodes_groups_and_never_a_unit(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    """A 5 000-unit task of which the node owns 2 000 units in 3 groups: the view reads no
    unit record and no list of the node's units, one counter per group, and runs the very
    commands it runs on a 10-unit task of which the node owns 6 units in the same groups
    (both fully held, so that the view looks at every way a unit could be claimable)."""
    part = Partition(prefix, namespace, 0)
    runs: dict[int, list[list[str]]] = {}
    for size, mine in ((10, 6), (5_000, 2_000)):
        task_id = f"t{size}"
        units = [UnitSpec(f"u{i}", group=f"g{i % 3}") for i in range(size)]
        ref = client.add_task(namespace, task_id, units=units)
        for node, count in (("n1", mine), ("n2", size - mine)):
            while count:
                got = client.claim_any(ref, node, max_units=min(count, 1_000))
                count -= len(got.units)
                assert got.units
        client.complete_unit(ref, "n1", "u0")
        task = check_views(client, ref, ["n1", "n2"])
        view = view_of(client, ref, "n1")
        assert view.groups_left == groups_left(task, "n1") and not view.claimable
        assert len(view.groups_left) == 3 and task.nodes == {"n1": mine, "n2": size - mine}
        assert sum(len(client.node_units(ref, "n1", g)) for g in view.groups_left) == mine

        keys = dict(zip(TASK_KEY_KINDS, part.task_keys(task_id), strict=True))
        server = node_connection(r, keys["task"])
        try:
            commands = lua_commands(server, lambda t=task_id: client.task_view(namespace, t, "n1"))
            listing = lua_commands(server, lambda ref=ref: client.node_units(ref, "n1", "g1"))
        finally:
            if server is not r:
                server.close()
        # Nothing that grows with the node's units or the task's: no unit record, no list of
        # units; one ZRANGE of the node's groups and one HGET of each group's counter.
        assert [cmd for cmd in commands if keys["units"] in cmd] == []
        assert [cmd for cmd in commands if keys["owned"] in cmd] == []
        assert [cmd[0].upper() for cmd in commands if keys["groups"] in cmd] == ["ZRANGE"]
        assert [cmd[0].upper() for cmd in commands if keys["pending"] in cmd] == ["ZCARD"]
        hgets = [cmd[1:] for cmd in commands if cmd[0].upper() == "HGET"]
        assert hgets == [[keys["task"], f"group:g{g}"] for g in range(3)]
        # node_units reads the one group's range of the node's units, and no unit record.
        assert [cmd for cmd in listing if keys["units"] in cmd] == []
        assert [cmd[0].upper() for cmd in listing if keys["owned"] in cmd] == ["ZRANGE"]
        runs[size] = normalized(commands, task_id)
    assert runs[10] == runs[5_000]


# --- task_summaries ---


class Counting:
    """Notes the function of every FCALL and FCALL_RO a real connection sends."""

    functions: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("FCALL", "FCALL_RO"):
            by_name = {f.server_name: name for name, f in LIBRARY.functions.items()}
            self.functions.append(by_name[args[1]])
        return super().execute_command(*args, **options)  # type: ignore[misc]


class CountingRedis(Counting, redis.Redis):
    pass


class CountingRedisCluster(Counting, RedisCluster):
    pass


@pytest.fixture
def four(server_url: str, prefix: str, namespace: str) -> Iterator[dtaskq.Client]:
    """A client that gives the test's namespace four partitions, counting its calls."""
    plain, cluster = dtaskq.urls.parse(server_url)
    connection: Any = (CountingRedisCluster if cluster else CountingRedis).from_url(plain)
    connection.functions = []
    with dtaskq.Client(connection, prefix=prefix, partitions={namespace: 4}) as c:
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

    four.redis.functions.clear()  # type: ignore[union-attr]
    summaries = four.task_summaries(namespace, "n1")
    calls = four.redis.functions  # type: ignore[union-attr]
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
