"""Range tasks (docs/ranges.md): the acceptance vectors of span splitting, batched claims, input
checks, O(W) creation of huge tasks, the span/bitmap storage, re-adding, and the async client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from support import Rejects, Unchanged, bitmaps

import dtaskq
from dtaskq import DONE, ClaimedUnit, InvalidArgument, TaskDoesNotExist, TaskRef, UnitStatus
from dtaskq.keys import TASK_KEY_KINDS, Partition

PENDING, IN_PROGRESS, COMPLETED, FAILED = (
    UnitStatus.PENDING,
    UnitStatus.IN_PROGRESS,
    UnitStatus.COMPLETED,
    UnitStatus.FAILED,
)


def task_keys(prefix: str, ref: TaskRef) -> dict[str, str]:
    """The keys of a range task (one partition), by kind."""
    part = Partition(prefix, ref.namespace, 0)
    return dict(zip(TASK_KEY_KINDS, part.task_keys(ref.task_id), strict=True))


def spans(r: redis.Redis, prefix: str, ref: TaskRef) -> list[str]:
    """The task's unclaimed spans, "<start> <end> <node>", by start."""
    return [m.decode() for m in r.zrange(task_keys(prefix, ref)["spans"], 0, -1)]


def drain(client: dtaskq.Client, ref: TaskRef, node: str) -> list[int]:
    """One node's claim_first, then claim_next from its last unit until DONE."""
    got: list[int] = []
    unit = client.claim_first(ref, node)
    while unit is not DONE:
        assert isinstance(unit, ClaimedUnit)
        got.append(unit)
        unit = client.claim_next(ref, node, unit)
    return got


# --- the acceptance vectors of docs/ranges.md ---


def test_one_region_is_handed_out_in_order(client: dtaskq.Client, namespace: str) -> None:
    """(N=10, W=1): one node's claim_first then claim_next give 0..9 in order, then DONE."""
    ref = client.add_task(namespace, "t", unit_count=10, workers_hint=1)
    assert drain(client, ref, "n1") == list(range(10))


@pytest.mark.parametrize(
    ("n", "w", "starts"),
    [(100, 4, [0, 25, 50, 75]), (100, 3, [0, 34, 67])],
    ids=["100-4", "100-3"],
)
def test_first_claims_take_the_region_starts(
    client: dtaskq.Client, namespace: str, n: int, w: int, starts: list[int]
) -> None:
    """(100, 4) -> 0, 25, 50, 75 and (100, 3) -> 0, 34, 67: the first N mod W are longer."""
    ref = client.add_task(namespace, "t", unit_count=n, workers_hint=w)
    assert [client.claim_first(ref, f"n{i}") for i in range(w)] == starts


def test_more_workers_than_units(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged, r: redis.Redis, prefix: str
) -> None:
    """(5, 10): claim_first gives 0..4, then DONE without writing anything."""
    ref = client.add_task(namespace, "t", unit_count=5, workers_hint=10)
    assert [client.claim_first(ref, f"n{i}") for i in range(5)] == [0, 1, 2, 3, 4]
    assert spans(r, prefix, ref) == []
    assert unchanged(client.claim_first, ref, "n5") is DONE


