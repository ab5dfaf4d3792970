"""The function library and the boundary of its calls (docs/scripts.md, docs/errors.md):
files, key counts, error codes and their exceptions, single-slot calls, and servers that lose
or lack the library."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import dtaskq
from dtaskq import errors
from dtaskq.job_ops import Report
from dtaskq.keys import Partition
from dtaskq.scripts import LIBRARY, build, header

State = Callable[[], dict[bytes, object]]

LUA = Path(__file__).resolve().parent.parent / "lua"
LUA_FILES = sorted(LUA.glob("*.lua"))
INCLUDES = sorted((LUA / "include").glob("*.lua"))
ALL_LUA_TEXT = {p: p.read_text() for p in [*LUA_FILES, *INCLUDES]}

CODE_IN_TEXT = re.compile(r"\bDTQ_([A-Z][A-Z0-9_]*)")
CODE_IN_FAIL = re.compile(r"\bfail\(\s*'([A-Z][A-Z0-9_]*)'")
KEYS_IN_HEADER = re.compile(r"KEYS\[(\d+)(?:\s*\.\.\s*(\d+))?\]")
KEYS_IN_BODY = re.compile(r"KEYS\[(\d+)\]")


def header_and_body(text: str) -> tuple[str, str]:
    head = header(text)
    return head, text[len(head) :]


# --- the library ---------------------------------------------------------------------------


def test_every_lua_file_is_a_function_of_the_library() -> None:
    assert LUA_FILES, f"no operations found in {LUA}"
    assert sorted(LIBRARY.functions) == [p.stem for p in LUA_FILES]
    assert LIBRARY.source.startswith(f"#!lua name={LIBRARY.name}\n")
    for fn in LIBRARY.functions.values():
        assert fn.server_name == f"{LIBRARY.name}_{fn.name}"
        assert f"function_name = '{fn.server_name}'" in LIBRARY.source


@pytest.mark.parametrize("path", LUA_FILES, ids=[p.stem for p in LUA_FILES])
def test_library_entry_matches_its_file(path: Path) -> None:
    text = path.read_text()
    head, body = header_and_body(text)
    entry = LIBRARY.functions[path.stem]
    numbers = [int(n) for m in KEYS_IN_HEADER.findall(head) for n in m if n]
    assert entry.num_keys == max(numbers, default=0)
    assert entry.num_keys <= 1, "a call passes one key and derives the rest (docs/keys.md)"
    # The file itself never reads a key its header does not declare.
    assert all(int(n) <= entry.num_keys for n in KEYS_IN_BODY.findall(body))
    assert f"local function op_{path.stem}(KEYS, ARGV)\n{text}\nend\n" in LIBRARY.source
    assert entry.read_only == ("Flags: no-writes" in head)
    assert "Returns:" in head and "Errors:" in head


def test_every_include_is_defined_once_before_its_users() -> None:
    source = LIBRARY.source
    positions = {p.stem: source.index(f"-- lua/include/{p.name}\n") for p in INCLUDES}
    for path in INCLUDES:
        assert source.count(f"-- lua/include/{path.name}\n") == 1
        for line in re.findall(r"^-- @requires (.*)$", path.read_text(), re.MULTILINE):
            for needed in line.split():
                assert positions[needed] < positions[path.stem], (path.stem, needed)
    first_op = min(source.index(f"-- lua/{p.name}\n") for p in LUA_FILES)
    assert max(positions.values()) < first_op


def test_the_name_carries_a_hash_of_the_contents(tmp_path: Path) -> None:
    copy = tmp_path / "lua"
    (copy / "include").mkdir(parents=True)
    for path in [*LUA_FILES, *INCLUDES]:
        (copy / path.relative_to(LUA)).write_text(path.read_text())
    assert build(copy).name == LIBRARY.name
    (copy / "ping.lua").write_text((LUA / "ping.lua").read_text() + "-- changed\n")
    changed = build(copy)
    assert changed.name != LIBRARY.name
    assert all(
        changed.functions[n].server_name != f.server_name for n, f in LIBRARY.functions.items()
    )


def test_the_server_loads_the_library(single_server: str, r: redis.Redis) -> None:
    assert r.function_load(LIBRARY.source, replace=True) == LIBRARY.name.encode()
    listed = r.function_list(library=LIBRARY.name)
    assert len(listed) == 1
    assert r.fcall_ro(LIBRARY.functions["ping"].server_name, 0) == b"PONG"


@pytest.mark.parametrize("path", LUA_FILES, ids=[p.stem for p in LUA_FILES])
def test_codes_a_script_raises_are_listed_in_its_header(path: Path) -> None:
    header, body = header_and_body(path.read_text())
    listed = set(CODE_IN_TEXT.findall(header))
    raised = set(CODE_IN_FAIL.findall(body))
    assert raised <= listed, f"{path.name} raises {raised - listed} without listing them"


def test_every_error_code_in_lua_has_an_exception_class() -> None:
    codes: set[str] = set()
    for text in ALL_LUA_TEXT.values():
        codes |= set(CODE_IN_TEXT.findall(text)) | set(CODE_IN_FAIL.findall(text))
    assert "INVALID_ARGUMENT" in codes and "TASK_EXISTS" in codes  # the regexes do match
    assert codes <= errors.ERROR_CODES, f"codes without a class: {codes - errors.ERROR_CODES}"
    # ... and every class with a code is raised by some script.
    assert codes >= errors.ERROR_CODES, f"classes no script uses: {errors.ERROR_CODES - codes}"
    for code in codes:
        error = errors.from_script_error(f"DTQ_{code} something happened", {})
        assert error is not None and error.code == code
        assert type(error) is not errors.PermanentRejection
        assert type(error).code == code
        assert getattr(dtaskq, type(error).__name__) is type(error)  # exported


def test_an_unknown_code_is_a_permanent_rejection() -> None:
    error = errors.from_script_error("DTQ_FOO the frobnicator is stuck", {"task_id": "t"})
    assert type(error) is errors.PermanentRejection
    assert error.code == "FOO"
    assert error.message == "the frobnicator is stuck"
    assert error.task_id == "t"
    assert errors.from_script_error("DTQ_BAR", {}) is not None


def test_replies_without_a_code_are_not_mapped() -> None:
    assert errors.from_script_error("ERR unknown command", {}) is None
    assert errors.from_script_error("WRONGTYPE Operation against a key", {}) is None
    assert errors.from_script_error("dtq_task_exists lower case", {}) is None


@pytest.mark.parametrize(
    "suffix",
    [
        " script: 0f5a6b0c9d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a, on @user_script:42.",
        " script: on @user_script:7.",
        "",
    ],
    ids=["redis", "valkey", "none"],
)
def test_the_servers_location_suffix_is_stripped(suffix: str) -> None:
    error = errors.from_script_error(f"DTQ_TASK_EXISTS task t1 is STARTED{suffix}", {})
    assert isinstance(error, dtaskq.TaskExists)
    assert error.message == "task t1 is STARTED"
    assert str(error) == "task t1 is STARTED"


def test_a_real_error_carries_its_fields_and_a_clean_message(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str, state: State
) -> None:
    ref = client.add_task(namespace, "task-1", units=["unit-a"])
    client.claim_unit(ref, "node-1", "unit-a")
    # What the server itself replies, for comparison.
    key = Partition(prefix, namespace, 0).task_key("task-1")
    claim = LIBRARY.functions["claim_unit"].server_name
    with pytest.raises(redis.ResponseError) as raw:
        r.fcall(claim, 1, key, "task-1", str(ref.version), "unit-a", "n2")
    assert str(raw.value).startswith("DTQ_UNIT_WRONG_NODE unit unit-a is owned by node node-1")

    before = state()
    with pytest.raises(dtaskq.UnitWrongNode) as caught:
        client.complete_unit(ref, "node-2", "unit-a")
    assert state() == before
    error = caught.value
    assert isinstance(error, dtaskq.PermanentRejection)
    assert error.code == "UNIT_WRONG_NODE"
    assert (error.namespace, error.task_id, error.version) == (namespace, "task-1", ref.version)
    assert (error.unit, error.node) == ("unit-a", "node-2")
    assert error.message == "unit unit-a is owned by node node-1"
    assert str(error) == error.message
    assert "script" not in str(error) and "@user_" not in str(error)

    client.cancel_task(ref)
    with pytest.raises(dtaskq.TaskNotRunning) as not_running:
        client.update_progress(ref, "node-1", "unit-a", 0.5)
    assert not_running.value.message == "task task-1 is CANCELLED"
    assert (not_running.value.unit, not_running.value.node) == ("unit-a", "node-1")


def test_acks_missing_lists_the_nodes(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c"], ack_barrier=True)
    for unit, node in (("a", "n1"), ("b", "n2"), ("c", "n3")):
        client.complete_unit(ref, node, unit)
    client.record_post_ack(ref, "n2")
    with pytest.raises(dtaskq.AcksMissing) as caught:
        client.finalize_task(ref)
    assert sorted(caught.value.nodes) == ["n1", "n3"]
    assert caught.value.task_id == "t" and caught.value.version == ref.version


# --- every call touches one slot ----------------------------------------------------------


class RecordingRedis(redis.Redis):
    """A real connection that also notes every function call it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str, list[str]]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("FCALL", "FCALL_RO"):
            numkeys = int(args[2])
            keys = [k.decode() if isinstance(k, bytes) else str(k) for k in args[3 : 3 + numkeys]]
            self.calls.append((args[0], args[1], keys))
        return super().execute_command(*args, **options)

    def function_names(self) -> list[str]:
        """The operation of each recorded call."""
        by_name = {f.server_name: name for name, f in LIBRARY.functions.items()}
        return [by_name[fn] for _, fn, _ in self.calls]


