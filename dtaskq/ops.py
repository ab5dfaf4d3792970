"""The operations of the task API as I/O-free steps: each validates its arguments, then
yields the script calls it needs and returns the decoded result. ``Client`` and
``AsyncClient`` drive the same steps, one with blocking calls and one with awaits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from . import keys, validate
from .calls import Call, Router, Steps, request_id
from .errors import InvalidArgument, TaskDoesNotExist
from .models import ClaimStatus, TaskRef
from .scripts import Function, function

DEFAULT_LEASE_MS = 30_000
DEFAULT_TTL_MS = 86_400_000
DEFAULT_RETRY_BACKOFF_MS = 1_000
DEFAULT_SWEEP_BATCH = 2_048
MAX_WORKERS_HINT = 100_000

_ADD = function("add_task")
_ADD_RANGE = function("add_range_task")
_PROGRESS = function("update_progress")
_COMPLETE = function("complete_unit")
_FAIL = function("fail_unit")
_HEARTBEAT = function("heartbeat")
_RELEASE = function("release")
_ACK = function("record_ack")
_FINALIZE = function("finalize_task")
_CANCEL = function("cancel_task")
_CLEANUP = function("cleanup_task")
_SWEEP = function("sweep")
_PING = function("ping")
_ANNOUNCE = function("announce_node")

_CLAIM_STATUSES = (ClaimStatus.HELD, ClaimStatus.LOST, ClaimStatus.NOT_RUNNING)


@dataclass(frozen=True)
class SweepResult:
    """What one bounded sweep call did; ``more`` is True when further items are already due."""

    reclaimed: int
    deleted: int
    more: bool
    locked_out: bool = field(default=False, compare=False)
    """Another sweeper held the partition's lock: this call swept nothing."""
    next_lease_ms: int | None = field(default=None, compare=False)
    """How long until the partition's earliest lease ends (None: no lease). Like
    ``locked_out``, it describes the partition rather than what the call did, so neither
    takes part in equality."""


def _token_arg(token: int | None) -> str:
    return "" if token is None else str(token)


def error_context(ref: TaskRef, **extra: Any) -> dict[str, Any]:
    return {"namespace": ref.namespace, "task_id": ref.task_id, "version": ref.version, **extra}


def task_call(
    router: Router, ref: TaskRef, fn: Function, args: list[Any], **ctx: Any
) -> Steps[Any]:
    """One call of a task function; the ARGV start with the task id and version."""
    part = yield from router.partition(ref.namespace, ref.task_id)
    if part is None:
        raise TaskDoesNotExist(
            f"namespace {ref.namespace} has no tasks", **error_context(ref, **ctx)
        )
    return (
        yield Call(
            fn,
            [part.task_key(ref.task_id)],
            [ref.task_id, str(ref.version), *args],
            error_context(ref, **ctx),
        )
    )


class TaskOptions(TypedDict, total=False):
    """Options of ``add_task``, with their defaults."""

    ack_barrier: bool
    """False. Completion waits in SWAPPING for a post ack from every owning node."""
    prepare_barrier: bool
    """False. Completion first waits in PREPARING for prepare acks; implies ack_barrier."""
    conflict_keys: Iterable[str]
    """(). Rejects the task while an active task of the namespace holds any of these keys."""
    lease_ms: int
    """30 000. How long a claim lasts without a heartbeat."""
    on_lease_expiry: str
    """"reassign" (any node may claim the unit again) or "sticky" (only its node may)."""
    max_attempts: int
    """1. Claims a unit may use; retryable failures come back until they are used up."""
    retry_backoff_ms: int
    """1 000. A retried unit waits ``retry_backoff_ms * 2**(attempt-1)`` (at most an hour)."""
    completed_ttl_ms: int
    """86 400 000. How long a terminal task is kept before cleanup or the sweeper removes it."""


def _conflict_keys_fit(ckeys: list[str], namespace: str, partitions: int) -> None:
    if ckeys and partitions > 1:
        raise InvalidArgument(
            "conflict_keys are checked atomically within one partition; "
            f"namespace {namespace!r} has {partitions}"
        )


