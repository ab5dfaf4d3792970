"""Task.units_finished_at: set once, when the last unit becomes terminal; finished_at marks the
terminal status (docs/rules.md rule 15), with and without barriers, for named and range
tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from support import Rejects

import dtaskq
from dtaskq import TaskNotRunning, TaskRef, TaskStatus


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


def times(client: dtaskq.Client, ref: TaskRef) -> tuple[datetime | None, datetime | None]:
    """(units_finished_at, finished_at) as get_task, task_view and list_tasks all show them."""
    task = task_of(client, ref)
    view = client.task_view(ref.namespace, ref.task_id, "any-node")
    assert view is not None
    listed = {t.task_id: t for t in client.list_tasks(ref.namespace)[ref.namespace]}
    for other in (view.task, listed[ref.task_id]):
        assert (other.units_finished_at, other.finished_at) == (
            task.units_finished_at,
            task.finished_at,
        )
    return task.units_finished_at, task.finished_at


def make(client: dtaskq.Client, namespace: str, kind: str, **options: Any) -> TaskRef:
    """A task of three units, named a, b, c or range 0, 1, 2."""
    if kind == "named":
        return client.add_task(namespace, kind, units=["a", "b", "c"], **options)
    return client.add_task(namespace, kind, unit_count=3, **options)


def unit_ids(kind: str) -> list[Any]:
    return ["a", "b", "c"] if kind == "named" else [0, 1, 2]


KINDS = ["named", "range"]


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_barrier_both_are_the_moment_the_last_unit_completed(
    client: dtaskq.Client, namespace: str, kind: str
) -> None:
    ref = make(client, namespace, kind)
    first, second, last = unit_ids(kind)
    client.complete_unit(ref, "n1", first)
    client.complete_unit(ref, "n2", second)
    assert times(client, ref) == (None, None)
    client.complete_unit(ref, "n1", last)
    units_finished, finished = times(client, ref)
    assert units_finished is not None and units_finished == finished
    assert task_of(client, ref).status is TaskStatus.FINISHED
    client.complete_unit(ref, "n1", last)  # an identical retry changes neither
    assert times(client, ref) == (units_finished, finished)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("barrier", ["ack_barrier", "prepare_barrier"])
def test_with_a_barrier_units_finish_first_and_the_task_later(
    client: dtaskq.Client, namespace: str, kind: str, barrier: str
) -> None:
    """In PREPARING and SWAPPING units_finished_at is set and finished_at is not; finalize
    sets finished_at, at or after units_finished_at, which does not move."""
    ref = make(client, namespace, kind, **{barrier: True})
    for unit, node in zip(unit_ids(kind), ("n1", "n2", "n1"), strict=True):
        assert times(client, ref)[0] is None
        client.complete_unit(ref, node, unit)
    units_finished, finished = times(client, ref)
    assert units_finished is not None and finished is None
    if barrier == "prepare_barrier":
        assert task_of(client, ref).status is TaskStatus.PREPARING
        client.record_prepare_ack(ref, "n1")
        client.record_prepare_ack(ref, "n2")
    assert task_of(client, ref).status is TaskStatus.SWAPPING
    assert times(client, ref) == (units_finished, None)
    client.record_post_ack(ref, "n1")
    client.record_post_ack(ref, "n2")
    assert client.finalize_task(ref) is True
    again, finished = times(client, ref)
    assert again == units_finished
    assert finished is not None and units_finished <= finished


def test_a_failed_ack_after_the_units_keeps_their_time(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = make(client, namespace, "named", ack_barrier=True)
    for unit in unit_ids("named"):
        client.complete_unit(ref, "n1", unit)
    units_finished, _ = times(client, ref)
    assert client.record_post_ack(ref, "n1", success=False, error="swap failed") is True
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED
    assert task.units_finished_at == units_finished
    assert task.finished_at is not None and units_finished is not None
    assert units_finished <= task.finished_at


@pytest.mark.parametrize("kind", KINDS)
def test_failing_fast_with_units_in_flight_leaves_it_unset(
    client: dtaskq.Client, namespace: str, kind: str, rejects: Rejects
) -> None:
    """Rule 13: the task fails at once; units still in flight never become terminal, so
    units_finished_at stays unset while finished_at is set."""
    ref = make(client, namespace, kind)
    first, second, third = unit_ids(kind)
    client.complete_unit(ref, "n1", first)
    client.claim_unit(ref, "n2", second)
    assert client.fail_unit(ref, "n1", third, "boom") is False
    units_finished, finished = times(client, ref)
    assert units_finished is None and finished is not None
    rejects(TaskNotRunning, client.complete_unit, ref, "n2", second)
    assert times(client, ref) == (None, finished)


@pytest.mark.parametrize("kind", KINDS)
def test_a_final_failure_of_the_last_unit_sets_both(
    client: dtaskq.Client, namespace: str, kind: str
) -> None:
    """The last unit's final failure is the moment every unit became terminal: both times are
    that moment."""
    ref = make(client, namespace, kind)
    first, second, last = unit_ids(kind)
    client.complete_unit(ref, "n1", first)
    client.complete_unit(ref, "n2", second)
    assert client.fail_unit(ref, "n1", last, "boom") is False
    units_finished, finished = times(client, ref)
    assert units_finished is not None and units_finished == finished
    assert task_of(client, ref).status is TaskStatus.FAILED


@pytest.mark.parametrize("kind", KINDS)
def test_a_retryable_failure_of_the_last_unit_is_not_its_end(
    client: dtaskq.Client, namespace: str, kind: str
) -> None:
    ref = make(client, namespace, kind, max_attempts=2, retry_backoff_ms=0)
    first, second, last = unit_ids(kind)
    client.complete_unit(ref, "n1", first)
    client.complete_unit(ref, "n1", second)
    token = client.claim_unit(ref, "n2", last)
    assert client.fail_unit(ref, "n2", last, "flaky", token, retryable=True) is True
    assert times(client, ref) == (None, None)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancelled_task_has_no_units_finished_at(
    client: dtaskq.Client, namespace: str, kind: str
) -> None:
    ref = make(client, namespace, kind)
    client.complete_unit(ref, "n1", unit_ids(kind)[0])
    client.cancel_task(ref)
    units_finished, finished = times(client, ref)
    assert units_finished is None and finished is not None


def test_a_new_version_starts_without_it(client: dtaskq.Client, namespace: str) -> None:
    ref = make(client, namespace, "named")
    for unit in unit_ids("named"):
        client.complete_unit(ref, "n1", unit)
    assert times(client, ref)[0] is not None
    again = make(client, namespace, "named")
    assert again.version > ref.version
    assert times(client, again) == (None, None)