@pytest.fixture
def recording(server_url: str) -> Iterator[RecordingRedis]:
    connection = RecordingRedis.from_url(server_url)
    yield connection
    connection.close()


def use_every_job_function(client: dtaskq.Client, queue: str) -> None:
    """Jobs of a queue of several partitions, through every job function."""
    client.configure_queue(queue, aging_ms=100)
    jobs = client.enqueue_many(
        queue, [dtaskq.JobSpec("h", (i,), priority=i % 3) for i in range(12)]
    )
    later = client.enqueue(queue, "h", delay=600, idempotency_key="later")
    assert client.get_job(queue, later.id) is not None
    with pytest.raises(dtaskq.JobTimeout):
        jobs[0].result(timeout=0)
    assert later.cancel()
    parts = client.queue_partitions(queue)
    claimed = {part: client.claim_jobs(part, "n1", 100).jobs for part in parts}
    assert sum(map(len, claimed.values())) == 12
    for part, mine in claimed.items():
        claims = [(job.id, job.token) for job in mine]
        assert client.heartbeat_jobs(part, "n1", claims) == [0] * len(mine)
        assert client.release_jobs(part, "n1", claims) == [True] * len(mine)
        again = client.claim_jobs(part, "n1", 100).jobs
        reports = [Report(job.id, job.token, "F", b"no") for job in again[:1]]
        reports += [Report(job.id, job.token, "c", b"\xc0") for job in again[1:]]
        assert all(client.claim_jobs(part, "n1", 0, reports).settled)
        assert client.sweep_jobs(part, sweeper="s1", lock_ms=1000).reclaimed == 0
    statuses = [job.status() for job in jobs]
    assert set(statuses) == {dtaskq.JobStatus.COMPLETED, dtaskq.JobStatus.FAILED}
    dead = client.dead_jobs(queue)
    assert len(dead) == statuses.count(dtaskq.JobStatus.FAILED)
    assert client.requeue_dead(queue, [dead[0].id]) == 1
    assert client.purge_dead(queue) == len(dead) - 1


