"""complete_and_claim: range units completed and the next ones claimed in one round trip, as
complete_unit and claim would in two (docs/ranges.md; docs/rules.md rules 10, 12 and 25, R3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import LossyConnection, Rejects, lose_next_reply

import dtaskq
from dtaskq import (
    DONE,
    ClaimedUnit,
    ClaimResult,
    InvalidArgument,
    LeaseLost,
    TaskDoesNotExist,
    TaskNotRunning,
    TaskRef,
    TaskStatus,
    UnitStatus,
    UnitWrongNode,
)

C, IP = UnitStatus.COMPLETED, UnitStatus.IN_PROGRESS


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def got(result: ClaimResult) -> list[tuple[int, int]]:
    """The units a call handed out, as (unit, token)."""
    assert all(isinstance(u, ClaimedUnit) for u in result.units)
    return [(int(u), u.token) for u in result.units]


def pairs(units: list[Any]) -> list[tuple[int, int]]:
    return [(int(u), u.token) for u in units]


def test_each_call_completes_a_batch_and_claims_the_next(
    client: dtaskq.Client, namespace: str
) -> None:
    """k completions and k claims a call: 100 units in 11 calls, the last of which finishes
    the task and answers done."""
    ref = client.add_task(namespace, "batch", unit_count=100)
    result = client.complete_and_claim(ref, "n1", [], max_units=10)
    assert got(result) == [(n, 1) for n in range(10)]
    for call in range(1, 11):
        result = client.complete_and_claim(
            ref, "n1", pairs(result.units), max_units=10, last=result.units[-1]
        )
        assert result.rejected == {}
        task = task_of(client, ref)
        assert task.counts[C] == 10 * call
        if call < 10:
            assert got(result) == [(n, 1) for n in range(10 * call, 10 * call + 10)]
            assert not result.done and task.counts[IP] == 10
        else:
            assert (result.units, result.done, result.retry_after_ms) == ([], True, 0)
            assert task.status is TaskStatus.FINISHED and task.units_finished_at is not None


def test_the_claims_are_those_of_complete_unit_then_claim(
    client: dtaskq.Client, namespace: str
) -> None:
    """Three nodes taking turns on two identical tasks, one through complete_unit and claim,
    the other through complete_and_claim: the same units under the same tokens, span splits
    included, and both tasks end in the same state."""
    one = client.add_task(namespace, "apart", unit_count=50, workers_hint=3)
    both = client.add_task(namespace, "together", unit_count=50, workers_hint=3)
    held: dict[str, dict[str, list[Any]]] = {"apart": {}, "together": {}}
    finished: set[str] = set()
    while len(finished) < 3:
        for node in ("n1", "n2", "n3"):
            if node in finished:
                continue
            previous = held["apart"].get(node, [])
            for unit in previous:
                client.complete_unit(one, node, unit, unit.token)
            last = previous[-1] if previous else None
            apart = client.claim(one, node, max_units=4, last=last)
            mine = held["together"].get(node, [])
            together = client.complete_and_claim(
                both, node, pairs(mine), max_units=4, last=mine[-1] if mine else None
            )
            assert together.rejected == {}
            if apart is DONE:
                assert together.done and together.units == []
                finished.add(node)
                held["apart"][node] = held["together"][node] = []
            else:
                assert isinstance(apart, list)
                assert got(together) == pairs(apart)
                held["apart"][node], held["together"][node] = apart, list(together.units)
    a, b = task_of(client, one), task_of(client, both)
    assert a.status is b.status is TaskStatus.FINISHED
    assert a.nodes == b.nodes and a.counts == b.counts


def test_max_units_zero_only_completes(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "zero", unit_count=10)
    claimed = client.claim(ref, "n1", max_units=3)
    assert isinstance(claimed, list)
    result = client.complete_and_claim(ref, "n1", pairs(claimed), max_units=0)
    assert (result.units, result.rejected, result.retry_after_ms) == ([], {}, 0)
    task = task_of(client, ref)
    assert task.counts[C] == 3 and task.counts[IP] == 0 and task.units == {}
    assert task.status is TaskStatus.STARTED
    after = client.complete_and_claim(ref, "n1", [], max_units=2, last=2)
    assert got(after) == [(3, 1), (4, 1)]


def test_a_call_that_only_completes_is_not_done_while_units_are_left(
    client: dtaskq.Client, namespace: str
) -> None:
    """ClaimResult.done says that no unit is left to hand out to this node; a call that claims
    nothing because it asked for nothing must not say so while units are left."""
    ref = client.add_task(namespace, "zero", unit_count=10)
    claimed = client.claim(ref, "n1", max_units=3)
    assert isinstance(claimed, list)
    result = client.complete_and_claim(ref, "n1", pairs(claimed), max_units=0)
    assert result.units == [] and not result.done


def test_rejected_completions_are_reported_per_unit(client: dtaskq.Client, namespace: str) -> None:
    """Each completion the unit's state turns away is listed under its unit with its own
    error; the others and the claim take effect."""
    ref = client.add_task(namespace, "rej", unit_count=10)
    claimed = client.claim(ref, "n1", max_units=3)
    assert isinstance(claimed, list) and pairs(claimed) == [(0, 1), (1, 1), (2, 1)]
    assert client.release("n1", [(ref, 1, 1)]) == [True]
    assert pairs(client.claim(ref, "n2")) == [(1, 2)]  # type: ignore[arg-type]
    result = client.complete_and_claim(
        ref, "n1", [(0, 1), (1, 1), (2, 1), (7, 1), (99, 1)], max_units=1, last=2
    )
    assert {u: type(e) for u, e in result.rejected.items()} == {
        "1": UnitWrongNode,  # n2 took it
        "7": LeaseLost,  # nobody holds it under that token
        "99": TaskDoesNotExist,  # not a unit of a 10-unit task
    }
    assert all(e.unit == u and e.node == "n1" for u, e in result.rejected.items())  # type: ignore[attr-defined]
    assert got(result) == [(3, 1)]
    task = task_of(client, ref)
    assert task.counts[C] == 2
    assert {u: (x.status, x.node) for u, x in task.units.items()} == {
        "1": (IP, "n2"),
        "3": (IP, "n1"),
    }


def test_a_retry_after_a_lost_reply_returns_the_same_answer(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    """R3: the retry of a call whose reply was lost answers its first try: the same claims,
    the same completions, nothing done twice; also for the call that finishes the task."""
    ref = lossy.add_task(namespace, "lost", unit_count=6)
    first = lossy.complete_and_claim(ref, "n1", [], max_units=3)
    lose_next_reply("claim_range")
    second = lossy.complete_and_claim(ref, "n1", pairs(first.units), max_units=3, last=2)
    assert LossyConnection.runs["claim_range"] == 2
    assert got(second) == [(3, 1), (4, 1), (5, 1)] and second.rejected == {}
    task = task_of(client, ref)
    assert task.counts[C] == 3 and task.counts[IP] == 3
    assert {u.attempt for u in task.units.values()} == {1}
    lose_next_reply("claim_range")
    last = lossy.complete_and_claim(ref, "n1", pairs(second.units), max_units=3, last=5)
    assert LossyConnection.runs["claim_range"] == 2
    assert (last.units, last.rejected, last.done) == ([], {}, True)
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and task.counts[C] == 6


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({}, TaskStatus.FINISHED),
        ({"ack_barrier": True}, TaskStatus.SWAPPING),
        ({"prepare_barrier": True}, TaskStatus.PREPARING),
    ],
    ids=["no-barrier", "ack-barrier", "prepare-barrier"],
)
def test_the_last_completion_moves_the_task_on(
    client: dtaskq.Client, namespace: str, options: dict[str, Any], status: TaskStatus
) -> None:
    ref = client.add_task(namespace, "end", unit_count=4, workers_hint=2, **options)
    mine = client.complete_and_claim(ref, "n1", [], max_units=2)
    theirs = client.complete_and_claim(ref, "n2", [], max_units=2)
    assert sorted(got(mine) + got(theirs)) == [(n, 1) for n in range(4)]
    early = client.complete_and_claim(ref, "n1", pairs(mine.units), max_units=2)
    assert early.units == [] and early.done  # the rest is held by n2
    assert task_of(client, ref).status is TaskStatus.STARTED
    last = client.complete_and_claim(ref, "n2", pairs(theirs.units), max_units=2)
    assert (last.units, last.rejected, last.done) == ([], {}, True)
    task = task_of(client, ref)
    assert task.status is status and task.counts[C] == 4
    assert task.units_finished_at is not None
    assert client.claim(ref, "n3") is DONE
    again = client.complete_and_claim(ref, "n2", pairs(theirs.units), max_units=1)
    assert (again.rejected, again.done) == ({}, True)  # an identical retry


def test_failed_or_cancelled_tasks_complete_nothing(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    for end in ("fail", "cancel"):
        ref = client.add_task(namespace, end, unit_count=5)
        held = client.complete_and_claim(ref, "n1", [], max_units=2)
        if end == "fail":
            assert client.fail_unit(ref, "n1", held.units[0], "boom", held.units[0].token) is False
        else:
            client.cancel_task(ref)
        rejects(TaskNotRunning, client.complete_and_claim, ref, "n1", pairs(held.units[1:]))
        rejects(TaskNotRunning, client.complete_and_claim, ref, "n1", [], max_units=1)
        assert task_of(client, ref).units[str(held.units[1])].status is IP
    ref = client.add_task(namespace, "live", unit_count=5)
    gone = TaskRef(namespace, "live", ref.version + 1)
    rejects(TaskDoesNotExist, client.complete_and_claim, gone, "n1", [(0, 1)])


BAD_CALLS: dict[str, Callable[[dtaskq.Client, TaskRef], object]] = {
    "done-str": lambda c, ref: c.complete_and_claim(ref, "n1", "01"),  # type: ignore[arg-type]
    "done-bytes": lambda c, ref: c.complete_and_claim(ref, "n1", b"01"),  # type: ignore[arg-type]
    "done-none": lambda c, ref: c.complete_and_claim(ref, "n1", None),  # type: ignore[arg-type]
    "done-int": lambda c, ref: c.complete_and_claim(ref, "n1", 5),  # type: ignore[arg-type]
    "done-generator": lambda c, ref: c.complete_and_claim(
        ref,
        "n1",
        ((0, 1) for _ in range(1)),  # type: ignore[arg-type]
    ),
    "pair-as-list": lambda c, ref: c.complete_and_claim(ref, "n1", [[0, 1]]),  # type: ignore[list-item]
    "pair-of-one": lambda c, ref: c.complete_and_claim(ref, "n1", [(0,)]),  # type: ignore[list-item]
    "triple": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, 1, 2)]),  # type: ignore[list-item]
    "bare-unit": lambda c, ref: c.complete_and_claim(ref, "n1", [0]),  # type: ignore[list-item]
    "second-pair-bad": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, 1), (1, -1)]),
    "1001-pairs": lambda c, ref: c.complete_and_claim(ref, "n1", [(n, 1) for n in range(1001)]),
    "token-negative": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, -1)]),
    "token-float": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, 1.0)]),  # type: ignore[list-item]
    "token-bool": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, True)]),
    "token-str": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, "1")]),  # type: ignore[list-item]
    "token-2**53+1": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, 2**53 + 1)]),
    "unit-negative": lambda c, ref: c.complete_and_claim(ref, "n1", [(-1, 1)]),
    "unit-2**53": lambda c, ref: c.complete_and_claim(ref, "n1", [(2**53, 1)]),
    "unit-bool": lambda c, ref: c.complete_and_claim(ref, "n1", [(True, 1)]),
    "unit-space": lambda c, ref: c.complete_and_claim(ref, "n1", [("0 1", 1)]),
    "unit-float": lambda c, ref: c.complete_and_claim(ref, "n1", [(1.0, 1)]),  # type: ignore[list-item]
    "max-units-negative": lambda c, ref: c.complete_and_claim(ref, "n1", [(0, 1)], max_units=-1),
    "max-units-1001": lambda c, ref: c.complete_and_claim(ref, "n1", [], max_units=1001),
    "max-units-bool": lambda c, ref: c.complete_and_claim(ref, "n1", [], max_units=True),
    "max-units-0-alone": lambda c, ref: c.complete_and_claim(ref, "n1", [], max_units=0),
    "last-negative": lambda c, ref: c.complete_and_claim(ref, "n1", [], last=-1),
    "last-2**53": lambda c, ref: c.complete_and_claim(ref, "n1", [], last=2**53),
    "last-str": lambda c, ref: c.complete_and_claim(ref, "n1", [], last="3"),  # type: ignore[arg-type]
    "last-past-the-task": lambda c, ref: c.complete_and_claim(ref, "n1", [], last=10),
    "node-space": lambda c, ref: c.complete_and_claim(ref, "n 1", [(0, 1)]),
    "not-a-ref": lambda c, ref: c.complete_and_claim(  # type: ignore[arg-type]
        (ref.namespace, ref.task_id, ref.version), "n1", []
    ),
}


@pytest.fixture
def held_range(client: dtaskq.Client, namespace: str) -> Iterator[TaskRef]:
    """A 10-unit range task of which n1 holds units 0 and 1."""
    ref = client.add_task(namespace, "bad", unit_count=10)
    assert len(client.claim(ref, "n1", max_units=2)) == 2  # type: ignore[arg-type]
    yield ref


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_malformed_arguments_are_invalid_and_change_nothing(
    client: dtaskq.Client,
    held_range: TaskRef,
    rejects: Rejects,
    call: Callable[[dtaskq.Client, TaskRef], object],
) -> None:
    error = rejects(InvalidArgument, call, client, held_range)
    assert isinstance(error, ValueError) and str(error)


def test_a_task_of_named_units_is_invalid(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    ref = client.add_task(namespace, "named", units=["a"])
    rejects(InvalidArgument, client.complete_and_claim, ref, "n1", [])


async def test_the_async_client_completes_and_claims(
    aclient: dtaskq.AsyncClient, namespace: str
) -> None:
    ref = await aclient.add_task(namespace, "async", unit_count=7)
    result = await aclient.complete_and_claim(ref, "n1", [], max_units=3)
    calls = 1
    while not result.done:
        last = result.units[-1] if result.units else None
        result = await aclient.complete_and_claim(
            ref, "n1", [(u, u.token) for u in result.units], max_units=3, last=last
        )
        assert result.rejected == {}
        calls += 1
    assert calls == 4  # 3 + 3 + 1 units, then the call that completes the last one
    task = await aclient.get_task(namespace, "async")
    assert task is not None and task.status is TaskStatus.FINISHED
