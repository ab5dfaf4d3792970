"""Creation, versions and conflict keys (docs/rules.md rules 1-5); cancel, cleanup and listing
(rules 21-23); partitioned namespaces (§5)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import redis

import dtaskq
from dtaskq import ClaimStatus, TaskRef, TaskStatus, UnitSpec, UnitStatus
from dtaskq.keys import Partition

State = Callable[[], dict[bytes, object]]

ACTIVE = ["STARTED", "PREPARING", "SWAPPING"]
TERMINAL = ["FINISHED", "FAILED", "CANCELLED"]


def make_task(
    client: dtaskq.Client,
    namespace: str,
    task_id: str,
    status: str,
    units: list[str | UnitSpec] | None = None,
    **options: object,
) -> TaskRef:
    """Adds a task and drives it into ``status`` through the public API."""
    units = units or ["u1", "u2"]
    if status == "PREPARING":
        options["prepare_barrier"] = True
    elif status == "SWAPPING":
        options["ack_barrier"] = True
    ref = client.add_task(namespace, task_id, units=units, **options)  # type: ignore[arg-type]
    unit_ids = [u.id if isinstance(u, UnitSpec) else u for u in units]
    if status in ("PREPARING", "SWAPPING", "FINISHED"):
        for unit in unit_ids:
            client.complete_unit(ref, "n1", unit)
    elif status == "FAILED":
        client.fail_unit(ref, "n1", unit_ids[0], "boom")
    elif status == "CANCELLED":
        client.cancel_task(ref)
    task = client.get_task(namespace, task_id)
    assert task is not None and task.status == status
    return ref


def task_keys(prefix: str, ref: TaskRef) -> list[str]:
    """The task's keys in a one-partition namespace (task, units, acks, nodes, shared...)."""
    return Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)


def partition_of_key(key: bytes) -> tuple[str, int]:
    """``(namespace, partition)`` from a key ``{prefix:ns:p}:...``."""
    tag = key.decode().split("}", 1)[0].lstrip("{")
    _, ns, p = tag.split(":")
    return ns, int(p)


# --- creation (rules 1, 4) -------------------------------------------------------------


def test_new_task_is_started_with_every_unit_pending(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    ref = client.add_task(
        namespace,
        "reindex",
        units=["s1", UnitSpec("s2"), UnitSpec("s3", group="tenant-a")],
        payload=b"abc",
        lease_ms=1234,
        on_lease_expiry="sticky",
        max_attempts=3,
        retry_backoff_ms=7,
        completed_ttl_ms=99,
        prepare_barrier=True,
        conflict_keys=["k1", "k2"],
    )
    assert ref.namespace == namespace and ref.task_id == "reindex" and ref.version >= 1
    task = client.get_task(namespace, "reindex")
    assert task is not None
    assert task.ref == ref
    assert task.status is TaskStatus.STARTED and task.is_active
    assert task.payload == b"abc" and task.error == "" and task.finished_at is None
    seconds, micros = r.time()
    server_now = datetime.fromtimestamp(seconds + micros / 1e6, tz=task.started_at.tzinfo)
    assert task.started_at.tzinfo is not None
    assert abs(task.started_at - server_now) < timedelta(minutes=1)
    assert sorted(task.units) == ["s1", "s2", "s3"]
    assert {u.id: u.group for u in task.units.values()} == {"s1": "", "s2": "", "s3": "tenant-a"}
    for unit in task.units.values():
        assert unit.status is UnitStatus.PENDING
        assert unit.node is None
        assert unit.attempt == 0
        assert unit.progress == 0.0
        assert unit.error == ""
        assert unit.finished_at is None and unit.lease_expires_at is None
        assert unit.ready_at is None
    assert task.counts[UnitStatus.PENDING] == 3
    assert task.counts[UnitStatus.IN_PROGRESS] == 0
    assert task.prepare_acks == {} and task.post_acks == {}
    assert (task.lease_ms, task.on_lease_expiry, task.max_attempts) == (1234, "sticky", 3)
    assert (task.retry_backoff_ms, task.completed_ttl_ms) == (7, 99)
    assert task.prepare_barrier and task.ack_barrier
    assert task.conflict_keys == ("k1", "k2")


def test_a_single_unit_is_enough(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "one", units=["only"])
    task = client.get_task(namespace, "one")
    assert task is not None and list(task.units) == ["only"]
    assert client.claim_unit(ref, "n1", "only") == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"plain text",
        b"\xff\xfe\x00\x80\xc3\x28 not utf-8",
        bytes(range(256)),
        b"\x00" * 1000,
        b"\x80" * 100_000,
    ],
    ids=["empty", "ascii", "invalid-utf8", "all-bytes", "nuls", "100k"],
)
def test_payload_round_trips(client: dtaskq.Client, namespace: str, payload: bytes) -> None:
    client.add_task(namespace, "t", units=["u"], payload=payload)
    task = client.get_task(namespace, "t")
    assert task is not None
    assert task.payload == payload and type(task.payload) is bytes
    (listed,) = client.list_tasks(namespace)[namespace]
    assert listed.payload == payload