def test_every_script_call_touches_one_slot(
    single_server: str, recording: RecordingRedis, prefix: str, namespace: str
) -> None:
    single = namespace + "-single"
    queue = namespace + "-jobs"
    client = dtaskq.Client(recording, prefix=prefix, partitions={namespace: 4, queue: 4})

    # Tasks spread over the four partitions, in every completion mode.
    modes: list[dict[str, Any]] = [{}, {"ack_barrier": True}, {"prepare_barrier": True}]
    refs = [
        client.add_task(namespace, f"task-{i}", units=["a", "b"], **modes[i % 3]) for i in range(9)
    ]
    guarded = client.add_task(single, "guarded", units=["a"], conflict_keys=["k"])
    with pytest.raises(dtaskq.TaskConflict):
        client.add_task(single, "rival", units=["a"], conflict_keys=["k"])
    assert client.get_task(namespace, "task-0") is not None
    assert client.get_task(namespace, "missing") is None

    tokens = {ref: client.claim_unit(ref, "n1", "a") for ref in refs}
    claims = [(ref, "a", token) for ref, token in tokens.items()]
    assert client.heartbeat("n1", claims) == [dtaskq.ClaimStatus.HELD] * len(refs)
    # Given back and claimed again, under the next token.
    assert client.release("n1", claims) == [True] * len(refs)
    tokens = {ref: client.claim_unit(ref, "n1", "a") for ref in refs}
    assert set(tokens.values()) == {2}
    for ref, token in tokens.items():
        client.update_progress(ref, "n1", "a", 0.5, token)
        client.complete_unit(ref, "n1", "a", token)
        client.complete_unit(ref, "n2", "b")
    for ref in refs:
        client.record_prepare_ack(ref, "n1")
        client.record_prepare_ack(ref, "n2")
        client.record_post_ack(ref, "n1")
        client.record_post_ack(ref, "n2")
        client.finalize_task(ref)

    spans = client.add_task(namespace, "spans", unit_count=10, workers_hint=2)
    claimed = client.claim(spans, "n1", max_units=10)
    assert isinstance(claimed, list) and sorted(claimed) == list(range(10))
    for unit in claimed:
        client.complete_unit(spans, "n1", unit, unit.token)
    assert client.claim_first(spans, "n1") is dtaskq.DONE

    # Failure, retry, cancel, cleanup, and a lease the sweeper reclaims.
    flaky = client.add_task(single, "flaky", units=["a", "b"], max_attempts=2, lease_ms=50)
    assert client.fail_unit(flaky, "n1", "a", "try again", retryable=True) is True
    client.claim_unit(flaky, "n1", "b")
    short = client.add_task(namespace, "short", units=["a"], lease_ms=50, completed_ttl_ms=0)
    client.claim_unit(short, "n3", "a")
    client.fail_unit(guarded, "n1", "a", "boom")
    gone = client.add_task(single, "gone", units=["a"], completed_ttl_ms=0)
    client.cancel_task(gone)
    time.sleep(0.1)
    client.cleanup_task(gone)
    reclaimed = sum(client.sweep(namespace, p).reclaimed for p in range(4))
    assert reclaimed == 1
    assert client.sweep(single).reclaimed == 1
    client.cancel_task(short)
    time.sleep(0.005)
    deleted = sum(client.sweep(namespace, p).deleted for p in range(4))
    assert deleted == 1  # "short": ttl 0
    listing = client.list_tasks()
    assert client.ping() == LIBRARY.name
    anyone = client.add_task(single, "anyone", units=["a", "b"])
    first = client.claim_any(anyone, "n1")
    assert first.units == ["a"]
    second = client.claim_any(anyone, "n1", complete=[("a", first.units[0].token)])
    assert second.units == ["b"] and not second.rejected
    view = client.task_view(single, "anyone", "n1")
    assert view is not None and view.groups_left == {"": 1}
    assert client.node_units(anyone, "n1") == ["a", "b"]
    assert client.announce_node("n1", "process-1", 1_000) is None
    assert {s.task_id for s in client.task_summaries(single, "n1")} >= {"anyone", "flaky"}
    assert len(listing[namespace]) == 10
    assert all(t.status is dtaskq.TaskStatus.FINISHED for t in listing[namespace])
    assert {t.task_id for t in listing[single]} == {"guarded", "flaky"}  # listed before "anyone"

    use_every_job_function(client, queue)

    names = recording.function_names()
    assert set(names) == set(LIBRARY.functions), "the scenario should use every function"
    for (_, fn, keys), name in zip(recording.calls, names, strict=True):
        assert len(keys) == LIBRARY.functions[name].num_keys, fn
        assert len({key_slot(k.encode()) for k in keys}) <= 1
    task_slots = {
        key_slot(keys[0].encode())
        for name, (_, _, keys) in zip(recording.function_names(), recording.calls, strict=True)
        if name == "claim_unit"
    }
    assert len(task_slots) > 1, "tasks of a 4-partition namespace should use several slots"
    job_slots = {
        key_slot(keys[0].encode())
        for name, (_, _, keys) in zip(names, recording.calls, strict=True)
        if name == "claim_jobs"
    }
    assert len(job_slots) > 1, "jobs of a 4-partition queue should use several slots"
    # One heartbeat call per partition holding a claim.
    partitions = {zlib.crc32(ref.task_id.encode()) % 4 for ref in refs}
    assert len(partitions) > 1
    assert recording.function_names().count("heartbeat") == len(partitions)
    assert recording.function_names().count("release") == len(partitions)


