"""claim_any: any pending named unit for a node, completions carried by the claim, answers
kept per claimer for retries, and four processes draining 20 000 units (docs/rules.md rules
6, 7, 12, 14 and 25; retries after a lost reply, R3)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import redis
import redis.connection
from support import (
    LossyConnection,
    Rejects,
    lose_next_reply,
    server_time,
    wait_for_leases_to_end,
    wait_until,
)

import dtaskq
from dtaskq import (
    ClaimedName,
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

UNITS = [f"u{i}" for i in range(6)]


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def got(result: ClaimResult) -> list[tuple[str, int]]:
    """The units a claim handed out, as (unit id, token)."""
    assert all(isinstance(u, ClaimedName) for u in result.units)
    return [(str(u), u.token) for u in result.units]


def tokens(result: ClaimResult) -> list[tuple[str, int]]:
    """The (unit, token) pairs that complete what ``result`` handed out."""
    return [(u, u.token) for u in result.units]


def states(client: dtaskq.Client, ref: TaskRef) -> dict[str, tuple[UnitStatus, str | None, int]]:
    return {u.id: (u.status, u.node, u.attempt) for u in task_of(client, ref).units.values()}


P, IP, C = UnitStatus.PENDING, UnitStatus.IN_PROGRESS, UnitStatus.COMPLETED


# --- the order units are handed out in ---


def test_fresh_units_come_in_task_order_in_batches(client: dtaskq.Client, namespace: str) -> None:
    """Batches follow the order the task lists its units (not their names), never hand out a
    held unit, and the call that completes the last unit finishes the task and answers done."""
    order = ["m", "c", "x", "a", "q", "b", "z"]
    ref = client.add_task(namespace, "t", units=order)
    first = client.claim_any(ref, "n1", max_units=3)
    assert got(first) == [("m", 1), ("c", 1), ("x", 1)]
    assert not first.done and first.rejected == {} and first.retry_after_ms == 0
    second = client.claim_any(ref, "n2", max_units=3)
    assert got(second) == [("a", 1), ("q", 1), ("b", 1)]
    third = client.claim_any(ref, "n1", max_units=3, complete=tokens(first))
    assert got(third) == [("z", 1)] and third.rejected == {} and not third.done
    # Every unit is held or complete: nothing is left for n2, whose completions still count.
    fourth = client.claim_any(ref, "n2", max_units=3, complete=tokens(second))
    assert (fourth.units, fourth.rejected, fourth.done) == ([], {}, True)
    assert task_of(client, ref).status is TaskStatus.STARTED
    last = client.claim_any(ref, "n1", max_units=3, complete=tokens(third))
    assert (last.units, last.rejected, last.done) == ([], {}, True)
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED
    owner = {u: "n1" for u in ("m", "c", "x", "z")} | {u: "n2" for u in ("a", "q", "b")}
    assert states(client, ref) == {u: (C, owner[u], 1) for u in order}
    assert task.nodes == {"n1": 4, "n2": 3}


def test_units_whose_lease_expired_come_first_under_the_next_token(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """Units back from an expired lease (rule 25) are handed out before fresh ones, to any
    node, under the next token; the old holder's claim then continues with fresh units."""
    ref = client.add_task(namespace, "t", units=UNITS, lease_ms=1_000)
    assert got(client.claim_any(ref, "n1", max_units=3)) == [("u0", 1), ("u1", 1), ("u2", 1)]
    wait_for_leases_to_end(client, r, ref, ["u0", "u1", "u2"])
    # The claims below hold leases of a second, far longer than the calls that rely on them.
    n2 = client.claim_any(ref, "n2")
    assert got(n2) == [("u0", 2)]
    n1 = client.claim_any(ref, "n1", max_units=3)
    assert got(n1) == [("u1", 2), ("u2", 2), ("u3", 1)]
    assert states(client, ref) == {
        "u0": (IP, "n2", 2),
        "u1": (IP, "n1", 2),
        "u2": (IP, "n1", 2),
        "u3": (IP, "n1", 1),
        "u4": (P, None, 0),
        "u5": (P, None, 0),
    }
    rest = client.claim_any(ref, "n1", max_units=5, complete=tokens(n1))
    assert got(rest) == [("u4", 1), ("u5", 1)] and rest.rejected == {}
    assert client.claim_any(ref, "n2", complete=tokens(n2)).done
    assert client.claim_any(ref, "n1", complete=tokens(rest)).done
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and task.nodes == {"n1": 5, "n2": 1}


