"""The public types of jobs (docs/jobs.md): what a producer enqueues and reads back, and what
a worker claims."""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict


class JobStatus(enum.StrEnum):
    """Where a job is in its life (docs/jobs.md, rules J1-J11)."""

    SCHEDULED = "SCHEDULED"
    """Waiting for its run-at time, or for a retry's backoff to pass."""
    QUEUED = "QUEUED"
    """Ready: waiting in its lane for a worker."""
    RUNNING = "RUNNING"
    """Claimed by a worker, under a lease."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    """Ended without success: attempts ran out, ``Fail``, or its deadline passed."""
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for the statuses a job never leaves (but a dead-letter requeue)."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


JOB_STATUS_LETTERS: dict[bytes, JobStatus] = {
    b"S": JobStatus.SCHEDULED,
    b"Q": JobStatus.QUEUED,
    b"R": JobStatus.RUNNING,
    b"C": JobStatus.COMPLETED,
    b"F": JobStatus.FAILED,
    b"X": JobStatus.CANCELLED,
}
"""The one-letter status a job's record stores (``lua/include/jobs.lua``)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between a job's attempts: the wait after the k-th
    failed attempt is ``min(maximum, first * 2**(k-1))`` scaled by a random factor in
    [0.5, 1], so that jobs that failed together do not retry together."""

    first: float = 1.0
    """Seconds before the first retry (at most)."""
    maximum: float = 300.0
    """The longest wait, in seconds."""

    def delay_ms(self, failures: int) -> int:
        """The wait before the retry that follows ``failures`` failed attempts."""
        ceiling = min(self.maximum, self.first * 2.0 ** max(0, failures - 1))
        return int(ceiling * 1000 * random.uniform(0.5, 1.0))


DEFAULT_LEASE_MS = 30_000
LEASE_GRACE_MS = 5_000


def job_lease_ms(timeout_ms: int | None) -> int:
    """How long a claim of a job lasts before a heartbeat renews it: its timeout plus 5 s, or
    30 s for a job without one (the claim function sets it: ``lua/include/jobs.lua``)."""
    return timeout_ms + LEASE_GRACE_MS if timeout_ms else DEFAULT_LEASE_MS


DEFAULT_BACKOFF = Backoff()

Duration = float | timedelta
"""Seconds (int or float) or a ``timedelta``."""

DEFAULT_RESULT_TTL = timedelta(days=1)


class JobOptions(TypedDict, total=False):
    """Options of :meth:`dtaskq.Client.enqueue` (and the fields of :class:`dtaskq.JobSpec`)."""

    priority: int
    """0. -1000..1000, higher first; waiting ages a job (docs/jobs.md, rule J3)."""
    delay: Duration
    """None. Seconds (or a timedelta) to wait before the job becomes ready."""
    run_at: datetime
    """None. When the job becomes ready (an aware datetime); not with ``delay``."""
    deadline: datetime
    """None. A job not started by then never runs (an aware datetime)."""
    on_deadline: Literal["fail", "drop"]
    """"fail". At a missed deadline: fail with ``DeadlineExceeded``, or delete the job."""
    timeout: Duration
    """None. The longest one attempt may run; its lease lasts this plus 5 s."""
    max_attempts: int
    """1. Attempts before the job goes to the dead-letter set (1..1000)."""
    backoff: Backoff | Duration
    """``Backoff()``: 1 s doubling up to 5 min, with jitter; a duration sets the first wait."""
    idempotency_key: str
    """None. While a job of this key exists, enqueueing it again returns that job."""
    result_ttl: Duration
    """1 day. How long the job's record and result are kept after it ends; 0 keeps none."""


@dataclass(frozen=True)
class JobSpec:
    """One job of :meth:`dtaskq.Client.enqueue_many`; the fields are the arguments of
    :meth:`dtaskq.Client.enqueue`, which says what each means."""

    handler: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    priority: int = 0
    delay: Duration | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None
    on_deadline: Literal["fail", "drop"] = "fail"
    timeout: Duration | None = None
    max_attempts: int = 1
    backoff: Backoff | Duration = DEFAULT_BACKOFF
    idempotency_key: str | None = None
    result_ttl: Duration = DEFAULT_RESULT_TTL


@dataclass(frozen=True)
class JobInfo:
    """A job's record as :meth:`dtaskq.Client.get_job` reads it. Times are server times;
    ``token`` is the fencing token of its latest claim (None: never claimed)."""

    queue: str
    id: str
    handler: str
    status: JobStatus
    attempt: int
    """Attempts made so far: the failed ones, those whose worker died or stalled, and the
    running or completed one (a release at a worker's shutdown costs none)."""
    token: int | None
    failures: int
    """Attempts that failed."""
    max_attempts: int
    priority: int
    enqueued_at: datetime
    run_at: datetime | None
    deadline: datetime | None
    started_at: datetime | None
    """When the latest attempt started."""
    finished_at: datetime | None
    error: str
    """The latest failure's error; "" if none."""
    node: str | None
    """The node running the job, or that ran its latest attempt."""
    idempotency_key: str | None
    result: Any = None
    """The handler's return value, once COMPLETED (until the result TTL passes)."""
    leases_lost: int = 0
    """How often a worker lost the job's lease (died or stalled) while running it."""
    lease_ends_at: datetime | None = None
    """When the lease of a RUNNING job ends unless its worker renews it."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker claimed: what it needs to run one attempt and to report it."""

    queue: str
    partition: int
    id: str
    token: int
    """The fencing token of this claim; reports carry it (docs/jobs.md, rule J5)."""
    handler: str
    arguments: bytes
    """msgpack of ``[args, kwargs]``, decoded by the worker."""
    timeout_ms: int | None
    deadline_ms: int | None
    attempt: int
    """This attempt's number, from 1: failed attempts and lost leases before it, plus one."""
    failures: int
    """Failed attempts before this one."""
    max_attempts: int
    backoff: Backoff


@dataclass(frozen=True)
class JobClaim:
    """What :meth:`dtaskq.Client.claim_jobs` did: which reports it accepted, what it claimed."""

    settled: list[bool]
    """Per report: accepted (False: the claim was no longer the job's)."""
    jobs: list[ClaimedJob]
    next_due_ms: int | None
    """Ms until the partition's earliest scheduled job is due; None when none is scheduled."""


@dataclass(frozen=True)
class DeadJob:
    """An entry of a queue's dead-letter set."""

    queue: str
    id: str
    failed_at: datetime
    handler: str
    error: str
    failures: int


@dataclass(frozen=True)
class JobSweepResult:
    """What one bounded sweep of a queue partition did (rule J11)."""

    reclaimed: int
    """Running jobs whose lease had run out, put back (or failed after too many losses)."""
    promoted: int
    """Scheduled jobs that fell due and became ready."""
    expired: int
    """Queued jobs settled because their deadline passed."""
    more: bool
    """More items were due already: sweep again."""
    wait_ms: int | None
    """Ms until the partition's next lease end or scheduled job; None when there is none."""
    locked_out: bool = False
    """Another sweeper held the partition's lock: this call swept nothing."""