# --- a server that loses, or never had, the library ---------------------------------------


def test_calls_survive_a_function_flush(
    single_server: str, recording: RecordingRedis, r: redis.Redis, prefix: str, namespace: str
) -> None:
    client = dtaskq.Client(recording, prefix=prefix)
    first = client.add_task(namespace, "first", units=["a", "b"])
    token = client.claim_unit(first, "n1", "a")

    r.function_flush()
    assert r.function_list(library=LIBRARY.name) == []

    assert client.complete_unit(first, "n1", "a", token) == token
    r.function_flush()
    second = client.add_task(namespace, "second", units=["x"])
    assert second.version == first.version + 1  # the version counter moved exactly once
    assert client.complete_unit(first, "n2", "b") == 1
    client.claim_unit(second, "n1", "x")
    client.complete_unit(second, "n1", "x")

    task = client.get_task(namespace, "first")
    assert task is not None and task.status is dtaskq.TaskStatus.FINISHED
    assert task.units["a"].node == "n1" and task.units["b"].node == "n2"
    assert [u.attempt for u in task.units.values()] == [1, 1]
    second_task = client.get_task(namespace, "second")
    assert second_task is not None and second_task.status is dtaskq.TaskStatus.FINISHED
    assert len(r.function_list(library=LIBRARY.name)) == 1