def test_zero_units_are_rejected_at_creation(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    """(0, 4): InvalidArgument and no task (rule 1)."""
    rejects(InvalidArgument, client.add_task, namespace, "t", unit_count=0, workers_hint=4)
    assert client.get_task(namespace, "t") is None


@pytest.mark.parametrize("w", [0, -7])
def test_a_workers_hint_below_one_means_one_region(
    client: dtaskq.Client, namespace: str, w: int, r: redis.Redis, prefix: str
) -> None:
    """(10, 0) is not DONE: W <= 0 means a single region 0..9."""
    ref = client.add_task(namespace, "t", unit_count=10, workers_hint=w)
    assert spans(r, prefix, ref) == ["0 10 "]
    assert drain(client, ref, "n1") == list(range(10))


def test_round_robin_shares_the_units_fairly(client: dtaskq.Client, namespace: str) -> None:
    """Four nodes round-robin over (100, 4): 25 +- 2 units each, every unit exactly once."""
    ref = client.add_task(namespace, "t", unit_count=100, workers_hint=4)
    got: dict[str, list[ClaimedUnit]] = {f"n{i}": [] for i in range(4)}
    active = set(got)
    while active:
        for node in sorted(active):
            mine = got[node]
            unit = client.claim_next(ref, node, mine[-1]) if mine else client.claim_first(ref, node)
            if unit is DONE:
                active.discard(node)
            else:
                assert isinstance(unit, ClaimedUnit) and unit.token == 1
                mine.append(unit)
    assert all(23 <= len(units) <= 27 for units in got.values()), got
    assert sorted(u for units in got.values() for u in units) == list(range(100))
    for node, units in got.items():
        for unit in units:
            client.complete_unit(ref, node, unit, unit.token)
    task = client.get_task(namespace, "t")
    assert task is not None and task.status is dtaskq.TaskStatus.FINISHED
    assert task.counts[COMPLETED] == 100 and task.units == {}


def test_many_workers_on_few_units(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    """(10, 64): 64 claim_first give 0..9 then 54 DONE; claim_next after those is DONE."""
    ref = client.add_task(namespace, "t", unit_count=10, workers_hint=64)
    got = [client.claim_first(ref, f"n{i}") for i in range(64)]
    assert got[:10] == list(range(10)) and got[10:] == [DONE] * 54
    for i in range(10):
        assert unchanged(client.claim_next, ref, f"n{i}", i) is DONE


def test_a_node_with_no_next_unit_steals_half_of_the_largest_span(
    client: dtaskq.Client, namespace: str, r: redis.Redis, prefix: str
) -> None:
    """(100, 2): A holds 0..49, B only 50; A's claim_next(49) takes 75, the middle of 51..99."""
    ref = client.add_task(namespace, "t", unit_count=100, workers_hint=2)
    unit = client.claim_first(ref, "A")
    for _ in range(49):
        unit = client.claim_next(ref, "A", unit)
    assert unit == 49
    assert client.claim_first(ref, "B") == 50
    stolen = client.claim_next(ref, "A", 49)
    assert stolen == 75 and isinstance(stolen, ClaimedUnit) and stolen.token == 1
    assert spans(r, prefix, ref) == ["51 75 B", "76 100 A"]
    assert client.claim_next(ref, "A", 75) == 76 and client.claim_next(ref, "B", 50) == 51


# --- batched claims ---


def test_a_batch_is_contiguous_within_a_span(client: dtaskq.Client, namespace: str) -> None:
    """claim(max_units=k) takes k consecutive units of a span, each with token 1."""
    ref = client.add_task(namespace, "t", unit_count=100, workers_hint=4)
    first = client.claim(ref, "n1", max_units=10)
    assert first == list(range(10)) and all(isinstance(u, ClaimedUnit) for u in first)
    assert [u.token for u in first] == [1] * 10
    assert client.claim(ref, "n1", max_units=7, last=first[-1]) == list(range(10, 17))
    assert client.claim(ref, "n2", max_units=1) == [25]
    assert client.claim(ref, "n2", max_units=24, last=25) == list(range(26, 50))


def test_a_batch_equals_successive_claim_next(client: dtaskq.Client, namespace: str) -> None:
    """Across span ends and steals, batches hand out what claim_next would, in that order."""
    twins = [client.add_task(namespace, t, unit_count=30, workers_hint=3) for t in "ab"]
    for ref in twins:
        assert client.claim_first(ref, "B") == 0 and client.claim_first(ref, "C") == 10
    batch, step = twins
    batched: list[ClaimedUnit] = []
    while True:
        got = client.claim(batch, "A", max_units=4, last=batched[-1] if batched else None)
        if got is DONE:
            break
        assert isinstance(got, list) and 1 <= len(got) <= 4
        batched += got
    stepped = drain(client, step, "A")
    assert batched == stepped and len(stepped) == 28
    assert [u.token for u in batched] == [1] * 28
    assert sorted([0, 10, *stepped]) == list(range(30))


def test_a_batch_stops_at_the_last_unit(client: dtaskq.Client, namespace: str) -> None:
    """A batch larger than what is left returns the rest; the next claim is DONE."""
    ref = client.add_task(namespace, "t", unit_count=5, workers_hint=1)
    assert client.claim(ref, "n1", max_units=3) == [0, 1, 2]
    assert client.claim(ref, "n1", max_units=3, last=2) == [3, 4]
    assert client.claim(ref, "n1", max_units=3, last=4) is DONE
    assert client.claim(ref, "n2", max_units=1000) is DONE


# --- bad input: rejected without a write ---

BAD_ADD_TASK: dict[str, dict[str, Any]] = {
    "unit-count-0": {"unit_count": 0},
    "unit-count-negative": {"unit_count": -1},
    "unit-count-2**53+1": {"unit_count": 2**53 + 1},
    "unit-count-float": {"unit_count": 10.0},
    "unit-count-str": {"unit_count": "10"},
    "unit-count-bool": {"unit_count": True},
    "workers-hint-100001": {"unit_count": 10, "workers_hint": 100_001},
    "workers-hint-float": {"unit_count": 10, "workers_hint": 2.0},
    "workers-hint-str": {"unit_count": 10, "workers_hint": "2"},
    "workers-hint-none": {"unit_count": 10, "workers_hint": None},
    "units-and-unit-count": {"units": ["a"], "unit_count": 1},
    "neither": {},
}

# claim(ref, "n", **kwargs) on a task of 10 units; last >= 10 passes the client, not the script.
BAD_CLAIM: dict[str, dict[str, Any]] = {
    "last-negative": {"last": -1},
    "last-N": {"last": 10},
    "last-far-beyond-N": {"last": 2**53 - 1, "max_units": 5},
    "last-2**53": {"last": 2**53},
    "last-float": {"last": 1.0},
    "last-str": {"last": "1"},
    "last-bool": {"last": True},
    "max-units-0": {"max_units": 0},
    "max-units-1001": {"max_units": 1001},
    "max-units-float": {"max_units": 2.0},
    "max-units-str": {"max_units": "2"},
    "max-units-bool": {"max_units": True},
    "max-units-none": {"max_units": None},
}


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        *(("add_task", kw) for kw in BAD_ADD_TASK.values()),
        *(("claim", kw) for kw in BAD_CLAIM.values()),
    ],
    ids=[*BAD_ADD_TASK, *BAD_CLAIM],
)
def test_bad_range_input_is_rejected(
    client: dtaskq.Client, namespace: str, rejects: Rejects, call: str, kwargs: dict[str, Any]
) -> None:
    """Bad counts, hints, last or batch sizes: InvalidArgument, nothing written."""
    ref = client.add_task(namespace, "t", unit_count=10, workers_hint=2)
    client.claim(ref, "n", max_units=3)
    if call == "add_task":
        rejects(InvalidArgument, client.add_task, namespace, "x", **kwargs)
    else:
        rejects(InvalidArgument, client.claim, ref, "n", **kwargs)
    assert client.claim_next(ref, "n", 2) == 3  # the task is still usable


