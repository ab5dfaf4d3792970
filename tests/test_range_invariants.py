"""Random interleavings of range claims and reports never break the span storage: every unit
is in exactly one place (a span, a record, or the completion bitmap), and the indexes agree."""

from __future__ import annotations

from itertools import count
from typing import Any

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import completed_units

import dtaskq
from dtaskq.keys import Partition

N = 12
NODES = ("n0", "n1", "n2")
FRESH = 2**53
PENDING, IN_PROGRESS, COMPLETED, FAILED = range(4)

operation = st.tuples(
    st.sampled_from(
        [
            "first",
            "next",
            "batch",
            "claim",
            "progress",
            "complete",
            "fail",
            "retry",
            "beat",
            "sweep",
        ]
    ),
    st.sampled_from(NODES),
    st.integers(min_value=0, max_value=N - 1),
    st.booleans(),  # report with the node's token for the unit, or with none
)

_task_ids = count()


def check_storage(
    r: redis.Redis, prefix: str, ref: dtaskq.TaskRef, completer: dict[int, str]
) -> None:
    """Every unit in exactly one place, and the indexes in step with the records."""
    keys = Partition(prefix, ref.namespace, 0).task_keys(ref.task_id)
    task_key, units_key, _, nodes_key, leases_key = keys[:5]
    spans_key, order_key, returned_key, kept_key = keys[9:13]

    place: dict[int, str] = {}

    def put(unit: int, where: str) -> None:
        assert 0 <= unit < N, f"unit {unit} out of range"
        assert unit not in place, f"unit {unit} is both {place[unit]} and {where}"
        place[unit] = where

    order = {int(m): s for m, s in r.zrange(order_key, 0, -1, withscores=True)}
    starts = set()
    for member in r.zrange(spans_key, 0, -1):
        start, end, node = member.decode().split(" ")
        s, e = int(start), int(end)
        assert s < e, f"empty span {member!r}"
        starts.add(s)
        assert order[s] == (s - FRESH if node == "" else e - s), f"order of {member!r}"
        for unit in range(s, e):
            put(unit, "span")
    assert set(order) == starts, "order and spans index different spans"

    records = {int(k): msgpack.unpackb(v) for k, v in r.hgetall(units_key).items()}
    for unit, record in records.items():
        put(unit, f"record {record[0]}")
    done = completed_units(r, prefix, ref)
    for unit in done:
        if unit in records:
            assert records[unit][0] == COMPLETED and records[unit][4] > 1
        else:
            put(unit, "bitmap")
    assert {u for u, rec in records.items() if rec[0] == COMPLETED} <= done
    assert int(r.hget(task_key, "units_completed") or 0) == len(done)
    assert sorted(place) == list(range(N)), "a unit is nowhere"

    waiting = {u: rec for u, rec in records.items() if rec[0] == PENDING}
    returned = {int(m) for m in r.zrange(returned_key, 0, -1)}
    kept = {m.decode() for m in r.zrange(kept_key, 0, -1)}
    assert returned == {u for u, rec in waiting.items() if rec[2] == ""}
    assert kept == {f"{rec[2]}\n{u}" for u, rec in waiting.items() if rec[2] != ""}

    status = r.hget(task_key, "status")
    if status == b"STARTED":
        members = (m.decode().split("\n") for m in r.zrange(leases_key, 0, -1))
        leased = {int(unit) for task_id, unit in members if task_id == ref.task_id}
        assert leased == {u for u, rec in records.items() if rec[0] == IN_PROGRESS}

    owned: dict[str, int] = {}
    for record in records.values():
        if record[2]:
            owned[record[2]] = owned.get(record[2], 0) + 1
    for unit in done - set(records):
        owned[completer[unit]] = owned.get(completer[unit], 0) + 1
    stored = {k.decode(): int(v) for k, v in r.hgetall(nodes_key).items()}
    assert stored == owned, "per-node ownership counts drifted from the units"


def _apply(
    client: dtaskq.Client,
    ref: dtaskq.TaskRef,
    step: tuple[str, str, int, bool],
    tokens: dict[tuple[str, int], int],
    last: dict[str, int],
    completer: dict[int, str],
) -> None:
    kind, node, unit, use_token = step
    token = tokens.get((node, unit)) if use_token else None
    claimed: Any = None
    if kind == "first":
        claimed = client.claim(ref, node)
    elif kind == "next":
        claimed = client.claim(ref, node, last=last.get(node, unit))
    elif kind == "batch":
        claimed = client.claim(ref, node, max_units=3, last=last.get(node))
    elif kind == "claim":
        tokens[(node, unit)] = client.claim_unit(ref, node, unit)
    elif kind == "progress":
        got = client.update_progress(ref, node, unit, 0.5, token)
        if got is not None:
            tokens[(node, unit)] = got
    elif kind == "complete":
        completer.setdefault(unit, node)  # a repeated completion changes nothing
        tokens[(node, unit)] = client.complete_unit(ref, node, unit, token)
    elif kind in ("fail", "retry"):
        client.fail_unit(ref, node, unit, "boom", token, retryable=kind == "retry")
    elif kind == "beat":
        client.heartbeat(node, [(ref, unit, tokens.get((node, unit), 0))])
    else:
        client.sweep(ref.namespace)
    if isinstance(claimed, list):
        for c in claimed:
            tokens[(node, int(c))] = c.token
        last[node] = int(claimed[-1])


@pytest.mark.parametrize(
    "options",
    [{"lease_ms": 30_000}, {"lease_ms": 1}, {"lease_ms": 1, "on_lease_expiry": "sticky"}],
    ids=["lease-held", "lease-expiring", "sticky-expiring"],
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(operation, min_size=1, max_size=30))
def test_any_interleaving_keeps_every_unit_in_one_place(
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    namespace: str,
    options: dict[str, Any],
    steps: list[tuple[str, str, int, bool]],
) -> None:
    """With leases that hold, expire at once, or expire and stay with their node: claims of
    every kind, reports, heartbeats and sweeps in any order."""
    ref = client.add_task(
        namespace,
        f"t{next(_task_ids)}",
        unit_count=N,
        workers_hint=2,
        max_attempts=3,
        retry_backoff_ms=0,
        **options,
    )
    tokens: dict[tuple[str, int], int] = {}
    last: dict[str, int] = {}
    completer: dict[int, str] = {}
    for step in steps:
        before = dict(completer)
        try:
            _apply(client, ref, step, tokens, last, completer)
        except (dtaskq.PermanentRejection, dtaskq.UnitNotReady):
            completer.clear()
            completer.update(before)
        check_storage(r, prefix, ref, completer)