def add_task(
    router: Router,
    namespace: str,
    task_id: str,
    payload: bytes,
    max_payload_bytes: int,
    options: TaskOptions,
    *,
    units: Iterable[Any] | None,
    unit_count: int | None,
    workers_hint: int,
) -> Steps[TaskRef]:
    """Creates a task of named ``units`` or of ``unit_count`` range units (docs/rules.md rules
    1-5, docs/ranges.md); see :meth:`dtaskq.Client.add_task`."""
    unknown = set(options) - set(TaskOptions.__annotations__)
    if unknown:
        raise InvalidArgument(f"unknown add_task options: {', '.join(sorted(unknown))}")
    validate.namespace(namespace)
    validate.ident(task_id, "task id")
    validate.payload(payload, max_payload_bytes)
    if (units is None) == (unit_count is None):
        raise InvalidArgument("add_task needs either units or unit_count")
    validate.integer(workers_hint, "workers_hint", -validate.MAX_INT, MAX_WORKERS_HINT)
    unit_args: list[Any]
    if unit_count is None:
        unit_args = [field for pair in validate.units(units) for field in pair]
    else:
        unit_args = [validate.integer(unit_count, "unit_count", 1), workers_hint]
    ack_barrier = validate.flag(options.get("ack_barrier", False), "ack_barrier")
    prepare_barrier = validate.flag(options.get("prepare_barrier", False), "prepare_barrier")
    ckeys = validate.conflict_keys(options.get("conflict_keys", ()))
    lease_ms = validate.integer(options.get("lease_ms", DEFAULT_LEASE_MS), "lease_ms", 1, 2**40)
    on_lease_expiry = validate.lease_expiry(options.get("on_lease_expiry", "reassign"))
    max_attempts = validate.integer(options.get("max_attempts", 1), "max_attempts", 1, 10**6)
    retry_backoff_ms = validate.integer(
        options.get("retry_backoff_ms", DEFAULT_RETRY_BACKOFF_MS), "retry_backoff_ms", 0, 2**40
    )
    completed_ttl_ms = validate.integer(
        options.get("completed_ttl_ms", DEFAULT_TTL_MS), "completed_ttl_ms", 0, 2**45
    )
    barrier = 2 if prepare_barrier else 1 if ack_barrier else 0
    # Check against the count the namespace will have first, so that a rejected task does not
    # register it; then register it (again: a server that lost its data lost the registry
    # too), and check against the count it has.
    count = (yield from router.partition_count(namespace)) or router.wanted(namespace)
    _conflict_keys_fit(ckeys, namespace, count)
    count = yield from router.register(namespace)
    _conflict_keys_fit(ckeys, namespace, count)
    part = yield from router.partition(namespace, task_id)
    assert part is not None  # registered just now
    args: list[Any] = [
        task_id,
        payload,
        lease_ms,
        on_lease_expiry,
        max_attempts,
        retry_backoff_ms,
        completed_ttl_ms,
        barrier,
        request_id(),
        len(ckeys),
        *ckeys,
        *unit_args,
    ]
    version = yield Call(
        _ADD if unit_count is None else _ADD_RANGE,
        [part.task_key(task_id)],
        args,
        {"namespace": namespace, "task_id": task_id},
    )
    return TaskRef(namespace, task_id, int(version))


def update_progress(
    router: Router, ref: TaskRef, node: str, unit: str | int, progress: float, token: int | None
) -> Steps[int | None]:
    """Reports progress (rules 6-11); returns the token, or None when the unit was already
    terminal and the report was ignored."""
    value = validate.progress(progress)
    validate.ref_and_node(ref, node)
    unit = validate.unit_id(unit)
    validate.token(token)
    args = [unit, node, repr(value), _token_arg(token)]
    answer = yield from task_call(router, ref, _PROGRESS, args, unit=unit, node=node)
    return int(answer) or None


def complete_unit(
    router: Router, ref: TaskRef, node: str, unit: str | int, token: int | None
) -> Steps[int]:
    """Completes a unit (rule 12); returns the token it completed under."""
    validate.ref_and_node(ref, node)
    unit = validate.unit_id(unit)
    validate.token(token)
    args = [unit, node, _token_arg(token)]
    answer = yield from task_call(router, ref, _COMPLETE, args, unit=unit, node=node)
    return int(answer)


def fail_unit(
    router: Router,
    ref: TaskRef,
    node: str,
    unit: str | int,
    error: str,
    token: int | None,
    retryable: bool,
) -> Steps[bool]:
    """Fails a unit (rules 13-14); returns True when it will be retried."""
    validate.ref_and_node(ref, node)
    unit = validate.unit_id(unit)
    validate.error_text(error)
    validate.token(token)
    validate.flag(retryable, "retryable")
    args = [unit, node, _token_arg(token), error, int(retryable)]
    answer = yield from task_call(router, ref, _FAIL, args, unit=unit, node=node)
    return bool(answer)


Claims = Sequence[tuple[TaskRef, str | int, int]]
"""A node's claims as ``(TaskRef, unit id, token)`` tuples (``heartbeat``, ``release``)."""


def _per_partition(
    router: Router,
    node: str,
    claims: Claims,
    fn: Function,
) -> Steps[list[Any | None]]:
    """Validates ``node`` and ``claims``, then makes one ``fn`` call per partition
    holding a claim, with ARGV node, then (task id, version, unit id, token) per claim. Returns
    each claim's reply in order; None for a claim on a namespace that never had a task."""
    validate.ident(node, "node id")
    if isinstance(claims, (str, bytes)) or not isinstance(claims, Sequence):
        # Not any iterable: the claims are read twice; an iterator would be empty the 2nd time.
        raise InvalidArgument("claims must be a list of (TaskRef, unit id, token) tuples")
    unit_ids: list[str] = []
    for claim in claims:
        if not isinstance(claim, tuple) or len(claim) != 3:
            raise InvalidArgument("claims are (TaskRef, unit id, token) tuples")
        validate.ref(claim[0])
        unit_ids.append(validate.unit_id(claim[1]))
        validate.integer(claim[2], "token", 0)
    by_partition: dict[keys.Partition, list[int]] = {}
    for i, (ref, _, _) in enumerate(claims):
        part = yield from router.partition(ref.namespace, ref.task_id)
        if part is not None:
            by_partition.setdefault(part, []).append(i)
    answers: list[Any | None] = [None] * len(claims)
    for part, indexes in by_partition.items():
        args: list[Any] = [node]
        for i in indexes:
            ref, _, token = claims[i]
            args += (ref.task_id, str(ref.version), unit_ids[i], token)
        replies = yield Call(fn, [part.lease_index_key()], args, {"node": node})
        for i, reply in zip(indexes, replies, strict=True):
            answers[i] = reply
    return answers


