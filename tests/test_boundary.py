"""Regression tests at the client's boundary: text that cannot be encoded, bad client options,
the retry hint of UnitNotReady, server-side failures and refused permissions as dtaskq errors,
key names that the Lua functions and dtaskq/keys.py derive alike, and a server restart under a
live client."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import Rejects, server_time, wait_until

import dtaskq
from dtaskq import InvalidArgument, TaskRef, TaskStatus, UnitNotReady, UnitSpec
from dtaskq.keys import TASK_KEY_KINDS, Partition, namespaces_key
from dtaskq.scripts import LIBRARY
from dtaskq.server import find_server_binaries

LUA = Path(__file__).resolve().parent.parent / "lua"
S = "\ud800"  # a lone surrogate: a str that has no UTF-8 encoding


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


# --- text that cannot be encoded ---


@pytest.fixture
def live(client: dtaskq.Client, namespace: str) -> tuple[TaskRef, TaskRef]:
    """A task of named units (n1 holds "a" under token 1) and a range task (n1 holds 0)."""
    named = client.add_task(namespace, "named", units=["a", "b"], ack_barrier=True)
    assert client.claim_unit(named, "n1", "a") == 1
    spans = client.add_task(namespace, "spans", unit_count=5)
    assert client.claim(spans, "n1") != dtaskq.DONE
    return named, spans


Call = Callable[[dtaskq.Client, str, TaskRef, TaskRef], object]

SURROGATE_CALLS: dict[str, Call] = {
    "add_task-namespace": lambda c, ns, n, r: c.add_task(S, "t", units=["a"]),
    "add_task-task-id": lambda c, ns, n, r: c.add_task(ns, S, units=["a"]),
    "add_task-unit-id": lambda c, ns, n, r: c.add_task(ns, "t", units=["a", S]),
    "add_task-unit-spec-id": lambda c, ns, n, r: c.add_task(ns, "t", units=[UnitSpec(S)]),
    "add_task-group": lambda c, ns, n, r: c.add_task(ns, "t", units=[UnitSpec("a", S)]),
    "add_task-conflict-key": lambda c, ns, n, r: c.add_task(
        ns, "t", units=["a"], conflict_keys=[S]
    ),
    "add_task-range-task-id": lambda c, ns, n, r: c.add_task(ns, S + "r", unit_count=3),
    "get_task-namespace": lambda c, ns, n, r: c.get_task(S, "named"),
    "get_task-task-id": lambda c, ns, n, r: c.get_task(ns, S),
    "list_tasks-namespace": lambda c, ns, n, r: c.list_tasks(S),
    "task_view-namespace": lambda c, ns, n, r: c.task_view(S, "named", "n1"),
    "task_view-task-id": lambda c, ns, n, r: c.task_view(ns, S, "n1"),
    "task_view-node": lambda c, ns, n, r: c.task_view(ns, "named", S),
    "task_summaries-namespace": lambda c, ns, n, r: c.task_summaries(S, "n1"),
    "task_summaries-node": lambda c, ns, n, r: c.task_summaries(ns, S),
    "partitions-namespace": lambda c, ns, n, r: c.partitions(S),
    "sweep-namespace": lambda c, ns, n, r: c.sweep(S),
    "ref-namespace": lambda c, ns, n, r: c.claim_unit(TaskRef(S, "named", n.version), "n1", "b"),
    "ref-task-id": lambda c, ns, n, r: c.claim_unit(TaskRef(ns, S, n.version), "n1", "b"),
    "claim_unit-node": lambda c, ns, n, r: c.claim_unit(n, S, "b"),
    "claim_unit-unit": lambda c, ns, n, r: c.claim_unit(n, "n1", S),
    "claim_first-node": lambda c, ns, n, r: c.claim_first(r, S),
    "claim_next-node": lambda c, ns, n, r: c.claim_next(r, S, 0),
    "claim-node": lambda c, ns, n, r: c.claim(r, S, max_units=2),
    "claim-ref-task-id": lambda c, ns, n, r: c.claim(TaskRef(ns, S, r.version), "n1"),
    "complete_and_claim-node": lambda c, ns, n, r: c.complete_and_claim(r, S, [(0, 1)]),
    "complete_and_claim-unit": lambda c, ns, n, r: c.complete_and_claim(r, "n1", [(S, 1)]),
    "claim_any-node": lambda c, ns, n, r: c.claim_any(n, S),
    "claim_any-filter": lambda c, ns, n, r: c.claim_any(n, "n2", units=["b", S]),
    "claim_any-complete-unit": lambda c, ns, n, r: c.claim_any(n, "n1", complete=[(S, 1)]),
    "update_progress-node": lambda c, ns, n, r: c.update_progress(n, S, "b", 0.5),
    "update_progress-unit": lambda c, ns, n, r: c.update_progress(n, "n1", S, 0.5),
    "complete_unit-node": lambda c, ns, n, r: c.complete_unit(n, S, "b"),
    "complete_unit-unit": lambda c, ns, n, r: c.complete_unit(n, "n1", S),
    "fail_unit-node": lambda c, ns, n, r: c.fail_unit(n, S, "b", "boom"),
    "fail_unit-unit": lambda c, ns, n, r: c.fail_unit(n, "n1", S, "boom"),
    "fail_unit-error": lambda c, ns, n, r: c.fail_unit(n, "n1", "a", "disk " + S),
    "heartbeat-node": lambda c, ns, n, r: c.heartbeat(S, [(n, "a", 1)]),
    "heartbeat-unit": lambda c, ns, n, r: c.heartbeat("n1", [(n, "a", 1), (n, S, 1)]),
    "heartbeat-ref": lambda c, ns, n, r: c.heartbeat("n1", [(TaskRef(ns, S, 1), "a", 1)]),
    "release-node": lambda c, ns, n, r: c.release(S, [(n, "a", 1)]),
    "release-unit": lambda c, ns, n, r: c.release("n1", [(n, "a", 1), (n, S, 1)]),
    "release-ref": lambda c, ns, n, r: c.release("n1", [(TaskRef(S, "named", 1), "a", 1)]),
    "record_prepare_ack-node": lambda c, ns, n, r: c.record_prepare_ack(n, S),
    "record_prepare_ack-error": lambda c, ns, n, r: c.record_prepare_ack(n, "n1", False, S),
    "record_post_ack-node": lambda c, ns, n, r: c.record_post_ack(n, S),
    "record_post_ack-error": lambda c, ns, n, r: c.record_post_ack(n, "n1", False, S),
    "finalize_task-ref": lambda c, ns, n, r: c.finalize_task(TaskRef(ns, S, n.version)),
    "cancel_task-ref": lambda c, ns, n, r: c.cancel_task(TaskRef(ns, S, n.version)),
    "cleanup_task-ref": lambda c, ns, n, r: c.cleanup_task(TaskRef(S, "named", n.version)),
}


@pytest.mark.parametrize("call", list(SURROGATE_CALLS.values()), ids=list(SURROGATE_CALLS))
def test_a_lone_surrogate_in_any_text_argument_is_invalid_and_writes_nothing(
    client: dtaskq.Client,
    namespace: str,
    live: tuple[TaskRef, TaskRef],
    rejects: Rejects,
    call: Call,
) -> None:
    error = rejects(InvalidArgument, call, client, namespace, *live)
    assert isinstance(error, ValueError) and error.message


async def test_the_async_client_rejects_lone_surrogates(
    aclient: dtaskq.AsyncClient, namespace: str
) -> None:
    ref = await aclient.add_task(namespace, "t", units=["a"])
    for attempt in (
        aclient.add_task(namespace, S, units=["a"]),
        aclient.claim_any(ref, S),
        aclient.claim_any(ref, "n1", units=[S]),
        aclient.complete_and_claim(TaskRef(namespace, S, 1), "n1", [(0, 1)]),
        aclient.task_view(namespace, "t", S),
        aclient.task_summaries(namespace, S),
        aclient.fail_unit(ref, "n1", "a", S),
    ):
        with pytest.raises(InvalidArgument):
            await attempt
    task = await aclient.get_task(namespace, "t")
    assert task is not None and task.units["a"].attempt == 0


@pytest.mark.parametrize(
    ("task_id", "options"),
    [
        (S, {"units": ["a"]}),
        ("t", {"units": ["a", S + "b"]}),
        ("t", {"units": [UnitSpec("a", group=S)]}),
        ("t", {"units": ["a"], "conflict_keys": [S]}),
        (S, {"unit_count": 3}),
    ],
    ids=["task-id", "unit-id", "group", "conflict-key", "range-task-id"],
)
def test_a_rejected_first_task_does_not_register_its_namespace(
    client: dtaskq.Client, r: redis.Redis, prefix: str, task_id: str, options: dict[str, Any]
) -> None:
    """The namespace registry is written only once a task is valid: the registry key
    ``<prefix>:namespaces`` stays absent."""
    with pytest.raises(InvalidArgument):
        client.add_task("fresh", task_id, **options)
    assert r.exists(namespaces_key(prefix)) == 0
    assert client.partitions("fresh") == []
    assert r.exists(namespaces_key(prefix)) == 0


@pytest.mark.parametrize(
    "partitions",
    [
        -1,
        0,
        "x",
        b"x",
        ["a"],
        ("ns", 2),
        {"ns": 0},
        {"ns": -2},
        {"ns": "2"},
        {"ns": True},
        {"ns": 2.0},
        {"ns": 1025},
        {S: 2},
        {"bad ns": 2},
        {7: 2},
    ],
)
def test_bad_partition_options_are_invalid(server_url: str, partitions: Any) -> None:
    with redis.Redis.from_url(server_url) as connection, pytest.raises(InvalidArgument):
        dtaskq.Client(connection, partitions=partitions)
    with pytest.raises(InvalidArgument):
        dtaskq.AsyncClient.from_url(server_url, partitions=partitions)


def test_a_surrogate_in_the_prefix_is_invalid(server_url: str) -> None:
    with pytest.raises(InvalidArgument):
        dtaskq.Client.from_url(server_url, prefix="dtq" + S)


# --- UnitNotReady says when to come back ---


def test_unit_not_ready_carries_retry_after_ms(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    """Every call that raises UnitNotReady for a unit backing off after a retryable failure
    (rule 14) fills ``retry_after_ms``: a positive int no longer than the backoff."""
    backoff = 60_000
    named = client.add_task(
        namespace, "named", units=["a", "b"], max_attempts=3, retry_backoff_ms=backoff
    )
    token = client.claim_unit(named, "n1", "a")
    assert client.fail_unit(named, "n1", "a", "flaky", token, retryable=True) is True
    spans = client.add_task(
        namespace, "spans", unit_count=1, max_attempts=3, retry_backoff_ms=backoff
    )
    unit = client.claim_first(spans, "n1")
    assert isinstance(unit, dtaskq.ClaimedUnit)
    assert client.fail_unit(spans, "n1", unit, "flaky", unit.token, retryable=True) is True
    calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = [
        (client.claim_unit, (named, "n2", "a")),
        (client.claim_unit, (named, "n1", "a")),
        (client.update_progress, (named, "n2", "a", 0.5)),
        (client.complete_unit, (named, "n2", "a")),
        (client.fail_unit, (named, "n2", "a", "again")),
        (client.claim_unit, (spans, "n2", 0)),
        (client.update_progress, (spans, "n2", 0, 0.5)),
        (client.complete_unit, (spans, "n2", 0)),
        (client.claim_first, (spans, "n2")),
        (client.claim, (spans, "n2", 5)),
    ]
    for fn, args in calls:
        error = rejects(UnitNotReady, fn, *args)
        assert isinstance(error, UnitNotReady)
        wait = error.retry_after_ms
        assert isinstance(wait, int) and 0 < wait <= backoff, (fn.__name__, wait)
        assert (error.task_id, error.node) == (args[0].task_id, args[1])


# --- failures of the server and refused permissions ---


class CountingRedis(redis.Redis):
    """A real connection that notes every function call it sends, tried or retried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("FCALL", "FCALL_RO", "FUNCTION"):
            by_name = {f.server_name: name for name, f in LIBRARY.functions.items()}
            self.sent.append((str(args[0]), by_name.get(args[1], str(args[1]))))
        return super().execute_command(*args, **options)


