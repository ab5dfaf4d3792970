"""Races between OS processes, and client retries after a lost reply."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
from typing import Any

import pytest
import redis
import redis.connection
from support import LossyConnection, lose_next_reply

import dtaskq
from dtaskq import TaskRef, TaskStatus, UnitStatus
from dtaskq.keys import Partition

PROCESSES = 8
UNITS = [f"u{i:03d}" for i in range(200)]


def claim_everything(
    server_url: str, prefix: str, ref: TaskRef, node: str, start: Any, wins: Any
) -> None:
    """Runs in a child process: tries every unit in its own order, reports the ones it won."""
    order = list(UNITS)
    random.Random(node).shuffle(order)
    won: dict[str, int] = {}
    with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
        client.get_task(ref.namespace, ref.task_id)  # connect before the race
        start.wait()
        for unit in order:
            with contextlib.suppress(dtaskq.UnitWrongNode):
                won[unit] = client.claim_unit(ref, node, unit)
    wins.put((node, won))


def test_processes_racing_for_units_each_win_distinct_ones(
    client: dtaskq.Client, server_url: str, prefix: str, namespace: str
) -> None:
    ref = client.add_task(namespace, "race", units=UNITS)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    wins = ctx.Queue()
    procs = [
        ctx.Process(target=claim_everything, args=(server_url, prefix, ref, f"n{i}", start, wins))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        results = dict(wins.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    owner: dict[str, str] = {}
    for node, won in results.items():
        for unit, token in won.items():
            assert unit not in owner, f"{unit} won by {owner[unit]} and {node}"
            assert token == 1
            owner[unit] = node
    assert sorted(owner) == UNITS
    task = client.get_task(namespace, "race")
    assert {u.id: u.node for u in task.units.values()} == owner
    assert {(u.status, u.attempt) for u in task.units.values()} == {(UnitStatus.IN_PROGRESS, 1)}


# --- a reply lost after the script ran ---


def test_completion_retried_after_a_lost_reply_completes_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str, prefix: str, r: redis.Redis
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"])
    token = lossy.claim_unit(ref, "n1", "a")
    lose_next_reply("complete_unit")
    assert lossy.complete_unit(ref, "n1", "a", token) == token
    assert LossyConnection.runs["complete_unit"] == 2
    assert LossyConnection.armed is None
    task = client.get_task(namespace, "t")
    assert task.status is TaskStatus.FINISHED
    a = task.units["a"]
    assert (a.status, a.attempt, a.node) == (UnitStatus.COMPLETED, 1, "n1")
    task_key = Partition(prefix, namespace, 0).task_keys("t")[0]
    assert r.hget(task_key, "units_completed") == b"1"


def test_final_failure_retried_after_a_lost_reply_fails_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a", "b"])
    token = lossy.claim_unit(ref, "n1", "a")
    lose_next_reply("fail_unit")
    assert lossy.fail_unit(ref, "n1", "a", "disk full", token) is False
    assert LossyConnection.runs["fail_unit"] == 2
    task = client.get_task(namespace, "t")
    assert (task.status, task.error) == (TaskStatus.FAILED, "unit a failed: disk full")
    assert (task.units["a"].status, task.units["a"].attempt) == (UnitStatus.FAILED, 1)


def test_retryable_failure_retried_after_a_lost_reply_counts_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"], max_attempts=2, retry_backoff_ms=10_000)
    token = lossy.claim_unit(ref, "n1", "a")
    lose_next_reply("fail_unit")
    assert lossy.fail_unit(ref, "n1", "a", "flaky", token, retryable=True) is True
    assert LossyConnection.runs["fail_unit"] == 2
    task = client.get_task(namespace, "t")
    a = task.units["a"]
    assert task.status is TaskStatus.STARTED
    assert (a.status, a.attempt, a.error) == (UnitStatus.PENDING, 1, "flaky")


def test_claim_retried_after_a_lost_reply_keeps_the_token(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"])
    lose_next_reply("claim_unit")
    assert lossy.claim_unit(ref, "n1", "a") == 1
    assert LossyConnection.runs["claim_unit"] == 2
    a = client.get_task(namespace, "t").units["a"]
    assert (a.status, a.attempt, a.node) == (UnitStatus.IN_PROGRESS, 1, "n1")


def test_add_task_retried_after_a_lost_reply_creates_one_version(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str, prefix: str, r: redis.Redis
) -> None:
    # The retry carries the request id of the first try, so the script recognises the task
    # it created instead of answering TaskExists.
    lose_next_reply("add_task")
    ref = lossy.add_task(namespace, "t", units=["a", "b"])
    assert LossyConnection.runs["add_task"] == 2
    assert ref.version == 1
    seq_key = Partition(prefix, namespace, 0).task_keys("t")[8]
    assert r.get(seq_key) == b"1"
    task = client.get_task(namespace, "t")
    assert (task.version, task.status) == (1, TaskStatus.STARTED)
    assert sorted(task.units) == ["a", "b"]
    # A second, separate call is still refused while the task is active.
    with pytest.raises(dtaskq.TaskExists):
        lossy.add_task(namespace, "t", units=["a", "b"])


def test_re_add_retried_after_a_lost_reply_creates_one_new_version(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    first = lossy.add_task(namespace, "t", units=["a"])
    lossy.cancel_task(first)
    lose_next_reply("add_task")
    second = lossy.add_task(namespace, "t", units=["a"])
    assert LossyConnection.runs["add_task"] == 2
    assert second.version == first.version + 1
    assert client.get_task(namespace, "t").version == second.version


def test_progress_retried_after_a_lost_reply_is_harmless(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"])
    lose_next_reply("update_progress")
    assert lossy.update_progress(ref, "n1", "a", 0.5) == 1
    assert LossyConnection.runs["update_progress"] == 2
    a = client.get_task(namespace, "t").units["a"]
    assert (a.status, a.attempt, a.node, a.progress) == (UnitStatus.IN_PROGRESS, 1, "n1", 0.5)


def test_ack_retried_after_a_lost_reply_is_recorded_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"], ack_barrier=True)
    lossy.complete_unit(ref, "n1", "a")
    lose_next_reply("record_ack")
    recorded = lossy.record_post_ack(ref, "n1")
    assert LossyConnection.runs["record_ack"] == 2
    task = client.get_task(namespace, "t")
    assert list(task.post_acks) == ["n1"] and task.post_acks["n1"].success
    # The retry recognises the ack its first try recorded.
    assert recorded is True


def test_finalize_retried_after_a_lost_reply_finishes_once(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"], ack_barrier=True)
    lossy.complete_unit(ref, "n1", "a")
    lossy.record_post_ack(ref, "n1")
    lose_next_reply("finalize_task")
    finished_now = lossy.finalize_task(ref)
    assert LossyConnection.runs["finalize_task"] == 2
    assert client.get_task(namespace, "t").status is TaskStatus.FINISHED
    # The retry recognises that its first try finished the task.
    assert finished_now is True
    assert lossy.finalize_task(ref) is False


def test_cancel_retried_after_a_lost_reply_succeeds(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"])
    lose_next_reply("cancel_task")
    try:
        lossy.cancel_task(ref)
    finally:
        assert LossyConnection.runs["cancel_task"] == 2
        assert client.get_task(namespace, "t").status is TaskStatus.CANCELLED


def test_cleanup_retried_after_a_lost_reply_succeeds(
    lossy: dtaskq.Client, client: dtaskq.Client, namespace: str
) -> None:
    ref = lossy.add_task(namespace, "t", units=["a"], completed_ttl_ms=0)
    lossy.cancel_task(ref)
    time.sleep(0.005)
    lose_next_reply("cleanup_task")
    try:
        lossy.cleanup_task(ref)
    finally:
        assert LossyConnection.runs["cleanup_task"] == 2
        assert client.get_task(namespace, "t") is None