def heartbeat(router: Router, node: str, claims: Claims) -> Steps[list[ClaimStatus]]:
    """Renews the leases of ``claims`` (one call per partition); answers per claim, in order."""
    replies = yield from _per_partition(router, node, claims, _HEARTBEAT)
    return [
        ClaimStatus.NOT_RUNNING if reply is None else _CLAIM_STATUSES[int(reply)]
        for reply in replies
    ]


def release(router: Router, node: str, claims: Claims) -> Steps[list[bool]]:
    """Gives ``claims`` back at once (one call per partition), each lease ending as if it had
    expired (rule 25); answers per claim, in order, True when it was held and is released."""
    replies = yield from _per_partition(router, node, claims, _RELEASE)
    return [reply is not None and bool(reply) for reply in replies]


def record_ack(
    router: Router, ref: TaskRef, node: str, phase: str, success: bool, error: str
) -> Steps[bool]:
    """Records a prepare or post ack (rules 16-19); True when recorded, False when dropped."""
    validate.ref_and_node(ref, node)
    validate.flag(success, "success")
    validate.error_text(error)
    args = [node, phase, int(success), error, request_id()]
    answer = yield from task_call(router, ref, _ACK, args, node=node)
    return bool(answer)


def finalize_task(router: Router, ref: TaskRef) -> Steps[bool]:
    """SWAPPING -> FINISHED once every post ack is in (rule 20); False if already FINISHED."""
    validate.ref(ref)
    return bool((yield from task_call(router, ref, _FINALIZE, [request_id()])))


def cancel_task(router: Router, ref: TaskRef) -> Steps[None]:
    """STARTED -> CANCELLED (rule 21)."""
    validate.ref(ref)
    yield from task_call(router, ref, _CANCEL, [request_id()])


def cleanup_task(router: Router, ref: TaskRef) -> Steps[None]:
    """Deletes a terminal task version past its TTL (rule 22)."""
    validate.ref(ref)
    yield from task_call(router, ref, _CLEANUP, [request_id()])


def sweep(
    router: Router,
    namespace: str,
    partition: int,
    limit: int,
    sweeper: str | None = None,
    lock_ms: int = 0,
) -> Steps[SweepResult]:
    """One bounded sweep of one partition: expired leases, then expired terminal tasks; with a
    ``sweeper``, only when that node wins the partition's sweep lock for ``lock_ms``."""
    validate.namespace(namespace)
    validate.integer(partition, "partition", 0, 1023)
    validate.integer(limit, "limit", 1, 10_000)
    if sweeper is not None:
        validate.ident(sweeper, "sweeper")
        validate.integer(lock_ms, "lock_ms", 1, 60_000)
    elif lock_ms:
        raise InvalidArgument("lock_ms needs a sweeper")
    count = yield from router.partition_count(namespace)
    if not count:
        return SweepResult(0, 0, False)
    if partition >= count:
        raise InvalidArgument(
            f"namespace {namespace!r} has {count} partitions, not {partition + 1}"
        )
    part = (yield from router.partitions(namespace))[partition]
    reclaimed, deleted, more, locked_out, next_lease = yield Call(
        _SWEEP, [part.lease_index_key()], [limit, sweeper or "", lock_ms], {"namespace": namespace}
    )
    next_ms = None if next_lease < 0 else int(next_lease)
    return SweepResult(int(reclaimed), int(deleted), bool(more), bool(locked_out), next_ms)


def partitions(router: Router, namespace: str) -> Steps[list[keys.Partition]]:
    """The partitions of a namespace; none before its first task."""
    validate.namespace(namespace)
    return list((yield from router.partitions(namespace)))


def ping() -> Steps[None]:
    """A call that does nothing but answer."""
    yield Call(_PING, [], [])


def announce_node(router: Router, node: str, process: str, ttl_ms: int) -> Steps[str | None]:
    """Announces that ``process`` runs as ``node`` for ``ttl_ms``; the other live process
    that holds the node id, or None."""
    validate.ident(node, "node id")
    validate.ident(process, "process")
    validate.integer(ttl_ms, "ttl_ms", 100, 600_000)
    holder = yield Call(
        _ANNOUNCE, [keys.node_key(router.prefix, node)], [process, ttl_ms], {"node": node}
    )
    return holder.decode() or None