@pytest.mark.parametrize("claim", ["first", "next", "batch"])
def test_range_claims_on_named_units_are_rejected(
    client: dtaskq.Client, namespace: str, rejects: Rejects, claim: str
) -> None:
    """claim_first, claim_next and claim on a task of named units: InvalidArgument."""
    ref = client.add_task(namespace, "t", units=["0", "1"])
    calls: dict[str, Callable[[], object]] = {
        "first": lambda: client.claim_first(ref, "n"),
        "next": lambda: client.claim_next(ref, "n", 0),
        "batch": lambda: client.claim(ref, "n", max_units=2),
    }
    error = rejects(InvalidArgument, calls[claim])
    assert "named units" in str(error)


# --- cost: creation is O(W), whatever N ---


def test_ten_million_units_take_o_w_memory(
    client: dtaskq.Client, r: redis.Redis, namespace: str, prefix: str
) -> None:
    """N = 10 000 000, W = 8: a few hundred bytes of storage, 8 spans."""
    warm = client.add_task(namespace, "warm", unit_count=16, workers_hint=8)
    client.claim_first(warm, "n")  # loads the scripts, creates the partition's shared keys
    before = r.info("memory")["used_memory"]
    ref = client.add_task(namespace, "big", unit_count=10_000_000, workers_hint=8)
    assert r.info("memory")["used_memory"] - before < 64 * 1024
    assert spans(r, prefix, ref) == [f"{i * 1_250_000} {(i + 1) * 1_250_000} " for i in range(8)]
    task = client.get_task(namespace, "big")
    assert task is not None and task.unit_count == 10_000_000
    assert task.counts[PENDING] == 10_000_000


