"""The public value types: task references, tasks, units, acks and their statuses."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final


class TaskStatus(enum.StrEnum):
    """Status of a task (docs/rules.md); the value is the upper-case name."""

    STARTED = "STARTED"
    PREPARING = "PREPARING"
    SWAPPING = "SWAPPING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True for FINISHED, FAILED and CANCELLED."""
        return self in (TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class UnitStatus(enum.StrEnum):
    """Status of a unit (docs/rules.md); the value is the upper-case name."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED and FAILED."""
        return self in (UnitStatus.COMPLETED, UnitStatus.FAILED)


class ClaimStatus(enum.StrEnum):
    """What a heartbeat learned of one claim."""

    HELD = "HELD"
    """The lease was renewed."""
    LOST = "LOST"
    """The lease expired or the unit is no longer this node's under that token."""
    NOT_RUNNING = "NOT_RUNNING"
    """The task left STARTED (finished, failed, cancelled, replaced or deleted)."""


class Done:
    """Type of :data:`DONE`."""

    _instance: Done | None = None

    def __new__(cls) -> Done:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "dtaskq.DONE"


DONE: Final = Done()
"""Returned by range-task claims when no unit is left to hand out."""


class ClaimedUnit(int):
    """A range unit handed out by ``claim_first``, ``claim_next`` or ``claim``: the unit id
    itself (an ``int``), carrying the fencing ``token`` of its claim for later reports."""

    token: int

    def __new__(cls, unit: int, token: int) -> ClaimedUnit:
        claimed = super().__new__(cls, unit)
        claimed.token = token
        return claimed

    def __repr__(self) -> str:
        return f"ClaimedUnit({int(self)}, token={self.token})"

    def __str__(self) -> str:
        return int.__repr__(self)


class ClaimedName(str):
    """A named unit handed out by ``claim_any``: the unit id itself (a ``str``), carrying the
    fencing ``token`` of its claim for later reports."""

    token: int

    def __new__(cls, unit: str, token: int) -> ClaimedName:
        claimed = super().__new__(cls, unit)
        claimed.token = token
        return claimed

    def __repr__(self) -> str:
        return f"ClaimedName({str.__repr__(self)}, token={self.token})"


@dataclass(frozen=True)
class ClaimResult:
    """What a claim that also completes units answered (``complete_and_claim``,
    ``claim_any``)."""

    units: Sequence[ClaimedUnit | ClaimedName]
    """The units handed out, in claim order."""
    rejected: dict[str, Exception] = field(default_factory=dict)
    """Completions the units' state turned away, by unit id (``LeaseLost``, ``UnitWrongNode``,
    ...); the others took effect. Their units are not this node's to report on any more."""
    done: bool = False
    """No unit is left to hand out to this node (every one is claimed, complete, or held)."""
    retry_after_ms: int = 0
    """When no unit was handed out and one is backing off: how long until it is ready."""


@dataclass(frozen=True)
class TaskRef:
    """Names one version of a task; every call after ``add_task`` takes one."""

    namespace: str
    task_id: str
    version: int


@dataclass(frozen=True)
class UnitSpec:
    """A named unit at task creation, optionally in a group."""

    id: str
    group: str = ""


@dataclass(frozen=True)
class Unit:
    """The state of one unit. ``node`` is None while unassigned; ``attempt`` is the token of
    the latest claim (0 before the first)."""

    id: str
    group: str
    node: str | None
    status: UnitStatus
    progress: float
    error: str
    attempt: int
    updated_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    ready_at: datetime | None
    """When a unit backing off after a retryable failure may be claimed again."""


@dataclass(frozen=True)
class Ack:
    """A node's prepare or post ack."""

    success: bool
    error: str
    acked_at: datetime


@dataclass(frozen=True)
class Task:
    """A snapshot of one task version, read atomically."""

    namespace: str
    task_id: str
    version: int
    status: TaskStatus
    payload: bytes
    error: str
    started_at: datetime
    finished_at: datetime | None
    """When the task reached its terminal status (set once)."""
    units: dict[str, Unit]
    """Named tasks: every unit. Range tasks: the units in flight, failed, or waiting to be
    claimed again after a lease expiry or a retryable failure; ``counts`` has the totals."""
    prepare_acks: dict[str, Ack] = field(default_factory=dict)
    post_acks: dict[str, Ack] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    """Node -> number of units it owns (claimed, completed or failed, or kept for it): the
    nodes whose acks a barrier waits for (rule 16)."""
    counts: dict[UnitStatus, int] = field(default_factory=dict)
    lease_ms: int = 30_000
    on_lease_expiry: str = "reassign"
    max_attempts: int = 1
    retry_backoff_ms: int = 1_000
    completed_ttl_ms: int = 86_400_000
    ack_barrier: bool = False
    prepare_barrier: bool = False
    conflict_keys: tuple[str, ...] = ()
    unit_count: int | None = None
    """N for a range task (units 0..N-1), None for a task of named units."""
    units_finished_at: datetime | None = None
    """When the last unit became terminal (rule 15): with ``finished_at``, the barrier window.
    None while units are left, and for a task that failed or was cancelled before."""

    @property
    def ref(self) -> TaskRef:
        """The reference naming this version."""
        return TaskRef(self.namespace, self.task_id, self.version)

    @property
    def is_active(self) -> bool:
        """True while the task is not terminal."""
        return not self.status.is_terminal


@dataclass(frozen=True)
class TaskView:
    """What one node's scheduler reads of a task (``Client.task_view``): ``task`` is a snapshot
    without its payload or units, whose ``counts`` holds only COMPLETED; reading it costs time
    in the groups the node has units in, not in the task's units."""

    task: Task
    groups_left: dict[str, int]
    """The groups of named units the node owns units of -> how many of their units are not
    complete yet (``Client.node_units`` lists the node's units of one)."""
    claimable: bool
    """The node could be handed a unit: one waits unassigned or kept for it, one's lease ran out,
    or (range tasks) one is still in a span."""


@dataclass(frozen=True)
class TaskSummary:
    """One task of a partition as a node's periodic resync sees it
    (``Client.task_summaries``)."""

    task_id: str
    version: int
    status: TaskStatus
    claimable: bool
    """As :attr:`TaskView.claimable`."""
    owner: bool
    """The node owns units of the task: it is in the expected ack set (rule 16)."""