def test_a_rejected_completion_stops_neither_the_others_nor_the_claim(
    client: dtaskq.Client, namespace: str
) -> None:
    """A completion its unit's state turns away (another node took the unit: UnitWrongNode;
    the lease ended: LeaseLost, rule 25) is reported in ``rejected``; the other completions
    and the claim of the same call still take effect."""
    ref = client.add_task(namespace, "t", units=UNITS)
    first = client.claim_any(ref, "n1", max_units=3)
    assert got(first) == [("u0", 1), ("u1", 1), ("u2", 1)]
    # Released leases end exactly as expired ones do (rule 25).
    assert client.release("n1", [(ref, "u0", 1), (ref, "u2", 1)]) == [True, True]
    assert got(client.claim_any(ref, "n2")) == [("u0", 2)]
    mixed = client.claim_any(ref, "n1", complete=[("u0", 1), ("u1", 1), ("u2", 1)])
    assert sorted(mixed.rejected) == ["u0", "u2"] and not mixed.done
    assert got(mixed) == [("u2", 2)]  # the unit whose stale completion was just turned away
    wrong, lost = mixed.rejected["u0"], mixed.rejected["u2"]
    assert type(wrong) is UnitWrongNode and type(lost) is LeaseLost
    for unit, error in (("u0", wrong), ("u2", lost)):
        assert (error.namespace, error.task_id, error.version) == (namespace, "t", ref.version)
        assert (error.unit, error.node) == (unit, "n1")
    assert states(client, ref) == {
        "u0": (IP, "n2", 2),
        "u1": (C, "n1", 1),
        "u2": (IP, "n1", 2),
        "u3": (P, None, 0),
        "u4": (P, None, 0),
        "u5": (P, None, 0),
    }


@pytest.mark.parametrize("how", ["retryable failure", "released lease"])
def test_a_returned_unit_comes_before_fresh_ones(
    client: dtaskq.Client, r: redis.Redis, namespace: str, how: str
) -> None:
    """claim_any hands out units that came back (returned after a lease ended or a retryable
    failure) before fresh ones, whatever their place in the task."""
    ref = client.add_task(namespace, "t", units=UNITS, max_attempts=2, retry_backoff_ms=0)
    token = client.claim_unit(ref, "n1", "u2")
    if how == "released lease":
        assert client.release("n1", [(ref, "u2", token)]) == [True]
    else:
        assert client.fail_unit(ref, "n1", "u2", "flaky", token, retryable=True) is True
        ready = task_of(client, ref).units["u2"].ready_at
        assert ready is not None
        wait_until(lambda: server_time(r) >= ready, "the backoff is over")
    assert got(client.claim_any(ref, "n2")) == [("u2", 2)]