def test_two_to_the_53_units(
    client: dtaskq.Client, r: redis.Redis, namespace: str, prefix: str
) -> None:
    """N = 2**53 works: units near the top are claimed and completed exactly, and the
    completion bitmap stays one small string."""
    n = 2**53
    ref = client.add_task(namespace, "huge", unit_count=n, workers_hint=8)
    assert client.claim_first(ref, "a") == 0
    top = client.claim_next(ref, "b", n - 2)
    assert top == n - 1 and isinstance(top, ClaimedUnit)
    client.complete_unit(ref, "b", top, top.token)
    assert client.claim_next(ref, "b", n - 1) == n // 8  # past the end: the next fresh region
    assert client.claim_unit(ref, "c", n - 3) == 1
    keys = task_keys(prefix, ref)
    assert r.scard(keys["done"]) == 1
    (bitmap,) = bitmaps(r, prefix, ref).values()
    assert r.strlen(bitmap) <= 128 * 1024 and r.bitcount(bitmap) == 1
    assert int(r.hget(keys["task"], "units_completed")) == 1
    task = client.get_task(namespace, "huge")
    assert task is not None and task.unit_count == n
    assert sorted(task.units) == sorted(str(u) for u in (0, n // 8, n - 3))
    assert task.counts == {PENDING: n - 4, IN_PROGRESS: 3, COMPLETED: 1, FAILED: 0}


# --- storage ---


def test_storage_keeps_records_only_for_units_that_need_them(
    client: dtaskq.Client, r: redis.Redis, namespace: str, prefix: str
) -> None:
    """Bitmaps count the completed units; records are kept for units in flight, waiting,
    failed, or completed under a second claim; get_task reports exactly those."""
    ref = client.add_task(
        namespace, "t", unit_count=20, workers_hint=2, max_attempts=3, retry_backoff_ms=0
    )
    keys = task_keys(prefix, ref)
    a = client.claim(ref, "A", max_units=5)
    assert isinstance(a, list)
    b = [client.claim_first(ref, "B")]
    b.append(client.claim_next(ref, "B", b[0]))
    assert (a, b) == ([0, 1, 2, 3, 4], [10, 11])
    for unit in a[:3]:
        client.complete_unit(ref, "A", unit, unit.token)
    client.complete_unit(ref, "B", 10, 1)
    client.fail_unit(ref, "A", 3, "flaky", 1, retryable=True)

    def check(completed: int, records: set[str], units: dict[str, UnitStatus]) -> None:
        assert sum(r.bitcount(k) for k in bitmaps(r, prefix, ref).values()) == completed
        assert int(r.hget(keys["task"], "units_completed")) == completed
        assert {k.decode() for k in r.hkeys(keys["units"])} == records
        task = client.get_task(namespace, "t")
        assert task is not None and task.unit_count == 20
        assert {u: unit.status for u, unit in task.units.items()} == units
        counts = {s: list(units.values()).count(s) for s in (IN_PROGRESS, FAILED)}
        counts[COMPLETED] = completed
        counts[PENDING] = 20 - sum(counts.values())
        assert task.counts == counts

    check(4, {"3", "4", "11"}, {"3": PENDING, "4": IN_PROGRESS, "11": IN_PROGRESS})
    assert r.zrange(keys["returned"], 0, -1) == [b"3"]
    again = client.claim_first(ref, "B")  # a returned unit comes before the spans
    assert again == 3 and isinstance(again, ClaimedUnit) and again.token == 2
    client.complete_unit(ref, "B", 3, 2)
    check(5, {"3", "4", "11"}, {"4": IN_PROGRESS, "11": IN_PROGRESS})

    client.fail_unit(ref, "A", 4, "boom", 1)
    check(5, {"3", "4", "11"}, {"4": FAILED, "11": IN_PROGRESS})
    task = client.get_task(namespace, "t")
    assert task is not None and task.status is dtaskq.TaskStatus.FAILED
    assert task.error == "unit 4 failed: boom"


def test_re_adding_a_cancelled_range_task_replaces_every_range_key(
    client: dtaskq.Client, r: redis.Redis, namespace: str, prefix: str
) -> None:
    """A new version starts from fresh regions: no span, bitmap or record of the old one."""
    old = client.add_task(namespace, "t", unit_count=3 * 2**20, workers_hint=3)
    assert client.claim(old, "A", max_units=3) == [0, 1, 2]
    assert client.claim_first(old, "B") == 2**20
    client.complete_unit(old, "A", 1, 1)
    client.complete_unit(old, "B", 2**20, 1)
    assert len(bitmaps(r, prefix, old)) == 2
    client.cancel_task(old)

    new = client.add_task(namespace, "t", unit_count=10, workers_hint=2)
    assert new.version > old.version
    keys = task_keys(prefix, new)
    assert spans(r, prefix, new) == ["0 5 ", "5 10 "]
    assert r.zcard(keys["order"]) == 2
    assert list(r.scan_iter(match=f"*{prefix}*:done*", count=1000)) == []
    for kind in ("units", "nodes", "returned", "kept", "acks"):
        assert r.exists(keys[kind]) == 0, kind
    # The partition's lease index may still name old units: with no record behind them,
    # the next sweep drops them (as for named tasks).
    task = client.get_task(namespace, "t")
    assert task is not None and task.unit_count == 10 and task.units == {}
    assert task.counts == {PENDING: 10, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0}
    with pytest.raises(TaskDoesNotExist):
        client.claim_first(old, "A")
    assert client.claim_first(new, "A") == 0 and client.claim_first(new, "B") == 5


# --- async ---


async def test_async_range_claims(aclient: dtaskq.AsyncClient, namespace: str) -> None:
    """The async client's claim_first, claim_next and claim work as coroutines."""
    ref = await aclient.add_task(namespace, "t", unit_count=10, workers_hint=2)
    first = await aclient.claim_first(ref, "n1")
    assert first == 0 and isinstance(first, ClaimedUnit) and first.token == 1
    assert await aclient.claim_next(ref, "n1", first) == 1
    batch: Any = await aclient.claim(ref, "n1", max_units=10, last=1)
    assert batch == list(range(2, 10))  # the rest of its region, then the next fresh one
    await aclient.complete_unit(ref, "n1", first, first.token)
    assert await aclient.claim(ref, "n2", max_units=3) is DONE
    task = await aclient.get_task(namespace, "t")
    assert task is not None and task.counts[COMPLETED] == 1 and task.counts[IN_PROGRESS] == 9
