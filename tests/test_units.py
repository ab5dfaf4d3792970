"""Claims, progress, completion, fail-fast and retries of named units (docs/rules.md rules 6-15),
and the parity of the async client with the sync one."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

import pytest
from support import Rejects, Unchanged, unit_of

import dtaskq
from dtaskq import (
    ClaimStatus,
    InvalidArgument,
    LeaseLost,
    TaskDoesNotExist,
    TaskNotRunning,
    TaskRef,
    TaskStatus,
    UnitAlreadyTerminal,
    UnitNotReady,
    UnitStatus,
    UnitWrongNode,
)


def task_of(client: dtaskq.Client, ref: TaskRef) -> dtaskq.Task:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task


@pytest.fixture
def ref(client: dtaskq.Client, namespace: str) -> TaskRef:
    """A STARTED task with three unassigned units a, b, c."""
    return client.add_task(namespace, "t1", units=["a", "b", "c"])


def report(client: dtaskq.Client, kind: str) -> Callable[..., Any]:
    """One of the three unit reports, called as ``fn(ref, node, unit, token)``."""
    if kind == "progress":
        return lambda ref, node, u, token: client.update_progress(ref, node, u, 0.5, token)
    if kind == "complete":
        return lambda ref, node, u, token: client.complete_unit(ref, node, u, token)
    return lambda ref, node, u, token: client.fail_unit(ref, node, u, "boom", token)


REPORTS = ["progress", "complete", "fail"]


# --- rule 6: claims ---


def test_first_claimer_wins(client: dtaskq.Client, ref: TaskRef, rejects: Rejects) -> None:
    assert client.claim_unit(ref, "n1", "a") == 1
    error = rejects(UnitWrongNode, client.claim_unit, ref, "n2", "a")
    assert (error.namespace, error.task_id, error.version) == (ref.namespace, "t1", ref.version)
    assert (error.unit, error.node) == ("a", "n2")
    a = unit_of(client, ref, "a")
    assert (a.status, a.node, a.attempt) == (UnitStatus.IN_PROGRESS, "n1", 1)
    assert a.lease_expires_at is not None and a.lease_expires_at > a.updated_at
    assert unit_of(client, ref, "b").status is UnitStatus.PENDING


def test_holder_claiming_again_gets_the_same_token_and_a_renewed_lease(
    client: dtaskq.Client, ref: TaskRef
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    first = unit_of(client, ref, "a")
    time.sleep(0.005)
    assert client.claim_unit(ref, "n1", "a") == token
    again = unit_of(client, ref, "a")
    assert (again.node, again.attempt, again.status) == ("n1", token, UnitStatus.IN_PROGRESS)
    assert again.lease_expires_at > first.lease_expires_at


def test_first_progress_report_without_token_claims_the_unit(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    assert client.update_progress(ref, "n1", "a", 0.25) == 1
    a = unit_of(client, ref, "a")
    assert (a.status, a.node, a.attempt, a.progress) == (UnitStatus.IN_PROGRESS, "n1", 1, 0.25)
    assert a.lease_expires_at is not None
    # The claim is real: another node can no longer take the unit.
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "a")
    assert client.claim_unit(ref, "n1", "a") == 1


# --- rule 7: ownership and tokens ---


@pytest.mark.parametrize("kind", REPORTS)
@pytest.mark.parametrize("with_token", [True, False])
def test_report_from_another_node_is_rejected(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects, kind: str, with_token: bool
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    error = rejects(
        UnitWrongNode, report(client, kind), ref, "n2", "a", token if with_token else None
    )
    assert (error.unit, error.node) == ("a", "n2")
    assert unit_of(client, ref, "a").node == "n1"


@pytest.mark.parametrize("kind", REPORTS)
def test_wrong_token_of_the_holder_is_lease_lost(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects, kind: str
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    rejects(LeaseLost, report(client, kind), ref, "n1", "a", token + 1)
    # A token on a unit nobody claimed yet names no claim either.
    rejects(LeaseLost, report(client, kind), ref, "n1", "b", 1)


def test_old_token_after_lease_expiry_is_lease_lost(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    # Each claim of n2 gets the same short lease: long enough for the checks that follow it
    # on a loaded machine.
    ref = client.add_task(namespace, "short", units=REPORTS, lease_ms=500)
    old = {kind: client.claim_unit(ref, "n1", kind) for kind in REPORTS}
    time.sleep(0.53)
    for kind in REPORTS:  # one unit per kind of report
        # Expired but not yet claimed again: the unit is free, the old token is dead.
        rejects(LeaseLost, report(client, kind), ref, "n1", kind, old[kind])
        # The same node claims it again under a new token; the old one stays dead.
        new = client.claim_unit(ref, "n1", kind)
        assert new == old[kind] + 1
        rejects(LeaseLost, report(client, kind), ref, "n1", kind, old[kind])
        assert unit_of(client, ref, kind).attempt == new


def test_old_holder_after_another_node_reclaimed_is_wrong_node(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    # The node is checked before the token, so once another node holds the unit the old
    # holder's stale report is UnitWrongNode (its heartbeat says LOST: test_leases).
    # Each claim of n2 gets the same short lease: long enough for the checks that follow it
    # on a loaded machine.
    ref = client.add_task(namespace, "short", units=REPORTS, lease_ms=500)
    old = {kind: client.claim_unit(ref, "n1", kind) for kind in REPORTS}
    time.sleep(0.53)
    for kind in REPORTS:
        assert client.claim_unit(ref, "n2", kind) == old[kind] + 1
        rejects(UnitWrongNode, report(client, kind), ref, "n1", kind, old[kind])
        u = unit_of(client, ref, kind)
        assert (u.node, u.attempt, u.status) == ("n2", old[kind] + 1, UnitStatus.IN_PROGRESS)


# --- rule 8: progress values, monotonic progress ---


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_progress_outside_0_1_is_invalid_before_anything_else(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects, bad: object
) -> None:
    rejects(InvalidArgument, client.update_progress, ref, "n1", "a", bad)
    # Checked first: even a call naming no task at all reports the bad value.
    missing = TaskRef(ref.namespace, "nope", 7)
    rejects(InvalidArgument, client.update_progress, missing, "n1", "zz", bad)


def test_progress_is_monotonic_but_a_lower_report_still_counts(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.update_progress(ref, "n1", "a", 0.6)
    first = unit_of(client, ref, "a")
    time.sleep(0.005)
    assert client.update_progress(ref, "n1", "a", 0.3, token) == token
    second = unit_of(client, ref, "a")
    assert second.progress == 0.6
    assert second.updated_at > first.updated_at
    assert second.lease_expires_at > first.lease_expires_at
    # Ownership applies to a lower report as well.
    rejects(UnitWrongNode, client.update_progress, ref, "n2", "a", 0.1)
    rejects(LeaseLost, client.update_progress, ref, "n1", "a", 0.1, token + 1)
    assert client.update_progress(ref, "n1", "a", 0.9, token) == token
    assert unit_of(client, ref, "a").progress == 0.9


def test_lower_progress_on_a_free_unit_claims_it(client: dtaskq.Client, ref: TaskRef) -> None:
    assert client.update_progress(ref, "n1", "a", 0.0) == 1
    a = unit_of(client, ref, "a")
    assert (a.node, a.status, a.progress) == ("n1", UnitStatus.IN_PROGRESS, 0.0)


# --- rule 9: progress on a terminal unit while the task runs ---


def test_progress_on_a_terminal_unit_of_a_started_task_is_ignored(
    client: dtaskq.Client, ref: TaskRef, unchanged: Unchanged
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "a", token)
    assert unchanged(client.update_progress, ref, "n1", "a", 0.2, token) is None
    assert unchanged(client.update_progress, ref, "n1", "a", 0.2) is None
    # Ignored whoever reports: no ownership check on a unit that is done.
    assert unchanged(client.update_progress, ref, "n2", "a", 0.2, token + 5) is None
    assert task_of(client, ref).status is TaskStatus.STARTED
    assert unit_of(client, ref, "a").progress == 1.0


# --- rule 10: reports on a task that is not STARTED ---


def test_reports_on_a_cancelled_task_are_not_running(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.cancel_task(ref)
    for kind in REPORTS:
        error = rejects(TaskNotRunning, report(client, kind), ref, "n1", "a", token)
        assert error.unit == "a"
        rejects(TaskNotRunning, report(client, kind), ref, "n2", "b", None)
    rejects(TaskNotRunning, client.claim_unit, ref, "n2", "b")


def test_reports_on_a_failed_task_are_not_running(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.fail_unit(ref, "n2", "b", "broken")
    for kind in REPORTS:
        rejects(TaskNotRunning, report(client, kind), ref, "n1", "a", token)
        rejects(TaskNotRunning, report(client, kind), ref, "n3", "c", None)
    rejects(TaskNotRunning, client.claim_unit, ref, "n3", "c")


def test_reports_on_a_swapping_task_are_not_running(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "swap", units=["a", "b"], ack_barrier=True)
    ta = client.claim_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "a", ta)
    tb = client.complete_unit(ref, "n2", "b")
    assert task_of(client, ref).status is TaskStatus.SWAPPING
    for kind in REPORTS:
        rejects(TaskNotRunning, report(client, kind), ref, "n2", "a", None)
        rejects(TaskNotRunning, report(client, kind), ref, "n1", "a", ta + 1)
    rejects(TaskNotRunning, client.update_progress, ref, "n1", "a", 0.5, ta)
    rejects(TaskNotRunning, client.fail_unit, ref, "n2", "b", "late", tb)
    # Still rule 12: the identical retry of the completion itself succeeds.
    assert unchanged(client.complete_unit, ref, "n2", "b", tb) == tb


# --- rule 11: unknown task, version or unit ---


def test_unknown_unit_task_or_version_does_not_exist(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    newer = dataclasses.replace(ref, version=ref.version + 1)
    other = dataclasses.replace(ref, task_id="nope")
    for target, unit_id in [(ref, "zz"), (newer, "a"), (other, "a")]:
        error = rejects(TaskDoesNotExist, client.claim_unit, target, "n1", unit_id)
        assert (error.task_id, error.version, error.unit) == (
            target.task_id,
            target.version,
            unit_id,
        )
        for kind in REPORTS:
            rejects(TaskDoesNotExist, report(client, kind), target, "n1", unit_id, None)
            rejects(TaskDoesNotExist, report(client, kind), target, "n1", unit_id, token)


def test_task_in_a_namespace_that_never_had_one_does_not_exist(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    # Rejected without registering the namespace (rejects() sees no key written).
    ghost = TaskRef(namespace, "t", 1)
    rejects(TaskDoesNotExist, client.claim_unit, ghost, "n1", "a")
    for kind in REPORTS:
        rejects(TaskDoesNotExist, report(client, kind), ghost, "n1", "a", None)


def test_previous_version_does_not_exist_after_re_add(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.cancel_task(ref)
    new = client.add_task(ref.namespace, ref.task_id, units=["a"])
    assert new.version > ref.version
    rejects(TaskDoesNotExist, client.claim_unit, ref, "n1", "a")
    for kind in REPORTS:
        rejects(TaskDoesNotExist, report(client, kind), ref, "n1", "a", token)
    assert unit_of(client, new, "a").status is UnitStatus.PENDING


# --- rule 12: completion ---


def test_complete_sets_completed_progress_and_finished_at(
    client: dtaskq.Client, ref: TaskRef
) -> None:
    token = client.update_progress(ref, "n1", "a", 0.4)
    assert client.complete_unit(ref, "n1", "a", token) == token
    a = unit_of(client, ref, "a")
    assert (a.status, a.progress, a.node, a.attempt) == (UnitStatus.COMPLETED, 1.0, "n1", token)
    assert a.finished_at is not None and a.finished_at == a.updated_at
    assert a.lease_expires_at is None
    task = task_of(client, ref)
    assert task.status is TaskStatus.STARTED and task.finished_at is None
    assert task.counts[UnitStatus.COMPLETED] == 1


def test_completing_an_unassigned_unit_assigns_it_to_the_reporter(
    client: dtaskq.Client, ref: TaskRef
) -> None:
    assert client.complete_unit(ref, "n2", "b") == 1
    b = unit_of(client, ref, "b")
    assert (b.status, b.node, b.attempt) == (UnitStatus.COMPLETED, "n2", 1)


def test_completing_a_completed_unit_again_is_already_terminal(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "a", token)
    error = rejects(UnitAlreadyTerminal, client.complete_unit, ref, "n2", "a", None)
    assert (error.unit, error.node) == ("a", "n2")
    rejects(UnitAlreadyTerminal, client.complete_unit, ref, "n2", "a", token)
    rejects(UnitAlreadyTerminal, client.complete_unit, ref, "n1", "a", token + 1)
    rejects(UnitAlreadyTerminal, client.claim_unit, ref, "n1", "a")
    rejects(UnitAlreadyTerminal, client.claim_unit, ref, "n2", "a")
    # Not the same outcome: failing a completed unit is no retry of its completion.
    rejects(UnitAlreadyTerminal, client.fail_unit, ref, "n1", "a", "late", token)
    assert task_of(client, ref).status is TaskStatus.STARTED


def test_completing_a_failed_unit_is_rejected(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    # A failed unit always fails its task (rule 13), and the task status is checked first
    # (rule 10), so the rejection is TaskNotRunning rather than UnitAlreadyTerminal.
    token = client.claim_unit(ref, "n1", "a")
    client.fail_unit(ref, "n1", "a", "broken", token)
    rejects(TaskNotRunning, client.complete_unit, ref, "n1", "a", token)
    rejects(TaskNotRunning, client.complete_unit, ref, "n1", "a", None)
    rejects(TaskNotRunning, client.complete_unit, ref, "n2", "a", None)
    assert unit_of(client, ref, "a").status is UnitStatus.FAILED


def test_identical_completion_retry_succeeds_unchanged(
    client: dtaskq.Client, ref: TaskRef, unchanged: Unchanged
) -> None:
    token = client.claim_unit(ref, "n1", "a")
    client.complete_unit(ref, "n1", "a", token)
    assert unchanged(client.complete_unit, ref, "n1", "a", token) == token
    assert unchanged(client.complete_unit, ref, "n1", "a", None) == token
    # A completion without token retried with none, on a unit it claimed by completing.
    assert client.complete_unit(ref, "n2", "b") == 1
    assert unchanged(client.complete_unit, ref, "n2", "b") == 1


def test_identical_retry_of_the_completion_that_finished_the_task(
    client: dtaskq.Client, namespace: str, unchanged: Unchanged, rejects: Rejects
) -> None:
    ref = client.add_task(namespace, "one", units=["a"])
    token = client.claim_unit(ref, "n1", "a")
    assert client.complete_unit(ref, "n1", "a", token) == token
    task = task_of(client, ref)
    assert task.status is TaskStatus.FINISHED and task.finished_at is not None
    assert unchanged(client.complete_unit, ref, "n1", "a", token) == token
    assert unchanged(client.complete_unit, ref, "n1", "a", None) == token
    # Not identical: another node, or another token, on a finished task.
    rejects(TaskNotRunning, client.complete_unit, ref, "n2", "a", token)
    rejects(TaskNotRunning, client.complete_unit, ref, "n1", "a", token + 1)


# --- rule 13: fail-fast ---


def test_one_failure_fails_the_task_at_once(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects, unchanged: Unchanged
) -> None:
    ta = client.claim_unit(ref, "n1", "a")
    tb = client.update_progress(ref, "n2", "b", 0.3)
    assert client.fail_unit(ref, "n1", "a", "disk full", ta) is False
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED
    assert task.error == "unit a failed: disk full"
    assert task.finished_at is not None
    a = task.units["a"]
    assert (a.status, a.error, a.node, a.attempt) == (UnitStatus.FAILED, "disk full", "n1", 1)
    assert a.finished_at == task.finished_at
    # The other units are not waited for: b is left as it was, c never ran.
    assert (task.units["b"].status, task.units["b"].progress) == (UnitStatus.IN_PROGRESS, 0.3)
    assert task.units["c"].status is UnitStatus.PENDING
    # Their holders learn it from their next report or heartbeat.
    for kind in REPORTS:
        rejects(TaskNotRunning, report(client, kind), ref, "n2", "b", tb)
    rejects(TaskNotRunning, client.claim_unit, ref, "n3", "c")
    assert unchanged(client.heartbeat, "n2", [(ref, "b", tb)]) == [ClaimStatus.NOT_RUNNING]
    # The identical retry of the failure succeeds unchanged (rule 12's retry safety).
    assert unchanged(client.fail_unit, ref, "n1", "a", "disk full", ta) is False
    assert unchanged(client.fail_unit, ref, "n1", "a", "disk full", None) is False


def test_failing_an_unassigned_unit_assigns_and_fails_it(
    client: dtaskq.Client, ref: TaskRef
) -> None:
    assert client.fail_unit(ref, "n3", "c", "nope") is False
    task = task_of(client, ref)
    assert task.units["c"].node == "n3" and task.units["c"].attempt == 1
    assert task.error == "unit c failed: nope"


# --- rule 15: finished_at is set once ---


def test_finished_at_of_a_finished_task_never_changes(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    ref = client.add_task(namespace, "fin", units=["a", "b"])
    client.complete_unit(ref, "n1", "a")
    assert task_of(client, ref).finished_at is None
    token = client.complete_unit(ref, "n1", "b")
    finished_at = task_of(client, ref).finished_at
    assert finished_at is not None
    time.sleep(0.005)
    rejects(TaskNotRunning, client.cancel_task, ref)
    unchanged(client.complete_unit, ref, "n1", "b", token)
    rejects(TaskNotRunning, client.fail_unit, ref, "n2", "b", "late")
    assert task_of(client, ref).finished_at == finished_at


def test_finished_at_of_a_failed_task_never_changes(
    client: dtaskq.Client, ref: TaskRef, rejects: Rejects
) -> None:
    tb = client.claim_unit(ref, "n2", "b")
    client.fail_unit(ref, "n1", "a", "first")
    task = task_of(client, ref)
    time.sleep(0.005)
    rejects(TaskNotRunning, client.fail_unit, ref, "n2", "b", "second", tb)
    rejects(TaskNotRunning, client.cancel_task, ref)
    again = task_of(client, ref)
    assert (again.finished_at, again.error) == (task.finished_at, "unit a failed: first")


# --- rule 14: retries ---


@pytest.fixture
def retried(client: dtaskq.Client, namespace: str) -> TaskRef:
    """A task whose units may be tried three times, 20 ms backoff after the first failure."""
    return client.add_task(namespace, "r", units=["u", "v"], max_attempts=3, retry_backoff_ms=20)


def test_retryable_failure_backs_off_then_another_node_retries(
    client: dtaskq.Client, namespace: str, rejects: Rejects, unchanged: Unchanged
) -> None:
    # A backoff long enough for the checks below to run inside it even on a busy machine.
    ref = client.add_task(namespace, "r", units=["u"], max_attempts=3, retry_backoff_ms=250)
    t1 = client.claim_unit(ref, "n1", "u")
    assert client.fail_unit(ref, "n1", "u", "flaky", t1, retryable=True) is True
    task = task_of(client, ref)
    u = task.units["u"]
    assert task.status is TaskStatus.STARTED and task.finished_at is None
    assert (u.status, u.node, u.attempt, u.error) == (UnitStatus.PENDING, None, 1, "flaky")
    assert u.lease_expires_at is None
    assert u.ready_at is not None and u.ready_at - u.updated_at == timedelta(milliseconds=250)
    # Identical retry of the retryable failure: same answer, nothing changes.
    assert unchanged(client.fail_unit, ref, "n1", "u", "flaky", t1, retryable=True) is True
    # Backing off: not claimable yet, by any node, and no permanent rejection.
    error = rejects(UnitNotReady, client.claim_unit, ref, "n2", "u")
    assert not isinstance(error, dtaskq.PermanentRejection)
    rejects(UnitNotReady, client.claim_unit, ref, "n1", "u")
    rejects(UnitNotReady, client.update_progress, ref, "n2", "u", 0.1)
    rejects(UnitNotReady, client.complete_unit, ref, "n2", "u")
    # The old token is dead.
    rejects(LeaseLost, client.complete_unit, ref, "n1", "u", t1)
    time.sleep(0.27)
    t2 = client.claim_unit(ref, "n2", "u")
    assert t2 == 2
    u = unit_of(client, ref, "u")
    assert (u.status, u.node, u.attempt, u.ready_at) == (UnitStatus.IN_PROGRESS, "n2", 2, None)


def test_retries_exhausted_fail_the_task(client: dtaskq.Client, retried: TaskRef) -> None:
    ref = retried
    t1 = client.claim_unit(ref, "n1", "u")
    assert client.fail_unit(ref, "n1", "u", "e1", t1, retryable=True) is True
    time.sleep(0.03)
    t2 = client.claim_unit(ref, "n2", "u")
    assert client.fail_unit(ref, "n2", "u", "e2", t2, retryable=True) is True
    u = unit_of(client, ref, "u")
    assert u.ready_at - u.updated_at == timedelta(milliseconds=40)  # 20 ms * 2**(2-1)
    time.sleep(0.05)
    t3 = client.claim_unit(ref, "n3", "u")
    assert t3 == 3
    # Attempt 3 of 3: even a retryable failure is final.
    assert client.fail_unit(ref, "n3", "u", "e3", t3, retryable=True) is False
    task = task_of(client, ref)
    assert task.status is TaskStatus.FAILED and task.error == "unit u failed: e3"
    u = task.units["u"]
    assert (u.status, u.attempt, u.node, u.error) == (UnitStatus.FAILED, 3, "n3", "e3")
    assert task.finished_at is not None


def test_non_retryable_failure_is_final_even_with_attempts_left(
    client: dtaskq.Client, retried: TaskRef
) -> None:
    token = client.claim_unit(retried, "n1", "u")
    assert client.fail_unit(retried, "n1", "u", "fatal", token, retryable=False) is False
    task = task_of(client, retried)
    assert task.status is TaskStatus.FAILED and task.error == "unit u failed: fatal"
    assert task.units["u"].attempt == 1


def test_retryable_failure_without_retries_configured_is_final(
    client: dtaskq.Client, ref: TaskRef
) -> None:
    assert client.fail_unit(ref, "n1", "a", "flaky", retryable=True) is False
    assert task_of(client, ref).status is TaskStatus.FAILED


def test_sticky_retry_keeps_the_node(
    client: dtaskq.Client, namespace: str, rejects: Rejects
) -> None:
    ref = client.add_task(
        namespace,
        "s",
        units=["shard"],
        on_lease_expiry="sticky",
        max_attempts=2,
        retry_backoff_ms=10,
    )
    t1 = client.claim_unit(ref, "n1", "shard")
    assert client.fail_unit(ref, "n1", "shard", "flaky", t1, retryable=True) is True
    u = unit_of(client, ref, "shard")
    assert (u.status, u.node, u.attempt) == (UnitStatus.PENDING, "n1", 1)
    time.sleep(0.02)
    rejects(UnitWrongNode, client.claim_unit, ref, "n2", "shard")
    assert client.claim_unit(ref, "n1", "shard") == 2
    assert unit_of(client, ref, "shard").node == "n1"


# --- the async client does what the sync one does ---

Flow = Generator[tuple[str, tuple[Any, ...], dict[str, Any]], Any, None]


def core_flow(ns: str) -> Flow:
    """The core operations in order, as (method, args, kwargs); each step receives the
    result (or the DtaskqError raised). ("sleep", (seconds,), {}) pauses."""
    ref = yield ("add_task", (ns, "job"), {"units": ["a", "b"], "ack_barrier": True})
    tok = yield ("claim_unit", (ref, "n1", "a"), {})
    yield ("claim_unit", (ref, "n2", "a"), {})
    yield ("update_progress", (ref, "n1", "a", 0.5, tok), {})
    yield ("heartbeat", ("n1", [(ref, "a", tok), (ref, "b", 1)]), {})
    yield ("complete_unit", (ref, "n1", "a", tok), {})
    yield ("complete_unit", (ref, "n2", "b"), {})
    yield ("finalize_task", (ref,), {})
    yield ("record_post_ack", (ref, "n1"), {})
    yield ("record_post_ack", (ref, "n1"), {"success": False, "error": "dup"})
    yield ("record_prepare_ack", (ref, "n2"), {})
    yield ("record_post_ack", (ref, "n2"), {})
    yield ("finalize_task", (ref,), {})
    yield ("finalize_task", (ref,), {})
    yield ("get_task", (ns, "job"), {})
    failed = yield ("add_task", (ns, "f"), {"units": ["x"], "completed_ttl_ms": 0})
    yield ("fail_unit", (failed, "n1", "x", "boom"), {"retryable": True})
    cancelled = yield ("add_task", (ns, "c"), {"units": ["y"]})
    yield ("cancel_task", (cancelled,), {})
    yield ("cancel_task", (cancelled,), {})
    yield ("list_tasks", (ns,), {})
    yield ("sleep", (0.005,), {})
    yield ("cleanup_task", (failed,), {})
    yield ("cleanup_task", (cancelled,), {})
    yield ("get_task", (ns, "f"), {})
    yield ("sweep", (ns,), {})
    held = yield ("add_task", (ns, "r"), {"units": ["z"]})
    ztok = yield ("claim_unit", (held, "n1", "z"), {})
    yield ("release", ("n1", [(held, "z", ztok), (held, "y", 1)]), {})
    yield ("release", ("n1", [(held, "z", ztok)]), {})
    yield ("claim_unit", (held, "n2", "z"), {})
    yield ("get_task", (ns, "r"), {})


def normalized(value: Any, ns: str) -> Any:
    """A result with the namespace renamed and server times reduced to "set or not"."""
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, str):
        return "NS" if value == ns else value
    if isinstance(value, dtaskq.DtaskqError):
        fields = (value.task_id, value.version, value.unit, value.node)
        return (type(value).__name__, re.sub(r"\d+ ms", "N ms", str(value)), fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return (type(value).__name__, normalized(fields, ns))
    if isinstance(value, dict):
        return {normalized(k, ns): normalized(v, ns) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalized(v, ns) for v in value]
    return value


def run_sync(client: dtaskq.Client, ns: str) -> list[Any]:
    results: list[Any] = []
    flow = core_flow(ns)
    step = next(flow)
    while True:
        name, args, kwargs = step
        try:
            if name == "sleep":
                result: Any = time.sleep(*args)
            else:
                result = getattr(client, name)(*args, **kwargs)
        except dtaskq.DtaskqError as error:
            result = error
        results.append((name, normalized(result, ns)))
        try:
            step = flow.send(result)
        except StopIteration:
            return results


async def run_async(aclient: dtaskq.AsyncClient, ns: str) -> list[Any]:
    results: list[Any] = []
    flow = core_flow(ns)
    step = next(flow)
    while True:
        name, args, kwargs = step
        try:
            if name == "sleep":
                result: Any = await asyncio.sleep(*args)
            else:
                result = await getattr(aclient, name)(*args, **kwargs)
        except dtaskq.DtaskqError as error:
            result = error
        results.append((name, normalized(result, ns)))
        try:
            step = flow.send(result)
        except StopIteration:
            return results


async def test_async_client_matches_the_sync_client(
    client: dtaskq.Client, aclient: dtaskq.AsyncClient, namespace: str
) -> None:
    sync = run_sync(client, namespace + "-s")
    asyn = await run_async(aclient, namespace + "-a")
    assert asyn == sync
    results = [r for _, r in sync]
    # And the shared results are the right ones.
    assert results[0] == ("TaskRef", {"namespace": "NS", "task_id": "job", "version": 1})
    assert results[1] == 1
    assert results[2][0] == "UnitWrongNode"
    assert results[3] == 1
    assert results[4] == ["HELD", "LOST"]
    assert results[5:7] == [1, 1]
    assert results[7][0] == "AcksMissing"
    assert results[8:13] == [True, False, False, True, True]
    assert results[13] is False
    job = results[14][1]
    assert job["status"] == "FINISHED" and set(job["post_acks"]) == {"n1", "n2"}
    assert job["prepare_acks"] == {}  # a prepare ack in SWAPPING is dropped
    assert results[16] is False
    assert results[18] is None and results[19][0] == "TaskNotRunning"
    listed = results[20]["NS"]
    assert [t[1]["task_id"] for t in listed] == ["c", "f", "job"]
    assert results[22] is None and results[23][0] == "TaskTooFresh"
    assert results[24] is None
    assert results[25] == (
        "SweepResult",
        {"reclaimed": 0, "deleted": 0, "more": False, "locked_out": False, "next_lease_ms": None},
    )
    assert results[28:31] == [[True, False], [False], 2]
    released = results[31][1]
    assert released["nodes"] == {"n2": 1}
    assert released["units"]["z"][1]["node"] == "n2"
