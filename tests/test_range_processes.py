"""Range tasks claimed by real OS processes: every unit is completed exactly once under
concurrency, and the units of a SIGKILLed claimer come back before any new split."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import msgpack
import redis
from support import completed_units

import dtaskq
from dtaskq import TaskRef, TaskStatus, UnitStatus
from dtaskq.keys import Partition

UNITS = 5_000
WORKERS_HINT = 4
BATCH = 50
PROCESSES = 5  # the last one claims in batches of BATCH

# The SIGKILL scenario: four regions of 100 units. The test finishes regions 0 and 1 itself,
# the killed node holds 200..203 and continues [204, 300), and region 3 is still fresh.
CRASH_UNITS = 400
KILLED_HOLDS = [200, 201, 202, 203]
CONTINUATION = 204
FRESH_REGION = 300
LEASE_MS = 1000
SURVIVORS = 3
STATUS, ATTEMPT = 0, 4  # slots of a unit record (lua/include/records.lua), 0-based
COMPLETED = 2  # the stored status value of a completed unit


def claim_and_complete(
    server_url: str, prefix: str, ref: TaskRef, node: str, batch: int, start: Any, results: Any
) -> None:
    """Runs in a child process: claims (one unit at a time with claim_first/claim_next, or
    ``batch`` at a time with claim) and completes each unit with its token until DONE;
    reports the (unit, token) pairs it completed, in order."""
    completed: list[tuple[int, int]] = []
    with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
        client.get_task(ref.namespace, ref.task_id)  # connect before the race
        start.wait()
        last: dtaskq.ClaimedUnit | None = None
        while True:
            if batch > 1:
                claimed = client.claim(ref, node, max_units=batch, last=last)
            else:
                one = (
                    client.claim_first(ref, node)
                    if last is None
                    else client.claim_next(ref, node, last)
                )
                claimed = one if isinstance(one, dtaskq.Done) else [one]
            if isinstance(claimed, dtaskq.Done):
                break
            for unit in claimed:
                client.complete_unit(ref, node, unit, unit.token)
                completed.append((int(unit), unit.token))
            last = claimed[-1]
    results.put((node, completed))


def test_processes_claiming_a_range_complete_every_unit_exactly_once(
    client: dtaskq.Client, r: redis.Redis, server_url: str, prefix: str, namespace: str
) -> None:
    """Five processes (one claiming 50 at a time) drain 5 000 units: each completed exactly once."""
    ref = client.add_task(namespace, "race", unit_count=UNITS, workers_hint=WORKERS_HINT)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=claim_and_complete,
            args=(
                server_url,
                prefix,
                ref,
                f"n{i}",
                BATCH if i == PROCESSES - 1 else 1,
                start,
                results,
            ),
        )
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        by_node = dict(results.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.exitcode is None:
                p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    completer: dict[int, str] = {}
    for node, completed in by_node.items():
        assert completed, f"{node} completed nothing"
        for unit, token in completed:
            assert unit not in completer, f"unit {unit} completed by {completer[unit]} and {node}"
            assert token == 1, f"unit {unit} was claimed again (token {token})"
            completer[unit] = node
    assert sorted(completer) == list(range(UNITS))

    task = client.get_task(namespace, "race")
    assert task is not None and task.status is TaskStatus.FINISHED
    assert task.counts[UnitStatus.COMPLETED] == UNITS
    assert task.units == {}
    task_key = Partition(prefix, namespace, 0).task_keys("race")[0]
    assert r.hget(task_key, "units_completed") == str(UNITS).encode()
    assert len(completed_units(r, prefix, ref)) == UNITS


# --- a claimer killed while it holds units ---


def log_keys(prefix: str) -> tuple[str, str]:
    """Redis lists under the test's prefix: every claim ("node unit token") in the order the
    claims ran, and every completed unit."""
    return f"{prefix}:claims", f"{prefix}:completed"


def claim_then_hang(server_url: str, prefix: str, ref: TaskRef, node: str, held: Any) -> None:
    """Runs in a child process: claims four units (claim_first, claim_next, then claim of
    two), reports them, and blocks until it is killed."""
    with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
        first = client.claim_first(ref, node)
        assert isinstance(first, dtaskq.ClaimedUnit)
        second = client.claim_next(ref, node, first)
        assert isinstance(second, dtaskq.ClaimedUnit)
        rest = client.claim(ref, node, max_units=2, last=second)
        assert isinstance(rest, list)
        held.put([(int(u), u.token) for u in (first, second, *rest)])
        while True:
            time.sleep(60)


def claim_in_turn(
    server_url: str, prefix: str, ref: TaskRef, node: str, turn: Any, start: Any
) -> None:
    """Runs in a child process: claims one unit at a time until DONE, holding ``turn`` (a lock
    shared by the survivors) around each claim and its log entry, so that the claims log is
    in the order the claims ran; completes each unit with its token and logs it."""
    claims_key, completed_key = log_keys(prefix)
    with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
        client.get_task(ref.namespace, ref.task_id)  # connect before the lease runs out
        start.wait()
        last: dtaskq.ClaimedUnit | None = None
        while True:
            with turn:
                unit = (
                    client.claim_first(ref, node)
                    if last is None
                    else client.claim_next(ref, node, last)
                )
                if isinstance(unit, dtaskq.Done):
                    break
                client.redis.rpush(claims_key, f"{node} {unit} {unit.token}")
            client.complete_unit(ref, node, unit, unit.token)
            client.redis.rpush(completed_key, int(unit))
            last = unit


def test_units_of_a_killed_claimer_come_back_before_any_split(
    client: dtaskq.Client, r: redis.Redis, server_url: str, prefix: str, namespace: str
) -> None:
    """A SIGKILLed node's units come back with token 2, then its continuation, before any split."""
    claims_key, completed_key = log_keys(prefix)
    ref = client.add_task(
        namespace, "crash", unit_count=CRASH_UNITS, workers_hint=4, lease_ms=LEASE_MS
    )
    # Regions 0 and 1 are done by this process, one claim and completion at a time, so that
    # none of its leases is left to expire.
    last: dtaskq.ClaimedUnit | None = None
    for _ in range(200):
        unit = client.claim_first(ref, "p") if last is None else client.claim_next(ref, "p", last)
        assert isinstance(unit, dtaskq.ClaimedUnit) and unit.token == 1
        client.complete_unit(ref, "p", unit, unit.token)
        r.rpush(completed_key, int(unit))
        last = unit
    assert last == 199

    ctx = multiprocessing.get_context("spawn")
    held, turn, start = ctx.Queue(), ctx.Lock(), ctx.Event()
    killed = ctx.Process(target=claim_then_hang, args=(server_url, prefix, ref, "k", held))
    survivors = [
        ctx.Process(target=claim_in_turn, args=(server_url, prefix, ref, f"s{i}", turn, start))
        for i in range(SURVIVORS)
    ]
    keys = Partition(prefix, namespace, 0).task_keys("crash")
    nodes_key, spans_key, units_key = keys[3], keys[9], keys[1]
    try:
        killed.start()
        for p in survivors:
            p.start()
        assert held.get(timeout=30) == [(u, 1) for u in KILLED_HOLDS]
        # The killed node holds 200..203 and continues the rest of region 2; region 3 is fresh.
        assert r.zrange(spans_key, 0, -1) == [
            f"{CONTINUATION} 300 k".encode(),
            f"{FRESH_REGION} 400 ".encode(),
        ]
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        killed.join(timeout=30)
        assert killed.exitcode == -signal.SIGKILL
        assert r.hget(nodes_key, "k") == b"4"  # it died holding its units
        time.sleep(LEASE_MS / 1000 + 0.2)  # until the killed node's leases have run out
        start.set()
        for p in survivors:
            p.join(timeout=60)
    finally:
        for p in [killed, *survivors]:
            if p.exitcode is None:
                p.kill()
                p.join()
    assert [p.exitcode for p in survivors] == [0] * SURVIVORS

    claims: list[tuple[str, int, int]] = []
    for entry in r.lrange(claims_key, 0, -1):
        node, claimed, token = entry.decode().split()
        claims.append((node, int(claimed), int(token)))
    # Nothing is handed out before the killed node's units, which come back under token 2, then
    # the first unit of its orphaned continuation.
    first = [(u, 2) for u in KILLED_HOLDS] + [(CONTINUATION, 1)]
    assert [(u, t) for _, u, t in claims[:5]] == first
    assert all(t == 1 for _, _, t in claims[5:])
    # Every claim that neither continues the claimer's previous unit nor takes one of those
    # (or the fresh region) is a split; none comes before all of them were handed out.
    expected = {*KILLED_HOLDS, CONTINUATION, FRESH_REGION}
    previous: dict[str, int] = {}
    splits = []
    for i, (node, n, _) in enumerate(claims):
        if n not in expected and previous.get(node) != n - 1:
            splits.append(i)
        previous[node] = n
    positions = {n: i for i, (_, n, _) in enumerate(claims)}
    assert expected <= positions.keys()
    if splits:
        assert max(positions[n] for n in expected) < splits[0], claims[: splits[0] + 1]

    completed = sorted(int(u) for u in r.lrange(completed_key, 0, -1))
    assert completed == list(range(CRASH_UNITS))  # each unit once
    task = client.get_task(namespace, "crash")
    assert task is not None and task.status is TaskStatus.FINISHED
    assert task.counts[UnitStatus.COMPLETED] == CRASH_UNITS
    assert len(completed_units(r, prefix, ref)) == CRASH_UNITS
    assert r.hget(nodes_key, "k") is None
    # Only the units claimed twice keep a record: complete, under attempt 2.
    records = {int(u): msgpack.unpackb(raw) for u, raw in r.hgetall(units_key).items()}
    assert sorted(records) == KILLED_HOLDS
    assert {(rec[STATUS], rec[ATTEMPT]) for rec in records.values()} == {(COMPLETED, 2)}
