"""The synchronous client: the task API over a blocking redis-py connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar, Unpack

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from . import claims, ops, reads, urls
from .calls import (
    ClientOptions,
    connect_cluster,
)
from .job_client import JobMethods
from .keys import Partition
from .models import (
    ClaimedUnit,
    ClaimResult,
    ClaimStatus,
    Done,
    Task,
    TaskRef,
    TaskSummary,
    TaskView,
    UnitSpec,
)
from .ops import TaskOptions
from .scripts import LIBRARY

T = TypeVar("T")


class Client(JobMethods):
    """The task API over one Redis server or Redis Cluster.

    Every method validates its arguments before any Redis call (``InvalidArgument``), runs
    one atomic function per state change, retries transient errors with bounded backoff and
    raises the typed errors of :mod:`dtaskq.errors`; no other exception leaves it.

    ``connection`` is a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (with
    ``decode_responses=False``). ``options`` are those of :class:`~dtaskq.calls.ClientOptions`
    (key prefix, partition counts, payload limit, retry attempts). The function library is
    loaded on first use, and again whenever a server has lost it (docs/scripts.md).
    """

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout: float | None = None, **options: Unpack[ClientOptions]
    ) -> Client:
        """A client on a new connection pool for ``url``: ``redis://host:port/db``,
        ``rediss://`` for TLS, ``unix://path``; add ``?cluster=1`` for a Redis Cluster (the
        address of any of its nodes). ``connect_timeout`` bounds each attempt to connect, in
        seconds (a ``socket_connect_timeout`` in the URL wins).

        The pool's own retries are off: the client's bounded retries are the only ones."""
        plain, cluster, kwargs = urls.connection_args(url, connect_timeout)
        if cluster:
            return cls(connect_cluster(RedisCluster.from_url, plain, kwargs), **options)
        return cls(redis.Redis.from_url(plain, retry=Retry(NoBackoff(), 0), **kwargs), **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def announce_node(self, node: str, process: str, ttl_ms: int) -> str | None:
        """Announces that ``process`` (an id unique to one process) runs as ``node`` for the
        next ``ttl_ms``. Returns None when it holds the node id now, else the other live
        process that announced it: node ids must be unique among live workers."""
        return self._drive(ops.announce_node(self._core.router, node, process, ttl_ms))

    def ping(self) -> str:
        """Checks that the server answers and that this version's library is loaded (loading
        it when it is not and this user may); returns the library's name."""
        self._drive(ops.ping())
        return LIBRARY.name

    def add_task(
        self,
        namespace: str,
        task_id: str,
        *,
        units: Iterable[str | UnitSpec] | None = None,
        unit_count: int | None = None,
        workers_hint: int = 1,
        payload: bytes = b"",
        **options: Unpack[TaskOptions],
    ) -> TaskRef:
        """Creates a STARTED task whose units are all PENDING and unassigned: either named
        ``units`` (ids or :class:`UnitSpec` with a group), or ``unit_count`` range units
        0..N-1 handed out by span splitting, pre-split into ``workers_hint`` regions
        (docs/ranges.md).

        Re-adding the id of a terminal task creates a new, greater version and replaces the old
        one's state; ``options`` are those of :class:`~dtaskq.ops.TaskOptions`.

        Raises ``TaskExists`` while the id is active, ``TaskConflict`` while an active task of
        the namespace holds one of the ``conflict_keys``, ``InvalidArgument`` for bad input.
        """
        return self._drive(
            ops.add_task(
                self._core.router,
                namespace,
                task_id,
                payload,
                self._core.max_payload,
                options,
                units=units,
                unit_count=unit_count,
                workers_hint=workers_hint,
            )
        )

    def get_task(self, namespace: str, task_id: str) -> Task | None:
        """The latest version of a task, read atomically, or None if there is none."""
        return self._drive(reads.get_task(self._core.router, namespace, task_id))

    def list_tasks(self, namespace: str | None = None) -> dict[str, list[Task]]:
        """``{namespace: [Task, ...]}`` without empty namespaces: active tasks first, then by
        activity time (finished_at, else started_at) descending, then by id."""
        return self._drive(reads.list_tasks(self._core.router, namespace))

    def task_view(self, namespace: str, task_id: str, node: str) -> TaskView | None:
        """What ``node``'s scheduler needs of the latest version of a task: its fields (not the
        payload), acks, owning nodes, the groups ``node`` owns units of with how many of their
        units are left, and whether ``node`` could be handed a unit; read in time that grows
        with those groups, never with the task's units. None if there is no such task."""
        return self._drive(reads.task_view(self._core.router, namespace, task_id, node))

    def node_units(self, ref: TaskRef, node: str, group: str = "") -> list[str]:
        """The named units ``node`` owns (any status) in ``group`` of a task version, in id
        order: what its group callbacks are given. Time grows with those units only."""
        return self._drive(reads.node_units(self._core.router, ref, node, group))

    def task_summaries(self, namespace: str, node: str) -> list[TaskSummary]:
        """Every task of ``namespace`` as ``node``'s scheduler sees it on a resync: id,
        version, status, and whether ``node`` could claim a unit or owns one; one call per
        partition (and page of 500 tasks), whatever the tasks' sizes."""
        return self._drive(reads.task_summaries(self._core.router, namespace, node))

    def claim_unit(self, ref: TaskRef, node: str, unit: str | int) -> int:
        """Claims ``unit`` for ``node`` and returns its token; the first claimer wins and a
        holder claiming again gets its current token back (its lease renewed).

        Raises ``UnitWrongNode``, ``UnitAlreadyTerminal``, ``TaskNotRunning``,
        ``TaskDoesNotExist``, or ``UnitNotReady`` while a retried unit backs off.
        """
        return self._drive(claims.claim_unit(self._core.router, ref, node, unit))

    def claim_first(self, ref: TaskRef, node: str) -> ClaimedUnit | Done:
        """Claims a unit of a range task for ``node``: one waiting to be claimed again, else the
        first unit of the next fresh region, else the first unit of the right half of the
        largest span left, whose rest ``node`` then continues. Returns the unit (an ``int``
        with its ``token``), or DONE when no unit is left to hand out.

        Raises ``UnitNotReady`` when the only units left back off after a retryable failure,
        ``TaskNotRunning`` once the task failed or was cancelled.
        """
        return self._drive(claims.claim_one(self._core.router, ref, node, None))

    def claim_next(self, ref: TaskRef, node: str, last: int) -> ClaimedUnit | Done:
        """Claims ``last + 1`` for ``node`` while it is unclaimed, else as :meth:`claim_first`."""
        return self._drive(claims.claim_one(self._core.router, ref, node, last))

    def claim(
        self, ref: TaskRef, node: str, max_units: int = 1, last: int | None = None
    ) -> list[ClaimedUnit] | Done:
        """Claims up to ``max_units`` (at most 1 000) range units in one call, each as
        :meth:`claim_next` would after the one before it, so contiguous where possible; the
        first after ``last``, or as :meth:`claim_first` when ``last`` is None."""
        return self._drive(claims.claim_batch(self._core.router, ref, node, max_units, last))

    def complete_and_claim(
        self,
        ref: TaskRef,
        node: str,
        done: Sequence[tuple[str | int, int]],
        max_units: int = 1,
        last: int | None = None,
    ) -> ClaimResult:
        """Range tasks: completes the ``(unit, token)`` pairs in ``done``, then claims up to
        ``max_units`` units as :meth:`claim` does, all in one round trip (``max_units`` may be
        0 to complete only). A completion the unit's state turns away (its lease was lost, say)
        is listed in ``rejected`` and does not stop the others; a task that failed or was
        cancelled raises ``TaskNotRunning`` and completes nothing."""
        return self._drive(claims.claim_range(self._core.router, ref, node, max_units, last, done))

    def claim_any(
        self,
        ref: TaskRef,
        node: str,
        max_units: int = 1,
        units: Iterable[str] | None = None,
        complete: Sequence[tuple[str | int, int]] = (),
    ) -> ClaimResult:
        """Tasks of named units: completes the ``(unit, token)`` pairs in ``complete``, then
        hands ``node`` up to ``max_units`` pending units, each claimed under a new token: units
        kept for it (sticky tasks), then units returned after a lease expiry or a retryable
        failure, then fresh ones in task order; only units in ``units`` when given. Never a unit
        a node holds, so concurrent callers never get the same unit. One round trip, O(log n)
        a unit (O(len(units)) with a filter)."""
        return self._drive(
            claims.claim_any(self._core.router, ref, node, max_units, units, complete)
        )

    def update_progress(
        self, ref: TaskRef, node: str, unit: str | int, progress: float, token: int | None = None
    ) -> int | None:
        """Reports progress in [0, 1]; stored progress never decreases. The first report on an
        unassigned unit claims it. Returns the token, or None when the unit was already
        terminal (the report is then ignored). ``token=None`` checks the node only.

        Raises ``LeaseLost`` for a stale token, ``UnitWrongNode``, ``TaskNotRunning``.
        """
        return self._drive(ops.update_progress(self._core.router, ref, node, unit, progress, token))

    def complete_unit(
        self, ref: TaskRef, node: str, unit: str | int, token: int | None = None
    ) -> int:
        """Completes a unit; completing the last one finishes the task or opens its barrier.

        An identical retry (same node and token) succeeds without change. Raises
        ``UnitAlreadyTerminal``, ``LeaseLost``, ``UnitWrongNode``, ``TaskNotRunning``.
        """
        return self._drive(ops.complete_unit(self._core.router, ref, node, unit, token))

    def fail_unit(
        self,
        ref: TaskRef,
        node: str,
        unit: str | int,
        error: str,
        token: int | None = None,
        retryable: bool = False,
    ) -> bool:
        """Fails a unit. Returns True when it was put back for a retry (``retryable`` and
        attempts left); otherwise the unit and the whole task fail at once."""
        return self._drive(
            ops.fail_unit(self._core.router, ref, node, unit, error, token, retryable)
        )

    def heartbeat(
        self, node: str, claims: Sequence[tuple[TaskRef, str | int, int]]
    ) -> list[ClaimStatus]:
        """Renews ``node``'s leases on ``(ref, unit, token)`` claims, one call per partition;
        answers per claim, in order: HELD, LOST or NOT_RUNNING."""
        return self._drive(ops.heartbeat(self._core.router, node, claims))

    def release(self, node: str, claims: Sequence[tuple[TaskRef, str | int, int]]) -> list[bool]:
        """Gives ``node``'s ``(ref, unit, token)`` claims back at once, one call per partition,
        so that other nodes need not wait for their leases (a worker shutting down).

        Each lease still held ends as an expiry would (rule 25): a ``"reassign"`` unit goes
        back to PENDING for any node to claim under the next token, a ``"sticky"`` one waits
        for ``node``; a range unit is handed out again first, and the span its holder was
        continuing becomes fresh. Answers per claim, in order: True when released, False when
        it was not held (lost, expired, terminal, task not running, unknown). Idempotent: when a
        reply is lost, the retry finds the claims already released and answers False for them.
        """
        return self._drive(ops.release(self._core.router, node, claims))

    def record_prepare_ack(
        self, ref: TaskRef, node: str, success: bool = True, error: str = ""
    ) -> bool:
        """Records ``node``'s prepare ack; the first per node wins. True when recorded."""
        return self._drive(ops.record_ack(self._core.router, ref, node, "prepare", success, error))

    def record_post_ack(
        self, ref: TaskRef, node: str, success: bool = True, error: str = ""
    ) -> bool:
        """Records ``node``'s post-completion ack; the first per node wins. True when recorded."""
        return self._drive(ops.record_ack(self._core.router, ref, node, "post", success, error))

    def finalize_task(self, ref: TaskRef) -> bool:
        """Moves a SWAPPING task whose post acks are all in to FINISHED; False when it was
        FINISHED already. Raises ``AcksMissing`` or ``TaskNotFinalizing``."""
        return self._drive(ops.finalize_task(self._core.router, ref))

    def cancel_task(self, ref: TaskRef) -> None:
        """Cancels a STARTED task; raises ``TaskNotRunning`` in any other status."""
        self._drive(ops.cancel_task(self._core.router, ref))

    def cleanup_task(self, ref: TaskRef) -> None:
        """Deletes every key of a terminal task version older than its TTL.

        Raises ``TaskStillRunning`` or ``TaskTooFresh``."""
        self._drive(ops.cleanup_task(self._core.router, ref))

    def sweep(
        self,
        namespace: str,
        partition: int = 0,
        limit: int = ops.DEFAULT_SWEEP_BATCH,
        *,
        sweeper: str | None = None,
        lock_ms: int = 0,
    ) -> ops.SweepResult:
        """One bounded sweep of a partition: ends expired leases and deletes terminal tasks
        past their TTL, at most ``limit`` items. Idempotent. With a ``sweeper`` (a node id) it
        first takes the partition's sweep lock for ``lock_ms``, and sweeps nothing when
        another sweeper holds it (``locked_out``); workers sweep so."""
        return self._drive(
            ops.sweep(self._core.router, namespace, partition, limit, sweeper, lock_ms)
        )

    def partitions(self, namespace: str) -> list[Partition]:
        """The partitions of ``namespace`` (their keys, say the event streams); an empty list
        before its first task fixes the partition count."""
        return self._drive(ops.partitions(self._core.router, namespace))