@pytest.mark.parametrize(
    "units",
    [
        [],
        ["a", "a"],
        ["a", "b", UnitSpec("a", group="g")],
        [""],
        ["a", UnitSpec("")],
    ],
    ids=["none", "duplicate", "duplicate-spec", "empty-id", "empty-spec-id"],
)
def test_bad_unit_lists_are_rejected_without_writes(
    client: dtaskq.Client, namespace: str, state: State, units: list[str | UnitSpec]
) -> None:
    client.add_task(namespace, "existing", units=["x"])
    before = state()
    with pytest.raises(dtaskq.InvalidArgument):
        client.add_task(namespace, "new", units=units)
    with pytest.raises(dtaskq.InvalidArgument):
        client.add_task(namespace, "existing", units=units)
    assert state() == before
    assert client.get_task(namespace, "new") is None


def test_get_task_of_unknown_id_is_none(client: dtaskq.Client, namespace: str) -> None:
    assert client.get_task(namespace, "nope") is None
    client.add_task(namespace, "there", units=["u"])
    assert client.get_task(namespace, "nope") is None
    assert client.get_task(namespace + "x", "there") is None


# --- active ids and versions (rules 2, 3) --------------------------------------------------


@pytest.mark.parametrize("status", ACTIVE)
def test_adding_an_active_id_raises_task_exists(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    ref = make_task(client, namespace, "busy", status, payload=b"first")
    before = state()
    with pytest.raises(dtaskq.TaskExists) as caught:
        client.add_task(namespace, "busy", units=["other"], payload=b"second")
    assert state() == before
    assert caught.value.namespace == namespace and caught.value.task_id == "busy"
    assert caught.value.code == "TASK_EXISTS"
    task = client.get_task(namespace, "busy")
    assert task is not None
    assert (task.version, task.status, task.payload) == (ref.version, status, b"first")


@pytest.mark.parametrize("status", TERMINAL)
def test_readding_a_terminal_id_creates_a_greater_version(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str, status: str
) -> None:
    old = make_task(client, namespace, "job", status, units=["a", "b"], payload=b"old")
    client.add_task(namespace, "bystander", units=["z"])
    new = client.add_task(namespace, "job", units=["c"], payload=b"new")
    assert new.task_id == old.task_id
    assert new.version > old.version
    task = client.get_task(namespace, "job")
    assert task is not None
    assert task.version == new.version
    assert task.status is TaskStatus.STARTED
    assert (task.payload, task.error, task.finished_at) == (b"new", "", None)
    assert list(task.units) == ["c"]
    assert task.units["c"].status is UnitStatus.PENDING and task.units["c"].node is None
    task_key, units_key, _, nodes_key, _, expiry_key, *_ = task_keys(prefix, new)
    assert r.hkeys(units_key) == [b"c"]
    assert not r.exists(nodes_key)
    # The new version is active: it must not inherit the old version's deletion schedule.
    assert r.zscore(expiry_key, "job") is None
    assert r.pttl(task_key) == -1 and r.pttl(units_key) == -1
    # A third version is greater again.
    client.cancel_task(new)
    third = client.add_task(namespace, "job", units=["d"])
    assert third.version > new.version


def test_readding_drops_the_old_versions_units_and_acks(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    old = client.add_task(namespace, "swap", units=["a", "b"], ack_barrier=True)
    client.update_progress(old, "n1", "a", 0.5)
    client.complete_unit(old, "n1", "a")
    client.complete_unit(old, "n2", "b")
    assert client.record_post_ack(old, "n1")
    assert client.record_post_ack(old, "n2")
    assert client.finalize_task(old)
    _, units_key, acks_key, nodes_key, *_ = task_keys(prefix, old)
    assert r.hlen(acks_key) == 2 and r.hlen(nodes_key) == 2

    new = client.add_task(namespace, "swap", units=["c"])
    task = client.get_task(namespace, "swap")
    assert task is not None and task.version == new.version
    assert list(task.units) == ["c"]
    assert task.prepare_acks == {} and task.post_acks == {}
    assert not r.exists(acks_key) and not r.exists(nodes_key)
    assert r.hkeys(units_key) == [b"c"]
    # An ack for the new version now needs a node owning a unit of the new version.
    assert client.record_post_ack(new, "n1") is False


OLD_VERSION_CALLS: dict[str, Callable[[dtaskq.Client, TaskRef], object]] = {
    "claim_unit": lambda c, ref: c.claim_unit(ref, "n1", "a"),
    "update_progress": lambda c, ref: c.update_progress(ref, "n1", "a", 0.5),
    "complete_unit": lambda c, ref: c.complete_unit(ref, "n1", "a"),
    "fail_unit": lambda c, ref: c.fail_unit(ref, "n1", "a", "boom"),
    "fail_unit_retryable": lambda c, ref: c.fail_unit(ref, "n1", "a", "boom", retryable=True),
    "record_prepare_ack": lambda c, ref: c.record_prepare_ack(ref, "n1"),
    "record_post_ack": lambda c, ref: c.record_post_ack(ref, "n1", success=False, error="x"),
    "finalize_task": lambda c, ref: c.finalize_task(ref),
    "cancel_task": lambda c, ref: c.cancel_task(ref),
    "cleanup_task": lambda c, ref: c.cleanup_task(ref),
}


@pytest.mark.parametrize("call", list(OLD_VERSION_CALLS))
@pytest.mark.parametrize("which", ["older", "newer"])
def test_calls_naming_another_version_raise_task_does_not_exist(
    client: dtaskq.Client, namespace: str, state: State, call: str, which: str
) -> None:
    old = client.add_task(namespace, "v", units=["a"], completed_ttl_ms=0)
    client.claim_unit(old, "n1", "a")
    client.cancel_task(old)
    current = client.add_task(namespace, "v", units=["a"], max_attempts=2)
    client.claim_unit(current, "n1", "a")
    other = old if which == "older" else TaskRef(namespace, "v", current.version + 1)
    time.sleep(0.005)
    before = state()
    with pytest.raises(dtaskq.TaskDoesNotExist) as caught:
        OLD_VERSION_CALLS[call](client, other)
    assert caught.value.version == other.version and caught.value.task_id == "v"
    assert state() == before
    assert client.heartbeat("n1", [(other, "a", 1)]) == [ClaimStatus.NOT_RUNNING]
    assert client.heartbeat("n1", [(current, "a", 1)]) == [ClaimStatus.HELD]


# --- conflict keys (rule 5) --------------------------------------------------------------


@pytest.mark.parametrize("status", ACTIVE)
def test_conflict_key_of_an_active_task_rejects(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    make_task(client, namespace, "holder", status, conflict_keys=["k1", "k2"])
    before = state()
    with pytest.raises(dtaskq.TaskConflict) as caught:
        client.add_task(namespace, "rival", units=["u"], conflict_keys=["k0", "k2"])
    assert caught.value.task_id == "rival" and "holder" in caught.value.message
    assert state() == before
    assert client.get_task(namespace, "rival") is None
    # Disjoint keys and the same keys in another namespace are not in conflict.
    client.add_task(namespace, "friend", units=["u"], conflict_keys=["k0", "k3"])
    client.add_task(namespace + "-other", "rival", units=["u"], conflict_keys=["k1", "k2"])
    with pytest.raises(dtaskq.TaskConflict):
        client.add_task(namespace, "rival", units=["u"], conflict_keys=["k3"])


@pytest.mark.parametrize("status", TERMINAL)
def test_conflict_keys_are_released_when_the_holder_ends(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    holder = make_task(client, namespace, "holder", status, conflict_keys=["k1", "k2"])
    rival = client.add_task(namespace, "rival", units=["u"], conflict_keys=["k2"])
    # Now the rival holds k2, so the old holder cannot come back with it.
    before = state()
    with pytest.raises(dtaskq.TaskConflict):
        client.add_task(namespace, "holder", units=["u"], conflict_keys=["k1", "k2"])
    assert state() == before
    task = client.get_task(namespace, "holder")
    assert task is not None and task.version == holder.version
    client.cancel_task(rival)
    again = client.add_task(namespace, "holder", units=["u"], conflict_keys=["k1", "k2"])
    assert again.version > holder.version


@pytest.mark.parametrize("status", TERMINAL)
def test_a_task_readds_its_own_id_with_the_same_keys(
    client: dtaskq.Client, namespace: str, status: str
) -> None:
    old = make_task(client, namespace, "self", status, conflict_keys=["k1", "k2"])
    new = client.add_task(namespace, "self", units=["u"], conflict_keys=["k1", "k2"])
    assert new.version > old.version
    # The new version holds the keys again.
    with pytest.raises(dtaskq.TaskConflict):
        client.add_task(namespace, "other", units=["u"], conflict_keys=["k2"])
    client.complete_unit(new, "n1", "u")
    client.add_task(namespace, "other", units=["u"], conflict_keys=["k2"])


def test_conflict_keys_need_a_single_partition(
    r: redis.Redis, prefix: str, namespace: str, state: State
) -> None:
    client = dtaskq.Client(r, prefix=prefix, partitions={namespace: 2})
    ref = client.add_task(namespace, "plain", units=["u"])
    before = state()
    with pytest.raises(dtaskq.InvalidArgument, match="partition"):
        client.add_task(namespace, "locked", units=["u"], conflict_keys=["k"])
    assert state() == before
    assert client.get_task(namespace, "locked") is None
    client.complete_unit(ref, "n1", "u")
    # An empty list of conflict keys is no conflict key at all.
    client.add_task(namespace, "locked", units=["u"], conflict_keys=[])


# --- cancel (rule 21) --------------------------------------------------------------------


def test_cancel_ends_a_started_task(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "c", units=["a", "b"])
    token = client.claim_unit(ref, "n1", "a")
    client.cancel_task(ref)
    task = client.get_task(namespace, "c")
    assert task is not None
    assert task.status is TaskStatus.CANCELLED and not task.is_active
    assert task.finished_at is not None and task.finished_at >= task.started_at
    with pytest.raises(dtaskq.TaskNotRunning):
        client.claim_unit(ref, "n2", "b")
    with pytest.raises(dtaskq.TaskNotRunning):
        client.complete_unit(ref, "n1", "a", token)
    assert client.heartbeat("n1", [(ref, "a", token)]) == [ClaimStatus.NOT_RUNNING]


@pytest.mark.parametrize("status", ["PREPARING", "SWAPPING", *TERMINAL])
def test_cancel_refuses_other_statuses(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    ref = make_task(client, namespace, "c", status)
    before = state()
    with pytest.raises(dtaskq.TaskNotRunning) as caught:
        client.cancel_task(ref)
    assert caught.value.version == ref.version
    assert state() == before
    task = client.get_task(namespace, "c")
    assert task is not None and task.status == status


# --- cleanup (rule 22) -------------------------------------------------------------------


@pytest.mark.parametrize("status", ACTIVE)
def test_cleanup_refuses_an_active_task(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    ref = make_task(client, namespace, "c", status, completed_ttl_ms=0)
    time.sleep(0.005)
    before = state()
    with pytest.raises(dtaskq.TaskStillRunning):
        client.cleanup_task(ref)
    assert state() == before


@pytest.mark.parametrize("status", TERMINAL)
def test_cleanup_refuses_a_task_within_its_ttl(
    client: dtaskq.Client, namespace: str, state: State, status: str
) -> None:
    # The TTL leaves room for a loaded machine between the task's end and the refused call.
    ref = make_task(client, namespace, "c", status, completed_ttl_ms=600)
    before = state()
    with pytest.raises(dtaskq.TaskTooFresh):
        client.cleanup_task(ref)
    assert state() == before
    time.sleep(0.65)
    client.cleanup_task(ref)
    assert client.get_task(namespace, "c") is None


def test_cleanup_deletes_every_key_of_the_task(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    keep = client.add_task(namespace, "keeper", units=["u"], conflict_keys=["kk"])
    doomed = client.add_task(
        namespace,
        "doomed-task",
        units=["a", UnitSpec("b", group="g")],
        ack_barrier=True,
        conflict_keys=["kd"],
        completed_ttl_ms=0,
    )
    client.update_progress(doomed, "n1", "a", 0.3)
    client.complete_unit(doomed, "n1", "a")
    client.complete_unit(doomed, "n2", "b")
    client.record_post_ack(doomed, "n1")
    client.record_post_ack(doomed, "n2")
    assert client.finalize_task(doomed)
    assert any(b"doomed-task" in k for k in list(r.scan_iter(match=f"*{prefix}*", count=1000)))
    time.sleep(0.005)

    client.cleanup_task(doomed)

    # Only the one-minute tombstone that makes a retried cleanup succeed is left.
    left = [k for k in list(r.scan_iter(match=f"*{prefix}*", count=1000)) if b"doomed-task" in k]
    assert [k.decode().rsplit("}:", 1)[1] for k in left] == ["cleaned:doomed-task"]
    assert 0 < r.pttl(left[0]) <= 60_000
    _, _, _, _, leases, expiry, conflicts, index, *_ = task_keys(prefix, doomed)
    assert r.zscore(index, "doomed-task") is None
    assert r.zscore(expiry, "doomed-task") is None
    assert b"doomed-task" not in r.hvals(conflicts)
    assert not any(m.startswith(b"doomed-task\n") for m in r.zrange(leases, 0, -1))
    assert client.get_task(namespace, "doomed-task") is None
    assert [t.task_id for t in client.list_tasks()[namespace]] == ["keeper"]
    assert client.get_task(namespace, "keeper") is not None
    with pytest.raises(dtaskq.TaskDoesNotExist):
        client.cleanup_task(doomed)
    # The id is free again, with a greater version.
    again = client.add_task(namespace, "doomed-task", units=["x"])
    assert again.version > doomed.version
    client.cancel_task(keep)


def test_cleanup_of_the_last_task_removes_its_namespace_from_the_listing(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "solo", units=["u"], completed_ttl_ms=0)
    client.cancel_task(ref)
    assert list(client.list_tasks()) == [namespace]
    time.sleep(0.005)
    client.cleanup_task(ref)
    assert client.list_tasks() == {}
    assert client.list_tasks(namespace) == {}


# --- listing (rule 23) ------------------------------------------------------------------


def test_list_tasks_orders_active_first_then_by_activity_then_id(
    client: dtaskq.Client, namespace: str
) -> None:
    other = namespace + "-2"
    empty = namespace + "-empty"
    pause = 0.004  # distinct server milliseconds between steps

    def add(ns: str, task_id: str) -> TaskRef:
        ref = client.add_task(ns, task_id, units=["u"])
        time.sleep(pause)
        return ref

    older_active = add(namespace, "b-active")
    finished_first = add(namespace, "e-done")
    cancelled = add(namespace, "a-cancelled")
    newer_active = add(namespace, "d-active")
    failed = add(namespace, "c-failed")
    add(other, "x")
    swapping = client.add_task(other, "y", units=["u"], ack_barrier=True)
    time.sleep(pause)
    client.complete_unit(finished_first, "n1", "u")
    time.sleep(pause)
    client.fail_unit(failed, "n1", "u", "boom")
    time.sleep(pause)
    client.cancel_task(cancelled)
    time.sleep(pause)
    client.complete_unit(swapping, "n1", "u")
    # A namespace that is registered but holds no task is not listed.
    assert client.get_task(empty, "ghost") is None

    listing = client.list_tasks()
    assert list(listing) == sorted([namespace, other])
    assert [t.task_id for t in listing[namespace]] == [
        "d-active",  # active, started last
        "b-active",  # active, started first
        "a-cancelled",  # terminal, finished last
        "c-failed",
        "e-done",  # terminal, finished first
    ]
    assert [t.task_id for t in listing[other]] == ["y", "x"]  # both active; y is newer
    assert listing[other][0].status is TaskStatus.SWAPPING
    assert {t.task_id: t.version for t in listing[namespace]}["d-active"] == newer_active.version
    assert older_active.version < newer_active.version

    assert client.list_tasks() == listing  # stable across calls
    assert client.list_tasks(namespace) == {namespace: listing[namespace]}
    assert client.list_tasks(other) == {other: listing[other]}
    assert client.list_tasks(empty) == {}
    assert client.list_tasks(namespace + "-unknown") == {}


def test_list_tasks_breaks_ties_by_id(r: redis.Redis, prefix: str, namespace: str) -> None:
    # Four partitions, so that the index order (partition by partition) is not the id order.
    client = dtaskq.Client(r, prefix=prefix, partitions={namespace: 4})
    active = ["zeta", "alpha", "mid", "delta", "kappa"]
    ended = ["omega", "gamma", "beta"]
    refs = {task_id: client.add_task(namespace, task_id, units=["u"]) for task_id in active + ended}
    for task_id in ended:
        client.cancel_task(refs[task_id])
    by_partition = sorted(refs, key=lambda t: (zlib.crc32(t.encode()) % 4, t))
    assert by_partition != sorted(refs)
    # Give every task the same activity time, so that only the id can order them.
    for task_id in refs:
        part = Partition(prefix, namespace, zlib.crc32(task_id.encode()) % 4)
        task_key = part.task_keys(task_id)[0]
        assert r.exists(task_key)
        r.hset(task_key, "started_at", 1_700_000_000_000)
        if task_id in ended:
            r.hset(task_key, "finished_at", 1_700_000_000_000)
    listing = client.list_tasks(namespace)
    assert [t.task_id for t in listing[namespace]] == sorted(active) + sorted(ended)


def test_list_tasks_order_holds_for_many_tasks(client: dtaskq.Client, namespace: str) -> None:
    refs = [client.add_task(namespace, f"t{i:03d}", units=["u"]) for i in range(40)]
    for i, ref in enumerate(refs):
        if i % 3 == 0:
            client.complete_unit(ref, "n1", "u")
        elif i % 3 == 1:
            client.cancel_task(ref)
    tasks = client.list_tasks()[namespace]
    assert sorted(t.task_id for t in tasks) == [f"t{i:03d}" for i in range(40)]

    def expected_key(task: dtaskq.Task) -> tuple[bool, float, str]:
        moment = task.finished_at if task.finished_at is not None else task.started_at
        return (task.status.is_terminal, -moment.timestamp(), task.task_id)

    assert tasks == sorted(tasks, key=expected_key)
    assert [t.is_active for t in tasks] == [True] * 13 + [False] * 27


def test_list_tasks_reads_every_page_of_a_partition(client: dtaskq.Client, namespace: str) -> None:
    """More tasks than one page of the index (500), ending on a full page."""
    ids = [f"t{i:04d}" for i in range(1000)]
    for task_id in ids:
        client.add_task(namespace, task_id, units=["u"])
    tasks = client.list_tasks(namespace)[namespace]
    assert len(tasks) == 1000
    assert sorted(t.task_id for t in tasks) == ids


async def test_async_client_creates_lists_and_cancels(
    aclient: dtaskq.AsyncClient, namespace: str
) -> None:
    ref = await aclient.add_task(namespace, "a", units=["u"], payload=b"\xff")
    with pytest.raises(dtaskq.TaskExists):
        await aclient.add_task(namespace, "a", units=["u"])
    await aclient.cancel_task(ref)
    again = await aclient.add_task(namespace, "a", units=["v"])
    assert again.version > ref.version
    listing = await aclient.list_tasks()
    (task,) = listing[namespace]
    assert (task.version, task.payload, list(task.units)) == (again.version, b"", ["v"])


# --- partitions (§5) --------------------------------------------------------------------


def test_partitioned_namespace_spreads_tasks_and_works(
    r: redis.Redis, prefix: str, namespace: str
) -> None:
    client = dtaskq.Client(r, prefix=prefix, partitions={namespace: 4})
    ids = [f"task-{i}" for i in range(16)]
    refs = [client.add_task(namespace, task_id, units=["a", "b"]) for task_id in ids]
    assert r.hget(f"{prefix}:namespaces", namespace) == b"4"

    for task_id in ids:
        (task_key,) = list(r.scan_iter(match=f"*{prefix}*:task:{task_id}", count=1000))
        assert partition_of_key(task_key) == (namespace, zlib.crc32(task_id.encode()) % 4)
    used = {
        partition_of_key(k)[1] for k in list(r.scan_iter(match=f"*{prefix}*:task:*", count=1000))
    }
    assert len(used) > 1 and used <= {0, 1, 2, 3}

    for ref in refs:
        token = client.claim_unit(ref, "n1", "a")
        client.update_progress(ref, "n1", "a", 0.5, token)
        client.complete_unit(ref, "n1", "a", token)
        client.complete_unit(ref, "n2", "b")
    listing = client.list_tasks(namespace)[namespace]
    assert sorted(t.task_id for t in listing) == sorted(ids)
    assert all(t.status is TaskStatus.FINISHED for t in listing)
    assert all(client.sweep(namespace, p).more is False for p in range(4))
    with pytest.raises(dtaskq.InvalidArgument):
        client.sweep(namespace, 4)


def test_partition_count_is_fixed_at_first_use(r: redis.Redis, prefix: str, namespace: str) -> None:
    first = dtaskq.Client(r, prefix=prefix, partitions={namespace: 4})
    for i in range(8):
        first.add_task(namespace, f"first-{i}", units=["u"])
    second = dtaskq.Client(r, prefix=prefix, partitions={namespace: 8})
    refs = [second.add_task(namespace, f"second-{i}", units=["u"]) for i in range(24)]
    assert r.hget(f"{prefix}:namespaces", namespace) == b"4"
    task_keys_found = list(r.scan_iter(match=f"*{prefix}*:task:*", count=1000))
    assert len(task_keys_found) == 32
    for key in task_keys_found:
        task_id = key.decode().rsplit(":task:", 1)[1]
        assert partition_of_key(key)[1] == zlib.crc32(task_id.encode()) % 4
    assert all(
        partition_of_key(k)[1] < 4 for k in list(r.scan_iter(match=f"{{{prefix}:*", count=1000))
    )
    # Both clients see every task, wherever it was added.
    assert len(second.list_tasks(namespace)[namespace]) == 32
    assert second.get_task(namespace, "first-3") is not None
    assert first.claim_unit(refs[5], "n1", "u") == 1
    with pytest.raises(dtaskq.InvalidArgument):
        second.sweep(namespace, 5)

    # The other way round: a namespace first used with the default stays at one partition.
    other = namespace + "-1"
    dtaskq.Client(r, prefix=prefix).add_task(other, "x", units=["u"])
    wider = dtaskq.Client(r, prefix=prefix, partitions={other: 4})
    for i in range(8):
        wider.add_task(other, f"y{i}", units=["u"])
    assert {
        partition_of_key(k) for k in list(r.scan_iter(match=f"*{prefix}:{other}:*", count=1000))
    } == {(other, 0)}
    assert r.hget(f"{prefix}:namespaces", other) == b"1"


def test_reads_and_rejections_do_not_register_a_namespace(
    r: redis.Redis, prefix: str, namespace: str, state: State
) -> None:
    client = dtaskq.Client(r, prefix=prefix, partitions={namespace: 4})
    ghost = TaskRef(namespace, "ghost", 1)
    before = state()
    assert client.get_task(namespace, "ghost") is None
    assert client.list_tasks(namespace) == {}
    assert client.sweep(namespace) == dtaskq.SweepResult(0, 0, False)
    assert client.heartbeat("n1", [(ghost, "u", 1)]) == [ClaimStatus.NOT_RUNNING]
    with pytest.raises(dtaskq.TaskDoesNotExist):
        client.claim_unit(ghost, "n1", "u")
    with pytest.raises(dtaskq.InvalidArgument, match="partition"):
        client.add_task(namespace, "locked", units=["u"], conflict_keys=["k"])
    assert state() == before
    # So the first add_task still decides the count.
    client.add_task(namespace, "real", units=["u"])
    assert r.hget(f"{prefix}:namespaces", namespace) == b"4"
