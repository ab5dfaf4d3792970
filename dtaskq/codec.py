"""Decoding of the records the scripts store (msgpack) into the public types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack

from .models import Ack, Task, TaskStatus, TaskSummary, TaskView, Unit, UnitStatus

# Unit records are msgpack arrays in this slot order (lua/include/records.lua).
_UNIT_STATUSES = (
    UnitStatus.PENDING,
    UnitStatus.IN_PROGRESS,
    UnitStatus.COMPLETED,
    UnitStatus.FAILED,
)


def unpack(data: bytes) -> Any:
    """Decodes msgpack that a script stored (``cmsgpack``)."""
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")


def at(ms: float) -> datetime:
    """A server time in milliseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def optional_at(ms: float) -> datetime | None:
    """Like :func:`at`, with 0 meaning "not set"."""
    return at(ms) if ms else None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def decode_unit(unit_id: str, record: bytes) -> Unit:
    """A :class:`Unit` from its stored msgpack record."""
    status, group, node, progress, attempt, updated, finished, error, lease, ready = unpack(record)
    return Unit(
        id=unit_id,
        group=group,
        node=node or None,
        status=_UNIT_STATUSES[status],
        progress=float(progress),
        error=error,
        attempt=int(attempt),
        updated_at=optional_at(updated),
        finished_at=optional_at(finished),
        lease_expires_at=optional_at(lease),
        ready_at=optional_at(ready),
    )


def _pairs(flat: list[bytes]) -> list[tuple[bytes, bytes]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _acks(flat: list[bytes]) -> dict[str, dict[str, Ack]]:
    acks: dict[str, dict[str, Ack]] = {"prepare": {}, "post": {}}
    for key, value in _pairs(flat):
        phase, _, node = _text(key).partition(":")
        success, error, acked_at, _request_id = unpack(value)
        acks[phase][node] = Ack(bool(success), error, at(acked_at))
    return acks


def decode_task(namespace: str, task_id: str, reply: list[list[bytes]]) -> Task | None:
    """A :class:`Task` from ``get_task.lua``'s reply; None when the task does not exist."""
    if not reply:
        return None
    fields = {_text(k): v for k, v in _pairs(reply[0])}
    units = {_text(k): decode_unit(_text(k), v) for k, v in _pairs(reply[1])}
    unit_count = int(fields.get("unit_count", b"0")) or None
    nodes = {_text(k): int(v) for k, v in _pairs(reply[3])}
    counts = dict.fromkeys(UnitStatus, 0)
    for unit in units.values():
        counts[unit.status] += 1
    if unit_count is not None:
        # Range units have records only while they have state; the counters hold the rest.
        units = {k: u for k, u in units.items() if u.status is not UnitStatus.COMPLETED}
        counts[UnitStatus.COMPLETED] = int(fields["units_completed"])
        counts[UnitStatus.PENDING] = unit_count - sum(
            counts[s] for s in (UnitStatus.IN_PROGRESS, UnitStatus.COMPLETED, UnitStatus.FAILED)
        )
    return _task(namespace, task_id, fields, units, _acks(reply[2]), nodes, counts)


def _task(
    namespace: str,
    task_id: str,
    fields: dict[str, bytes],
    units: dict[str, Unit],
    acks: dict[str, dict[str, Ack]],
    nodes: dict[str, int],
    counts: dict[UnitStatus, int],
) -> Task:
    barrier = int(fields["barrier"])
    conflict_keys = _text(fields["conflict_keys"])
    unit_count = int(fields.get("unit_count") or b"0") or None
    return Task(
        namespace=namespace,
        task_id=task_id,
        version=int(fields["version"]),
        status=TaskStatus(_text(fields["status"])),
        payload=fields.get("payload", b""),
        error=_text(fields["error"]),
        started_at=at(int(fields["started_at"])),
        finished_at=optional_at(int(fields["finished_at"])),
        units=units,
        prepare_acks=acks["prepare"],
        post_acks=acks["post"],
        nodes=nodes,
        counts=counts,
        lease_ms=int(fields["lease_ms"]),
        on_lease_expiry=_text(fields["on_lease_expiry"]),
        max_attempts=int(fields["max_attempts"]),
        retry_backoff_ms=int(fields["retry_backoff_ms"]),
        completed_ttl_ms=int(fields["completed_ttl_ms"]),
        ack_barrier=barrier >= 1,
        prepare_barrier=barrier == 2,
        conflict_keys=tuple(conflict_keys.split("\n")) if conflict_keys else (),
        unit_count=unit_count,
        units_finished_at=optional_at(int(fields.get("units_finished_at") or b"0")),
    )


VIEW_FIELDS = (
    *("version", "status", "error", "started_at", "finished_at", "units_finished_at"),
    *("lease_ms", "on_lease_expiry", "max_attempts", "retry_backoff_ms", "completed_ttl_ms"),
    *("barrier", "units_total", "units_completed", "unit_count", "conflict_keys"),
)
"""The task fields of a view, in the order of ``lua/include/views.lua``."""


def decode_view(namespace: str, task_id: str, reply: list[Any]) -> TaskView | None:
    """A :class:`TaskView` from ``task_view.lua``'s reply; None when the task does not
    exist."""
    if not reply:
        return None
    fields = dict(zip(VIEW_FIELDS, reply[0], strict=True))
    nodes = {_text(k): int(v) for k, v in _pairs(reply[2])}
    counts = {UnitStatus.COMPLETED: int(fields["units_completed"])}
    task = _task(namespace, task_id, fields, {}, _acks(reply[1]), nodes, counts)
    groups = {_text(k): int(v) for k, v in _pairs(reply[3])}
    return TaskView(task, groups, bool(reply[4]))


def decode_summaries(flat: list[Any]) -> list[TaskSummary]:
    """The :class:`TaskSummary` entries of a ``list_summaries.lua`` page."""
    return [
        TaskSummary(
            _text(flat[i]),
            int(flat[i + 1]),
            TaskStatus(_text(flat[i + 2])),
            bool(flat[i + 3]),
            bool(flat[i + 4]),
        )
        for i in range(0, len(flat), 5)
    ]
