"""Completion barriers: prepare and post acks, finalize (docs/rules.md rules 16-20)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support import Rejects, Unchanged

import dtaskq
from dtaskq import AcksMissing, TaskNotFinalizing, TaskRef, TaskStatus


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def status(client: dtaskq.Client, ref: TaskRef) -> TaskStatus:
    return task_of(client, ref).status


def add_owned(client: dtaskq.Client, namespace: str, task_id: str, **options: Any) -> TaskRef:
    """A task whose units a, b are n1's and c is n2's, all claimed, none completed."""
    ref = client.add_task(namespace, task_id, units=["a", "b", "c"], **options)
    client.claim_unit(ref, "n1", "a")
    client.claim_unit(ref, "n1", "b")
    client.claim_unit(ref, "n2", "c")
    return ref


def complete_all(client: dtaskq.Client, ref: TaskRef) -> None:
    client.complete_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "b")
    client.complete_unit(ref, "n2", "c")


@pytest.fixture
def swapping(client: dtaskq.Client, namespace: str) -> TaskRef:
    """An ack_barrier task in SWAPPING; n1 and n2 own its units."""
    ref = add_owned(client, namespace, "swap", ack_barrier=True)
    complete_all(client, ref)
    return ref


@pytest.fixture
def preparing(client: dtaskq.Client, namespace: str) -> TaskRef:
    """A prepare_barrier task in PREPARING; n1 and n2 own its units."""
    ref = add_owned(client, namespace, "prep", prepare_barrier=True)
    complete_all(client, ref)
    return ref


# --- the way into the barrier ---


def test_ack_barrier_task_swaps_when_the_last_unit_completes(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = add_owned(client, namespace, "swap", ack_barrier=True)
    client.complete_unit(ref, "n1", "a")
    client.complete_unit(ref, "n2", "c")
    assert status(client, ref) is TaskStatus.STARTED
    client.complete_unit(ref, "n1", "b")
    task = task_of(client, ref)
    assert task.status is TaskStatus.SWAPPING
    assert task.finished_at is None and task.error == ""
    assert task.ack_barrier and not task.prepare_barrier


def test_prepare_barrier_task_prepares_first(client: dtaskq.Client, preparing: TaskRef) -> None:
    task = task_of(client, preparing)
    assert task.status is TaskStatus.PREPARING
    assert task.ack_barrier and task.prepare_barrier
    assert task.finished_at is None


# --- rule 16: the expected ack set ---


def test_acks_from_nodes_owning_no_unit_are_ignored(
    client: dtaskq.Client, swapping: TaskRef, unchanged: Unchanged, rejects: Rejects
) -> None:
    assert unchanged(client.record_post_ack, swapping, "n3") is False
    assert unchanged(client.record_post_ack, swapping, "n3", success=False, error="x") is False
    assert task_of(client, swapping).post_acks == {}
    error = rejects(AcksMissing, client.finalize_task, swapping)
    assert sorted(error.nodes) == ["n1", "n2"]


def test_a_node_that_lost_its_only_unit_is_not_expected(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged, rejects: Rejects
) -> None:
    # n2's claim of the moved unit must hold until it completes it: over half a second.
    ref = client.add_task(namespace, "moved", units=["a", "b"], ack_barrier=True, lease_ms=600)
    client.claim_unit(ref, "n1", "a")
    time.sleep(0.65)
    client.claim_unit(ref, "n2", "a")  # n1's lease ran out; the unit moved to n2
    client.complete_unit(ref, "n2", "a")
    client.complete_unit(ref, "n3", "b")
    assert unchanged(client.record_post_ack, ref, "n1") is False
    missing = rejects(AcksMissing, client.finalize_task, ref).nodes
    assert sorted(missing) == ["n2", "n3"]
    assert client.record_post_ack(ref, "n2") is True
    assert client.record_post_ack(ref, "n3") is True
    assert client.finalize_task(ref) is True


# --- rule 17: the first ack wins ---


def test_the_first_ack_per_node_and_phase_wins(
    client: dtaskq.Client, swapping: TaskRef, unchanged: Unchanged
) -> None:
    assert client.record_post_ack(swapping, "n1") is True
    first = task_of(client, swapping).post_acks["n1"]
    assert first.success is True and first.error == ""
    time.sleep(0.002)
    assert unchanged(client.record_post_ack, swapping, "n1") is False
    assert unchanged(client.record_post_ack, swapping, "n1", success=False, error="no") is False
    task = task_of(client, swapping)
    assert task.status is TaskStatus.SWAPPING
    assert task.post_acks == {"n1": first}


def test_a_failed_first_ack_is_not_overwritten(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = add_owned(client, namespace, "early", ack_barrier=True)
    assert client.record_post_ack(ref, "n2", success=False, error="bad") is True
    assert unchanged(client.record_post_ack, ref, "n2") is False
    ack = task_of(client, ref).post_acks["n2"]
    assert (ack.success, ack.error) == (False, "bad")


# --- rule 20: finalize ---


def test_finalize_with_missing_acks_lists_them(
    client: dtaskq.Client, swapping: TaskRef, rejects: Rejects
) -> None:
    error = rejects(AcksMissing, client.finalize_task, swapping)
    assert sorted(error.nodes) == ["n1", "n2"]
    assert (error.namespace, error.task_id, error.version) == (
        swapping.namespace,
        swapping.task_id,
        swapping.version,
    )
    client.record_post_ack(swapping, "n2")
    assert rejects(AcksMissing, client.finalize_task, swapping).nodes == ("n1",)
    assert status(client, swapping) is TaskStatus.SWAPPING


def test_finalize_after_every_post_ack_finishes_once(
    client: dtaskq.Client, swapping: TaskRef, unchanged: Unchanged
) -> None:
    assert client.record_post_ack(swapping, "n2") is True
    assert client.record_post_ack(swapping, "n1") is True
    assert status(client, swapping) is TaskStatus.SWAPPING  # acks alone do not finish
    assert client.finalize_task(swapping) is True
    task = task_of(client, swapping)
    assert task.status is TaskStatus.FINISHED and task.error == ""
    assert task.finished_at is not None
    time.sleep(0.002)
    assert unchanged(client.finalize_task, swapping) is False
    assert task_of(client, swapping).finished_at == task.finished_at


def test_finalize_on_a_task_that_is_not_swapping_is_rejected(
    client: dtaskq.Client, namespace: str, preparing: TaskRef, rejects: Rejects
) -> None:
    started = add_owned(client, namespace, "started", ack_barrier=True)
    rejects(TaskNotFinalizing, client.finalize_task, started)
    rejects(TaskNotFinalizing, client.finalize_task, preparing)
    cancelled = add_owned(client, namespace, "cancelled", ack_barrier=True)
    client.cancel_task(cancelled)
    rejects(TaskNotFinalizing, client.finalize_task, cancelled)
    failed = add_owned(client, namespace, "failed", ack_barrier=True)
    client.fail_unit(failed, "n1", "a", "x")
    rejects(TaskNotFinalizing, client.finalize_task, failed)
    plain = client.add_task(namespace, "plain", units=["a"])
    rejects(TaskNotFinalizing, client.finalize_task, plain)


def test_a_task_without_barrier_finishes_and_finalize_is_a_no_op(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "plain", units=["a"])
    client.complete_unit(ref, "n1", "a")
    assert status(client, ref) is TaskStatus.FINISHED
    assert unchanged(client.finalize_task, ref) is False


# --- prepare barrier ---


@pytest.mark.parametrize("order", [("n1", "n2"), ("n2", "n1")])
def test_all_prepare_acks_move_to_swapping_in_any_order(
    client: dtaskq.Client, preparing: TaskRef, order: tuple[str, str]
) -> None:
    assert client.record_prepare_ack(preparing, order[0]) is True
    assert status(client, preparing) is TaskStatus.PREPARING
    assert client.record_prepare_ack(preparing, order[1]) is True
    assert status(client, preparing) is TaskStatus.SWAPPING
    with pytest.raises(AcksMissing):
        client.finalize_task(preparing)
    client.record_post_ack(preparing, order[1])
    client.record_post_ack(preparing, order[0])
    assert client.finalize_task(preparing) is True
    task = task_of(client, preparing)
    assert task.status is TaskStatus.FINISHED
    assert set(task.prepare_acks) == set(task.post_acks) == {"n1", "n2"}


def test_post_acks_during_preparing_count_later(client: dtaskq.Client, preparing: TaskRef) -> None:
    assert client.record_post_ack(preparing, "n1") is True
    assert client.record_post_ack(preparing, "n2") is True
    assert status(client, preparing) is TaskStatus.PREPARING
    client.record_prepare_ack(preparing, "n1")
    client.record_prepare_ack(preparing, "n2")
    assert client.finalize_task(preparing) is True


def test_failed_prepare_ack_fails_the_task(
    client: dtaskq.Client, preparing: TaskRef, unchanged: Unchanged
) -> None:
    client.record_prepare_ack(preparing, "n2")
    assert client.record_prepare_ack(preparing, "n1", success=False, error="disk full") is True
    task = task_of(client, preparing)
    assert task.status is TaskStatus.FAILED
    assert task.error == "prepare failed on node n1: disk full"
    assert task.finished_at is not None
    assert task.prepare_acks["n1"].success is False
    assert task.prepare_acks["n1"].error == "disk full"
    # Any later ack on the failed task is dropped.
    assert unchanged(client.record_post_ack, preparing, "n2") is False
    assert unchanged(client.record_prepare_ack, preparing, "n1") is False


def test_failed_post_ack_fails_the_task(
    client: dtaskq.Client, swapping: TaskRef, rejects: Rejects
) -> None:
    client.record_post_ack(swapping, "n1")
    assert client.record_post_ack(swapping, "n2", success=False, error="swap broke") is True
    task = task_of(client, swapping)
    assert task.status is TaskStatus.FAILED
    assert task.error == "post-completion failed on node n2: swap broke"
    assert task.finished_at is not None
    rejects(TaskNotFinalizing, client.finalize_task, swapping)


def test_failed_ack_while_started_fails_the_task_at_once(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = add_owned(client, namespace, "early", prepare_barrier=True)
    assert client.record_prepare_ack(ref, "n2", success=False, error="no room") is True
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED
    assert task.error == "prepare failed on node n2: no room"


# --- rule 19: acks out of their phase ---


def test_late_prepare_ack_in_swapping_is_dropped(
    client: dtaskq.Client, swapping: TaskRef, unchanged: Unchanged
) -> None:
    assert unchanged(client.record_prepare_ack, swapping, "n1") is False
    assert unchanged(client.record_prepare_ack, swapping, "n2", success=False, error="x") is False
    task = task_of(client, swapping)
    assert task.status is TaskStatus.SWAPPING and task.prepare_acks == {}


def test_failed_prepare_ack_after_preparing_is_dropped(
    client: dtaskq.Client, preparing: TaskRef, unchanged: Unchanged
) -> None:
    client.record_prepare_ack(preparing, "n1")
    client.record_prepare_ack(preparing, "n2")
    assert status(client, preparing) is TaskStatus.SWAPPING
    assert unchanged(client.record_prepare_ack, preparing, "n1", success=False, error="x") is False
    assert status(client, preparing) is TaskStatus.SWAPPING


@pytest.mark.parametrize("end", ["finished", "cancelled", "failed"])
def test_any_ack_on_a_terminal_task_is_dropped(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged, end: str
) -> None:
    ref = add_owned(client, namespace, "done", prepare_barrier=True)
    if end == "cancelled":
        client.cancel_task(ref)
    elif end == "failed":
        client.fail_unit(ref, "n1", "a", "x")
    else:
        complete_all(client, ref)
        for node in ("n1", "n2"):
            client.record_prepare_ack(ref, node)
            client.record_post_ack(ref, node)
        client.finalize_task(ref)
    before = task_of(client, ref)
    assert before.status.is_terminal
    for record in (client.record_prepare_ack, client.record_post_ack):
        for node in ("n1", "n2", "n3"):
            assert unchanged(record, ref, node) is False
            assert unchanged(record, ref, node, success=False, error="late") is False
    assert task_of(client, ref) == before


# --- acks recorded early ---


def test_prepare_acks_recorded_while_started_count_when_preparing(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = add_owned(client, namespace, "early", prepare_barrier=True)
    assert client.record_prepare_ack(ref, "n1") is True
    assert client.record_prepare_ack(ref, "n2") is True
    assert status(client, ref) is TaskStatus.STARTED
    complete_all(client, ref)
    # Every expected prepare ack is in: PREPARING is passed through at once.
    assert status(client, ref) is TaskStatus.SWAPPING


def test_some_prepare_acks_recorded_early_and_the_rest_later(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = add_owned(client, namespace, "early", prepare_barrier=True)
    assert client.record_prepare_ack(ref, "n2") is True
    complete_all(client, ref)
    assert status(client, ref) is TaskStatus.PREPARING
    assert client.record_prepare_ack(ref, "n1") is True
    assert status(client, ref) is TaskStatus.SWAPPING


def test_post_acks_recorded_while_started_count_at_finalize(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = add_owned(client, namespace, "early", ack_barrier=True)
    assert client.record_post_ack(ref, "n1") is True
    assert client.record_post_ack(ref, "n2") is True
    complete_all(client, ref)
    assert status(client, ref) is TaskStatus.SWAPPING  # finalize is still an explicit step
    assert client.finalize_task(ref) is True
    assert status(client, ref) is TaskStatus.FINISHED