def test_a_claim_is_not_done_while_a_unit_of_its_task_has_an_expired_lease(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """Rule 25: every call treats a lease past its deadline as ended. A claim must not answer
    done while a unit of its task waits only for that."""
    other = client.add_task(namespace, "a-other", units=[*UNITS, "u6", "u7"], lease_ms=300)
    ref = client.add_task(namespace, "b-this", units=["only"], lease_ms=300)
    assert len(client.claim_any(other, "n1", max_units=8).units) == 8
    assert got(client.claim_any(ref, "n1")) == [("only", 1)]
    wait_for_leases_to_end(client, r, other, [*UNITS, "u6", "u7"])
    wait_for_leases_to_end(client, r, ref, ["only"])
    again = client.claim_any(ref, "n2")
    assert got(again) == [("only", 2)] and not again.done


def test_sticky_units_wait_for_their_node_and_come_first_for_it(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """On a sticky task a unit whose lease ran out is kept for its node: other nodes never get
    it, even by naming it, and its node gets it back before any fresh unit (rule 25)."""
    ref = client.add_task(namespace, "s", units=UNITS, on_lease_expiry="sticky", lease_ms=300)
    assert got(client.claim_any(ref, "n1", max_units=2)) == [("u0", 1), ("u1", 1)]
    wait_for_leases_to_end(client, r, ref, ["u0", "u1"])
    # Whatever lease runs out from here on is kept for its own node, which changes no answer.
    assert got(client.claim_any(ref, "n2", max_units=2)) == [("u2", 1), ("u3", 1)]
    named = client.claim_any(ref, "n3", max_units=5, units=["u0", "u1"])
    assert (named.units, named.done) == ([], True)
    assert got(client.claim_any(ref, "n1", max_units=3)) == [("u0", 2), ("u1", 2), ("u4", 1)]
    assert got(client.claim_any(ref, "n3", max_units=5)) == [("u5", 1)]
    assert client.claim_any(ref, "n4", max_units=5).done
    nodes = {u.id: u.node for u in task_of(client, ref).units.values()}
    assert nodes == {"u0": "n1", "u1": "n1", "u2": "n2", "u3": "n2", "u4": "n1", "u5": "n3"}


def test_a_filter_hands_out_only_the_units_it_names(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    """With ``units=`` only pending units of the list are handed out, in the list's order; ids
    the task lacks and units any node holds (the caller too) are skipped."""
    ref = client.add_task(namespace, "f", units=UNITS)
    assert got(client.claim_any(ref, "n1", max_units=5, units=["u4", "nope", "u1"])) == [
        ("u4", 1),
        ("u1", 1),
    ]
    assert got(client.claim_any(ref, "n2", max_units=5, units=["u4", "u2"])) == [("u2", 1)]
    held = client.claim_any(ref, "n2", units=["u4", "u1"])
    assert (held.units, held.done, held.retry_after_ms) == ([], True, 0)
    assert got(client.claim_any(ref, "n1", units=["u1", "u3", "u5"])) == [("u3", 1)]
    assert got(client.claim_any(ref, "n3", max_units=10)) == [("u0", 1), ("u5", 1)]
    for bad in ("u1", [], ["u1", "a b"], [7]):
        rejects(InvalidArgument, client.claim_any, ref, "n1", units=bad)


def test_units_backing_off_answer_when_to_come_back(client: dtaskq.Client, namespace: str) -> None:
    """When the only units left back off after a retryable failure (rule 14), the claim hands
    out nothing, is not done, and says how long until the first is ready; on a sticky task
    that is so only for the node the unit is kept for."""
    for expiry, other_node_done in (("reassign", False), ("sticky", True)):
        ref = client.add_task(
            namespace,
            expiry,
            units=["a", "b"],
            on_lease_expiry=expiry,
            max_attempts=3,
            retry_backoff_ms=60_000,
        )
        first = client.claim_any(ref, "n1", max_units=2)
        assert client.fail_unit(ref, "n1", "a", "flaky", first.units[0].token, retryable=True)
        waiting = client.claim_any(ref, "n1", complete=[("b", first.units[1].token)])
        assert waiting.units == [] and waiting.rejected == {} and not waiting.done
        assert 0 < waiting.retry_after_ms <= 60_000
        filtered = client.claim_any(ref, "n1", units=["a"])
        assert not filtered.done and 0 < filtered.retry_after_ms <= 60_000
        other = client.claim_any(ref, "n2")
        assert other.units == [] and other.done is other_node_done
        assert (other.retry_after_ms > 0) is not other_node_done
        assert task_of(client, ref).status is TaskStatus.STARTED


def test_a_unit_back_from_a_retryable_failure_is_handed_out_again_once_ready(
    client: dtaskq.Client, r: redis.Redis, namespace: str
) -> None:
    """After its backoff (rule 14) the unit goes to any node under the next token; on a
    sticky task only to the node it is kept for."""
    for expiry, taker in (("reassign", "n2"), ("sticky", "n1")):
        ref = client.add_task(
            namespace,
            expiry,
            units=["a"],
            on_lease_expiry=expiry,
            max_attempts=2,
            retry_backoff_ms=0,
        )
        first = client.claim_any(ref, "n1")
        assert client.fail_unit(ref, "n1", "a", "flaky", first.units[0].token, retryable=True)
        ready = task_of(client, ref).units["a"].ready_at
        assert ready is not None
        wait_until(lambda ready=ready: server_time(r) >= ready, "the backoff is over")
        if expiry == "sticky":
            assert client.claim_any(ref, "n2").done
        again = client.claim_any(ref, taker)
        assert got(again) == [("a", 2)]
        done = client.claim_any(ref, taker, complete=tokens(again))
        assert done.done and task_of(client, ref).status is TaskStatus.FINISHED


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({}, TaskStatus.FINISHED),
        ({"ack_barrier": True}, TaskStatus.SWAPPING),
        ({"prepare_barrier": True}, TaskStatus.PREPARING),
    ],
    ids=["no-barrier", "ack-barrier", "prepare-barrier"],
)
def test_the_last_completion_moves_the_task_on_and_claims_are_done(
    client: dtaskq.Client, namespace: str, options: dict[str, Any], status: TaskStatus
) -> None:
    ref = client.add_task(namespace, "b", units=["a", "b", "c"], **options)
    first = client.claim_any(ref, "n1", max_units=2)
    second = client.claim_any(ref, "n2", max_units=2, complete=[])
    assert got(second) == [("c", 1)]
    assert not client.claim_any(ref, "n1", complete=tokens(first)).rejected
    last = client.claim_any(ref, "n2", max_units=5, complete=tokens(second))
    assert (last.units, last.rejected, last.done, last.retry_after_ms) == ([], {}, True, 0)
    task = task_of(client, ref)
    assert task.status is status and task.units_finished_at is not None
    for node in ("n1", "n2", "n3"):
        assert client.claim_any(ref, node, max_units=5).done
    # An identical retry of a completion is still accepted once the task moved on.
    again = client.claim_any(ref, "n2", complete=tokens(second))
    assert (again.rejected, again.done) == ({}, True)


def test_claims_on_range_or_ended_tasks_are_rejected(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    """A range task is InvalidArgument; a FAILED or CANCELLED task is TaskNotRunning and its
    completions are not applied; an unknown version does not exist."""
    spans = client.add_task(namespace, "range", unit_count=10)
    rejects(InvalidArgument, client.claim_any, spans, "n1")
    for end in ("fail", "cancel"):
        ref = client.add_task(namespace, end, units=["a", "b"])
        held = client.claim_any(ref, "n1", max_units=2)
        if end == "fail":
            client.fail_unit(ref, "n1", "a", "boom", held.units[0].token)
        else:
            client.cancel_task(ref)
        before = states(client, ref)
        rejects(TaskNotRunning, client.claim_any, ref, "n1", complete=[("b", 1)])
        rejects(TaskNotRunning, client.claim_any, ref, "n3")
        assert states(client, ref) == before
    ref = client.add_task(namespace, "live", units=["a"])
    rejects(TaskDoesNotExist, client.claim_any, TaskRef(namespace, "live", ref.version + 1), "n1")
    rejects(InvalidArgument, client.claim_any, ref, "n1", max_units=0)
    rejects(InvalidArgument, client.claim_any, ref, "n1", max_units=1001)
    rejects(InvalidArgument, client.claim_any, ref, "n1", complete=[("a", -1)])
    rejects(InvalidArgument, client.claim_any, ref, "n1", complete=[("a", 1)] * 1001)


# --- retries after a lost reply ---


def test_a_retry_after_a_lost_reply_gets_the_same_units(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    """The retry answers what the first try did: the same units under the same tokens, the
    same completions, and nothing is claimed or completed twice."""
    ref = lossy.add_task(namespace, "lost", units=UNITS)
    lose_next_reply("claim_any")
    first = lossy.claim_any(ref, "n1", max_units=2)
    assert LossyConnection.runs["claim_any"] == 2
    assert got(first) == [("u0", 1), ("u1", 1)]
    assert {u for u, s in states(client, ref).items() if s[0] is IP} == {"u0", "u1"}

    lose_next_reply("claim_any")
    second = lossy.claim_any(ref, "n1", max_units=2, complete=tokens(first))
    assert LossyConnection.runs["claim_any"] == 2
    assert got(second) == [("u2", 1), ("u3", 1)] and second.rejected == {}
    task = task_of(client, ref)
    assert task.counts[C] == 2 and task.counts[IP] == 2

    rest = lossy.claim_any(ref, "n1", max_units=5, complete=tokens(second))
    lose_next_reply("claim_any")
    last = lossy.claim_any(ref, "n1", max_units=5, complete=tokens(rest))
    assert (last.units, last.rejected, last.done) == ([], {}, True)
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED
    assert {u.attempt for u in task.units.values()} == {1}


class PausingConnection(LossyConnection):
    """A LossyConnection that, once it has lost a reply, runs ``pause`` before the client sees
    the error and retries: what other threads do then happens between a call's two tries."""

    pause: ClassVar[Callable[[], None] | None] = None

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.ConnectionError:
            hook, PausingConnection.pause = PausingConnection.pause, None
            if hook is not None:
                hook()
            raise


@pytest.fixture
def pausing(server_url: str, prefix: str) -> Iterator[dtaskq.Client]:
    LossyConnection.armed = None
    LossyConnection.runs = {}
    PausingConnection.pause = None
    url = redis.connection.parse_url(server_url)
    pool = redis.ConnectionPool(
        connection_class=PausingConnection, host=url["host"], port=url["port"], db=url.get("db", 0)
    )
    client = dtaskq.Client(redis.Redis(connection_pool=pool), prefix=prefix)
    yield client
    client.close()
    LossyConnection.armed = None
    PausingConnection.pause = None


Claim = Callable[[dtaskq.Client, TaskRef], list[Any]]

CLAIMS: dict[str, tuple[str, dict[str, Any], Claim]] = {
    "claim_any": (
        "claim_any",
        {"units": [f"u{i}" for i in range(10)]},
        lambda c, ref: list(c.claim_any(ref, "n1", max_units=2).units),
    ),
    "claim_range": (
        "claim_range",
        {"unit_count": 10},
        lambda c, ref: c.claim(ref, "n1", max_units=2),  # type: ignore[arg-type,return-value]
    ),
}


@pytest.mark.parametrize("kind", list(CLAIMS))
def test_a_threads_retry_gets_its_own_units_whatever_its_sibling_claimed(
    single_server: str, pausing: dtaskq.Client, client: dtaskq.Client, namespace: str, kind: str
) -> None:
    """Two threads of one node claim; thread A's reply is lost, thread B claims before A
    retries, and A's retry still answers A's own units: the claim functions keep one answer
    per claimer, not per node, so no unit is left held by nobody who knows it."""
    function, spec, claim = CLAIMS[kind]
    ref = pausing.add_task(namespace, "two", **spec)
    lost, sibling_done = threading.Event(), threading.Event()
    answers: dict[str, list[Any]] = {}

    def wait_for_sibling() -> None:
        lost.set()
        assert sibling_done.wait(timeout=30)

    def thread_a() -> None:
        answers["a"] = claim(pausing, ref)

    PausingConnection.pause = wait_for_sibling
    lose_next_reply(function)
    a = threading.Thread(target=thread_a)
    a.start()
    try:
        assert lost.wait(timeout=30), "thread A's first try should have run"
        answers["b"] = claim(pausing, ref)  # this thread is B
    finally:
        sibling_done.set()
        a.join(timeout=30)
    assert not a.is_alive()
    assert LossyConnection.runs[function] == 3  # A, B, then A's retry
    a_units = [(str(u), u.token) for u in answers["a"]]
    b_units = [(str(u), u.token) for u in answers["b"]]
    first_two = [("u0", 1), ("u1", 1)] if kind == "claim_any" else [("0", 1), ("1", 1)]
    assert a_units == first_two
    assert len(b_units) == 2 and not set(a_units) & set(b_units)
    held = {u.id for u in task_of(client, ref).units.values() if u.status is IP}
    assert held == {u for u, _ in a_units + b_units}


# --- many processes ---

BIG = 20_000
BATCHES = (10, 20, 50, 100)


def drain(
    server_url: str, prefix: str, ref: TaskRef, node: str, k: int, start: Any, results: Any
) -> None:
    """Runs in a child process: claims ``k`` units at a time, completing the previous batch in
    the same call, until the claim is done. Reports each call's number of units handed out,
    the units it completed, and every completion that was turned away."""
    sizes: list[int] = []
    completed: list[str] = []
    rejected: list[str] = []
    with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
        client.get_task(ref.namespace, ref.task_id)  # connect before the race
        start.wait()
        previous: list[tuple[str, int]] = []
        while True:
            result = client.claim_any(ref, node, max_units=k, complete=previous)
            rejected += list(result.rejected)
            completed += [u for u, _ in previous if u not in result.rejected]
            sizes.append(len(result.units))
            previous = [(str(u), u.token) for u in result.units]
            if result.done:
                break
    results.put((node, sizes, completed, rejected))


def test_four_processes_drain_20000_units_without_empty_or_refused_claims(
    client: dtaskq.Client, server_url: str, prefix: str, namespace: str
) -> None:
    """Four processes claim k = 10, 20, 50, 100 units a call. Every unit is completed exactly
    once, under its first claim; no completion is turned away; and every call but each
    process's last hands out units (only the call before it may be short), so calls add up to
    units / k plus a few: no claim was turned away because another node held a unit."""
    ref = client.add_task(namespace, "big", units=[f"w{i:05d}" for i in range(BIG)])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(BATCHES))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=drain, args=(server_url, prefix, ref, f"n{k}", k, start, results))
        for k in BATCHES
    ]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.exitcode is None:
                p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)

    completer: dict[str, str] = {}
    for node, sizes, completed, rejected in reports:
        k = int(node[1:])
        assert rejected == [], f"{node} had completions turned away: {rejected[:5]}"
        assert sizes[-1] == 0 and 0 not in sizes[:-1], f"{node}: an empty claim before the end"
        assert all(size == k for size in sizes[:-2]), f"{node}: a short claim before the end"
        assert len(sizes) <= len(completed) // k + 2
        assert sum(sizes) == len(completed)
        for unit in completed:
            assert unit not in completer, f"{unit} completed by {completer[unit]} and {node}"
            completer[unit] = node
    assert len(completer) == BIG
    total_calls = sum(len(sizes) for _, sizes, _, _ in reports)
    assert total_calls <= sum(len(c) // int(n[1:]) for n, _, c, _ in reports) + 2 * len(procs)

    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and task.counts[C] == BIG
    assert all(
        (u.status, u.node, u.attempt) == (C, completer[u.id], 1) for u in task.units.values()
    )
    assert task.nodes == {
        node: sum(1 for n in completer.values() if n == node) for node, *_ in reports
    }


# --- the async client ---


async def test_async_claimers_of_one_node_share_a_task(
    aclient: dtaskq.AsyncClient, namespace: str
) -> None:
    """Three asyncio tasks of one node claim and complete three units a call: each unit is
    handed out once, and the task finishes."""
    ref = await aclient.add_task(namespace, "async", units=[f"a{i:02d}" for i in range(30)])
    filtered = await aclient.claim_any(ref, "n0", max_units=5, units=["a29", "a28"])
    assert [(str(u), u.token) for u in filtered.units] == [("a29", 1), ("a28", 1)]

    async def worker() -> list[str]:
        done: list[str] = []
        previous: list[tuple[str, int]] = []
        while True:
            result = await aclient.claim_any(ref, "n1", max_units=3, complete=previous)
            assert result.rejected == {}
            done += [u for u, _ in previous]
            previous = [(str(u), u.token) for u in result.units]
            if result.done:
                return done
            await asyncio.sleep(0)

    finished = await asyncio.gather(worker(), worker(), worker())
    everything = [u for units in finished for u in units]
    assert sorted(everything) == [f"a{i:02d}" for i in range(28)]
    last = await aclient.claim_any(ref, "n0", complete=[(u, 1) for u in filtered.units])
    assert last.done and last.rejected == {}
    task = await aclient.get_task(namespace, "async")
    assert task is not None and task.status is TaskStatus.FINISHED