async def test_async_calls_survive_a_function_flush(
    aclient: dtaskq.AsyncClient, r: redis.Redis, namespace: str
) -> None:
    ref = await aclient.add_task(namespace, "t", units=["a"])
    r.function_flush()
    token = await aclient.claim_unit(ref, "n1", "a")
    r.function_flush()
    assert await aclient.complete_unit(ref, "n1", "a", token) == token
    task = await aclient.get_task(namespace, "t")
    assert task is not None and task.status is dtaskq.TaskStatus.FINISHED


def test_two_versions_of_the_library_live_side_by_side(
    single_server: str, tmp_path: Path, client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """A rolling upgrade: an older dtaskq keeps calling its own functions while a newer one
    loads its library; neither replaces the other's."""
    copy = tmp_path / "lua"
    (copy / "include").mkdir(parents=True)
    for path in [*LUA_FILES, *INCLUDES]:
        (copy / path.relative_to(LUA)).write_text(path.read_text())
    (copy / "ping.lua").write_text((LUA / "ping.lua").read_text().replace("'PONG'", "'NEWER'"))
    newer = build(copy)
    ref = client.add_task(namespace, "t", units=["a"])
    r.function_load(newer.source)
    assert r.fcall_ro(newer.functions["ping"].server_name, 0) == b"NEWER"
    assert client.ping() == LIBRARY.name
    assert client.claim_unit(ref, "n1", "a") == 1
    libraries = {entry[1] for entry in r.function_list()}  # [b"library_name", name, ...]
    assert {LIBRARY.name.encode(), newer.name.encode()} <= libraries
    r.function_delete(newer.name)


def test_an_application_user_without_function_load(
    single_server: str, server_url: str, r: redis.Redis, prefix: str, namespace: str
) -> None:
    """Where the application may not run FUNCTION LOAD, it fails with a clear error until an
    administrator loads the library; then FCALL and FCALL_RO are all it needs."""
    user = "app-" + prefix
    r.acl_setuser(
        user,
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@all", "-function"],
    )
    try:
        r.function_flush()
        url = server_url.replace("redis://", f"redis://{user}:secret@", 1)
        with dtaskq.Client.from_url(url, prefix=prefix) as app:
            with pytest.raises(dtaskq.ConfigurationError) as refused:
                app.add_task(namespace, "t", units=["a"])
            assert "dtaskq library load" in str(refused.value)
            assert list(r.scan_iter(match=f"*{prefix}*", count=1000)) == []
            with dtaskq.Client.from_url(server_url, prefix=prefix) as admin:
                assert admin.load_library() == LIBRARY.name
            ref = app.add_task(namespace, "t", units=["a"])
            assert app.claim_unit(ref, "n1", "a") == 1
            assert app.get_task(namespace, "t") is not None
    finally:
        r.acl_deluser(user)