@pytest.fixture
def counting(server_url: str, prefix: str) -> Iterator[dtaskq.Client]:
    with dtaskq.Client(CountingRedis.from_url(server_url), prefix=prefix) as c:
        yield c
        for key in c.redis.scan_iter(match=f"*{prefix}*", count=1000):
            c.redis.delete(key)


def test_a_lua_runtime_error_is_a_server_error(
    single_server: str, counting: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    """What the functions do not expect (a key of the wrong type, a corrupt record) surfaces
    as ServerError with the server's text, once: it is not retried."""
    client = counting
    ref = client.add_task(namespace, "wrongtype", units=["a", "b"])
    keys = dict(
        zip(TASK_KEY_KINDS, Partition(prefix, namespace, 0).task_keys("wrongtype"), strict=True)
    )
    r.delete(keys["units"])
    r.set(keys["units"], "not a hash")
    corrupt = client.add_task(namespace, "corrupt", units=["a", "b"])
    corrupt_units = Partition(prefix, namespace, 0).task_keys("corrupt")[1]
    r.hset(corrupt_units, "a", msgpack.packb(1))  # a number where a unit record belongs
    cases: list[tuple[str, Callable[[], object], str]] = [
        ("complete_unit", lambda: client.complete_unit(ref, "n1", "a"), "WRONGTYPE"),
        ("claim_any", lambda: client.claim_any(ref, "n1"), "WRONGTYPE"),
        ("get_task", lambda: client.get_task(namespace, "wrongtype"), "WRONGTYPE"),
        ("claim_unit", lambda: client.claim_unit(corrupt, "n1", "a"), "attempt to index"),
        ("complete_unit", lambda: client.complete_unit(corrupt, "n1", "a"), "attempt to index"),
    ]
    for function, call, text in cases:
        client.redis.sent.clear()  # type: ignore[attr-defined]
        with pytest.raises(dtaskq.DtaskqError) as caught:
            call()
        assert type(caught.value) is dtaskq.ServerError, caught.value
        assert text in str(caught.value) and function in str(caught.value)
        sent = client.redis.sent  # type: ignore[attr-defined]
        assert [name for _, name in sent] == [function], "a server error is not retried"


@contextlib.contextmanager
def acl_user(r: redis.Redis, name: str, **rules: Any) -> Iterator[None]:
    r.acl_setuser(name, enabled=True, passwords=["+secret"], **rules)
    try:
        yield
    finally:
        r.acl_deluser(name)


@pytest.mark.parametrize(
    ("rules", "refused"),
    [
        ({"keys": ["*"], "commands": ["+@all", "-fcall"]}, "FCALL"),
        ({"keys": ["*"], "commands": ["+@all", "-fcall_ro"]}, "FCALL_RO"),
        ({"keys": ["elsewhere:*"], "commands": ["+@all"]}, "FCALL"),
    ],
    ids=["no-fcall", "no-fcall_ro", "other-keys-only"],
)
def test_a_permission_the_user_lacks_is_a_configuration_error_at_once(
    single_server: str,
    server_url: str,
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    namespace: str,
    rules: dict[str, Any],
    refused: str,
) -> None:
    """A user whose ACL forbids a command or a key a call needs gets ConfigurationError, not
    a raw redis error and not TransientError, after one try: a refusal is not retried."""
    ref = client.add_task(namespace, "t", units=["a"])  # by a user who may
    user = "app-" + prefix
    url = server_url.replace("redis://", f"redis://{user}:secret@", 1)
    with (
        acl_user(r, user, **rules),
        dtaskq.Client(CountingRedis.from_url(url), prefix=prefix, retry_attempts=5) as app,
    ):
        attempts: list[Callable[[], object]] = [
            lambda: app.get_task(namespace, "t"),
            lambda: app.claim_any(ref, "n1"),
            lambda: app.add_task(namespace, "other", units=["a"]),
        ]
        for attempt in attempts:
            app.redis.sent.clear()  # type: ignore[attr-defined]
            try:
                attempt()
            except dtaskq.DtaskqError as error:
                assert type(error) is dtaskq.ConfigurationError, error
                assert "permission" in str(error)
                verbs = [verb for verb, _ in app.redis.sent]  # type: ignore[attr-defined]
                assert verbs.count(refused) == 1, verbs
                assert "FUNCTION" not in verbs
            else:
                assert refused == "FCALL_RO", "only reads need FCALL_RO"
    # Writes need FCALL only: a user refused FCALL changed nothing.
    task = client.get_task(namespace, "t")
    assert task is not None
    assert task.units["a"].attempt == (1 if refused == "FCALL_RO" else 0)
    assert (client.get_task(namespace, "other") is None) is (refused == "FCALL")


# --- key names: the functions derive what dtaskq/keys.py formats ---


def keys_library(name: str) -> str:
    """A library of the key helpers of lua/include, as the functions use them, and one
    function that answers the keys they derive for a task."""
    parts = [(LUA / "include" / f"{n}.lua").read_text() for n in ("args", "records", "keys")]
    parts.append((LUA / "include" / "ranges.lua").read_text())
    return (
        f"#!lua name={name}\n"
        + "\n".join(parts)
        + f"""
redis.register_function{{ function_name = '{name}_derive', flags = {{ 'no-writes' }},
  callback = function(keys, args)
    local task_id, from = args[1], args[2]
    local derived
    if from == 'task' then
      derived = task_keys(keys, task_id)
    else
      derived = partition_task_keys(keys[1], from, task_id)
    end
    local flat = {{}}
    for kind, key in pairs(derived) do
      flat[#flat + 1] = kind
      flat[#flat + 1] = key
    end
    flat[#flat + 1] = 'bitmap 7'
    flat[#flat + 1] = bitmap_key(derived.done, task_id, 7)
    return flat
  end }}
"""
    )


def kind_of(key: str, base: str, task_id: str) -> str:
    """The kind of a key of partition ``base``: what comes between the base and the task id
    (or the end, for the partition's shared keys)."""
    assert key.startswith(base), key
    rest = key[len(base) :]
    return rest[: -len(task_id) - 1] if rest.endswith(":" + task_id) else rest


@pytest.mark.parametrize("task_id", ["t", "a:b", "task:x", "50%", "é-ü", "leases", "tasks"])
def test_the_functions_derive_exactly_the_keys_of_keys_py(
    r: redis.Redis, prefix: str, namespace: str, task_id: str
) -> None:
    """From the task hash (task functions), the lease index (heartbeat, release, sweep) and
    the task index (summaries), lua/include/keys.lua derives the keys Partition.task_keys
    formats, one per kind of TASK_KEY_KINDS, and ranges.lua the bitmap names."""
    name = "dtqkeys_" + prefix
    r.function_load(keys_library(name))
    try:
        part = Partition(prefix, namespace, 3)
        expected = part.task_keys(task_id)
        assert len(set(expected)) == len(TASK_KEY_KINDS)
        assert [kind_of(k, part.base, task_id) for k in expected] == list(TASK_KEY_KINDS)
        for from_key, suffix in (
            (part.task_key(task_id), "task"),
            (part.lease_index_key(), "leases"),
            (part.index_key(), "tasks"),
        ):
            flat = r.fcall_ro(f"{name}_derive", 1, from_key, task_id, suffix)
            derived = {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}
            bitmap = derived.pop("bitmap 7")
            assert bitmap == part.bitmap_key(task_id, 7)
            assert sorted(derived.values()) == sorted(expected)
            kinds = {kind_of(key, part.base, task_id) for key in derived.values()}
            assert kinds == set(TASK_KEY_KINDS)
        assert expected[TASK_KEY_KINDS.index("leases")] == part.lease_index_key()
        assert expected[TASK_KEY_KINDS.index("tasks")] == part.index_key()
        assert expected[TASK_KEY_KINDS.index("events")] == part.events_key()
        assert expected[TASK_KEY_KINDS.index("task")] == part.task_key(task_id)
    finally:
        r.function_delete(name)


class KeyWatchingRedis(redis.Redis):
    """A real connection that, after every function call it sends, notes every key under
    ``watch`` (a SCAN pattern), so that keys that live only for a while are seen too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = ""
        self.seen: set[str] = set()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)
        if args[0] in ("FCALL", "FCALL_RO") and self.watch:
            self.seen.update(k.decode() for k in self.scan_iter(match=self.watch, count=1000))
        return reply


def id_in(partition: int, stem: str) -> str:
    """A task id that a 4-partition namespace keeps in ``partition``."""
    i = 0
    while zlib.crc32(f"{stem}{i}".encode()) % 4 != partition:
        i += 1
    return f"{stem}{i}"


def test_every_key_the_operations_write_is_one_keys_py_names(
    single_server: str, server_url: str, prefix: str, namespace: str
) -> None:
    """Every operation, on named and range tasks, sticky, with barriers, failures, conflict
    keys, cancel, cleanup and the sweep, in a 4-partition namespace (and a 1-partition one for
    conflict keys): every key ever seen under the prefix is the registry or a key of
    Partition(prefix, ns, p) for the partition p of its task, and every kind is used."""
    single = namespace + "-one"
    connection = KeyWatchingRedis.from_url(server_url)
    connection.watch = f"*{prefix}*"
    client = dtaskq.Client(connection, prefix=prefix, partitions={namespace: 4})
    used: dict[str, set[str]] = {namespace: set(), single: set()}

    def add(ns: str, task_id: str, **options: Any) -> TaskRef:
        used[ns].add(task_id)
        return client.add_task(ns, task_id, **options)

    try:
        # Named units, an ack barrier, a retried unit, progress, heartbeat.
        named = add(
            namespace,
            id_in(0, "named-"),
            units=["a", "b", "c", "d"],
            ack_barrier=True,
            max_attempts=2,
            retry_backoff_ms=0,
        )
        first = client.claim_any(named, "n1", max_units=2)
        client.update_progress(named, "n1", "a", 0.5, first.units[0].token)
        client.heartbeat("n1", [(named, "a", first.units[0].token)])
        token = client.claim_unit(named, "n2", "c")
        assert client.fail_unit(named, "n2", "c", "flaky", token, retryable=True) is True
        ready = task_of(client, named).units["c"].ready_at
        assert ready is not None
        wait_until(lambda: server_time(connection) >= ready, "c may be claimed again")
        retried = client.claim_any(named, "n2", units=["c"])
        assert retried.units == ["c"]
        rest = client.claim_any(named, "n1", complete=[(u, u.token) for u in first.units])
        assert rest.units == ["d"]
        client.complete_unit(named, "n1", "d", rest.units[0].token)
        client.complete_unit(named, "n2", "c", retried.units[0].token)
        for node in ("n1", "n2"):
            client.record_post_ack(named, node)
        assert client.finalize_task(named) is True

        # Sticky named units, a prepare barrier.
        sticky = add(
            namespace,
            id_in(1, "sticky-"),
            units=["a", "b"],
            on_lease_expiry="sticky",
            prepare_barrier=True,
        )
        held = client.claim_any(sticky, "n1", max_units=2)
        assert client.release("n1", [(sticky, "a", held.units[0].token)]) == [True]
        again = client.claim_any(sticky, "n1")
        assert again.units == ["a"]
        done = [(again.units[0], again.units[0].token), (held.units[1], held.units[1].token)]
        assert client.claim_any(sticky, "n1", complete=done).done
        client.record_prepare_ack(sticky, "n1")
        client.record_post_ack(sticky, "n1")
        assert client.finalize_task(sticky) is True

        # Range units over two completion bitmaps, returned units, a cancel.
        spans = add(namespace, id_in(2, "spans-"), unit_count=2**20 + 4, workers_hint=2)
        claimed = client.complete_and_claim(spans, "n1", [], max_units=3)
        pairs = [(u, u.token) for u in claimed.units[:2]]
        client.complete_and_claim(spans, "n1", pairs, max_units=2, last=claimed.units[-1])
        third = claimed.units[2]
        assert client.release("n1", [(spans, third, third.token)]) == [True]
        back = client.claim_first(spans, "n2")
        assert back == third and isinstance(back, dtaskq.ClaimedUnit) and back.token == 2
        client.complete_unit(spans, "n3", 2**20 + 1)
        client.cancel_task(spans)

        # Sticky range units kept for their node, then a final failure.
        kept = add(namespace, id_in(3, "kept-"), unit_count=3, on_lease_expiry="sticky")
        all_three = client.claim(kept, "n1", max_units=3)
        assert isinstance(all_three, list)
        assert client.release("n1", [(kept, all_three[1], all_three[1].token)]) == [True]
        assert client.claim_next(kept, "n1", 0) == 1
        assert client.fail_unit(kept, "n1", 0, "boom", all_three[0].token) is False

        # Cleanup and the sweep of tasks past their TTL; conflict keys in one partition.
        gone = add(namespace, id_in(1, "gone-"), units=["a"], completed_ttl_ms=0)
        client.cancel_task(gone)
        guarded = add(single, "guarded", units=["a"], conflict_keys=["k"], completed_ttl_ms=0)
        client.cancel_task(guarded)
        finished_at = task_of(client, guarded).finished_at
        assert finished_at is not None
        # Cleanup and the sweep need the age to exceed the TTL: one whole millisecond.
        past = finished_at + timedelta(milliseconds=1)
        wait_until(lambda: server_time(connection) >= past, "the TTL of 0 ms passed")
        client.cleanup_task(guarded)
        swept = sum(client.sweep(namespace, p).deleted for p in range(4))
        assert swept == 1  # "gone"

        # Reads.
        for ns in (namespace, single):
            for task_id in used[ns]:
                client.get_task(ns, task_id)
                client.task_view(ns, task_id, "n1")
            client.task_summaries(ns, "n1")
        client.list_tasks()
        client.ping()
    finally:
        connection.watch = ""
        client.close()

    r = redis.Redis.from_url(server_url)
    try:
        registry = {k.decode(): int(v) for k, v in r.hgetall(namespaces_key(prefix)).items()}
        for key in r.scan_iter(match=f"*{prefix}*", count=1000):
            r.delete(key)
    finally:
        r.close()
    assert registry == {namespace: 4, single: 1}
    allowed = {namespaces_key(prefix)}
    kinds: dict[str, str] = {}
    for ns, count in registry.items():
        for p in range(count):
            part = Partition(prefix, ns, p)
            for shared in (part.lease_index_key(), part.index_key(), part.events_key()):
                allowed.add(shared)
        for task_id in used[ns]:
            part = Partition(prefix, ns, zlib.crc32(task_id.encode()) % count)
            for kind, key in zip(TASK_KEY_KINDS, part.task_keys(task_id), strict=True):
                allowed.add(key)
                kinds[key] = kind
            for k in range(2):
                allowed.add(part.bitmap_key(task_id, k))
                kinds[part.bitmap_key(task_id, k)] = f"done{k}"
    strays = sorted(connection.seen - allowed)
    assert strays == [], "keys that keys.py does not name (or names for another partition)"
    assert {kinds[k] for k in connection.seen if k in kinds} == {*TASK_KEY_KINDS, "done0", "done1"}
    partitions_used = {k.split("}", 1)[0] for k in connection.seen if namespace + ":" in k}
    assert len(partitions_used) == 4


# --- a server restart under a live client ---


def free_port() -> int:
    """A loopback port nothing listens on, at most 55535."""
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class RestartableServer:
    """A server without persistence on a fixed port, which can be stopped and started again
    on that same port: what a restart of a cache-only Redis looks like to its clients."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def raw(self) -> redis.Redis:
        # Without redis-py's own retries, which would keep reconnecting to a stopped server.
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(self.binary),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                *("--daemonize", "no", "--protected-mode", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process

        def answers() -> bool:
            assert process.poll() is None, "the server exited during start-up"
            with self.raw() as r:
                try:
                    return r.info("server")["process_id"] == process.pid
                except redis.ConnectionError:
                    return False

        wait_until(answers, "the server answers", timeout=15)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(redis.RedisError), self.raw() as r:
            r.shutdown(nosave=True)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
        with self.raw() as r:
            assert r.dbsize() == 0 and r.function_list() == []


@pytest.fixture(params=find_server_binaries(), ids=lambda b: b[0])
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(request.param[1], tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_client_keeps_working_across_a_server_restart(
    restartable: RestartableServer, namespace: str
) -> None:
    """The server comes back empty on the same port: the same client object reconnects, loads
    its library again and goes on; what the old server held is gone."""
    with dtaskq.Client.from_url(restartable.url, prefix="dtq") as client:
        before = client.add_task(namespace, "before", units=["a", "b"])
        assert client.claim_any(before, "n1").units == ["a"]
        restartable.restart()
        after = client.add_task(namespace, "after", units=["a", "b"])
        claimed = client.claim_any(after, "n1", max_units=2)
        assert [(str(u), u.token) for u in claimed.units] == [("a", 1), ("b", 1)]
        done = client.claim_any(after, "n1", complete=[(u, u.token) for u in claimed.units])
        assert done.done and done.rejected == {}
        task = client.get_task(namespace, "after")
        assert task is not None and task.status is TaskStatus.FINISHED
        assert client.get_task(namespace, "before") is None
        with pytest.raises(dtaskq.TaskDoesNotExist):
            client.claim_any(TaskRef(namespace, "before", after.version + 1), "n1")
        assert client.ping() == LIBRARY.name
    with restartable.raw() as r:
        assert len(r.function_list(library=LIBRARY.name)) == 1


async def test_an_async_client_keeps_working_across_a_server_restart(
    restartable: RestartableServer, namespace: str
) -> None:
    async with dtaskq.AsyncClient.from_url(restartable.url, prefix="dtq") as client:
        before = await client.add_task(namespace, "before", unit_count=4)
        assert await client.claim(before, "n1", max_units=2) != dtaskq.DONE
        restartable.restart()
        after = await client.add_task(namespace, "after", unit_count=4)
        claimed = await client.complete_and_claim(after, "n1", [], max_units=4)
        assert [(int(u), u.token) for u in claimed.units] == [(n, 1) for n in range(4)]
        result = await client.complete_and_claim(
            after, "n1", [(u, u.token) for u in claimed.units], max_units=4
        )
        assert result.done and result.rejected == {}
        task = await client.get_task(namespace, "after")
        assert task is not None and task.status is TaskStatus.FINISHED
        assert await client.get_task(namespace, "before") is None


def test_tasks_added_after_a_restart_are_found_by_every_client(
    restartable: RestartableServer, namespace: str
) -> None:
    with dtaskq.Client.from_url(restartable.url, prefix="dtq") as client:
        client.add_task(namespace, "before", units=["a"])
        restartable.restart()
        client.add_task(namespace, "after", units=["a"])
        listed = client.list_tasks()
        with dtaskq.Client.from_url(restartable.url, prefix="dtq") as other:
            seen = other.get_task(namespace, "after")
    assert [t.task_id for t in listed.get(namespace, [])] == ["after"]
    assert seen is not None and seen.status is TaskStatus.STARTED


@pytest.mark.parametrize(
    ("ref", "node"),
    [
        (TaskRef("ns", ["t"], 1), "n1"),  # type: ignore[arg-type]
        (TaskRef("ns", "t", 1), ["n1"]),
        (TaskRef("ns", "t", "1"), "n1"),  # type: ignore[arg-type]
    ],
    ids=["task-id-list", "node-list", "version-text"],
)
def test_unhashable_or_mistyped_refs_and_nodes_are_invalid(
    client: dtaskq.Client, ref: TaskRef, node: object
) -> None:
    """The check a worker's reports make once per (task, node) must not trip over values it
    cannot look up (a list is unhashable): they are InvalidArgument like any other."""
    for call in (
        lambda: client.complete_unit(ref, node, "u"),  # type: ignore[arg-type]
        lambda: client.claim_any(ref, node),  # type: ignore[arg-type]
        lambda: client.complete_and_claim(ref, node, [], 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgument):
            call()
