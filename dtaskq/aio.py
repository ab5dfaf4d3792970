"""The asyncio client: the same operations as :class:`dtaskq.Client`, as coroutines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar, Unpack

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import claims, ops, reads, urls
from .calls import ClientOptions, connect_cluster
from .job_aio import AsyncJobMethods
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


class AsyncClient(AsyncJobMethods):
    """The task API over a ``redis.asyncio`` connection (``Redis`` or ``RedisCluster``); each
    method is the coroutine form of the :class:`dtaskq.Client` method of the same name, with
    the same guarantees and errors."""

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout: float | None = None, **options: Unpack[ClientOptions]
    ) -> AsyncClient:
        """A client on a new connection pool for ``url`` (see :meth:`dtaskq.Client.from_url`)."""
        plain, cluster, kwargs = urls.connection_args(url, connect_timeout)
        if cluster:
            return cls(connect_cluster(RedisCluster.from_url, plain, kwargs), **options)
        retry = Retry(NoBackoff(), 0)
        return cls(redis.asyncio.Redis.from_url(plain, retry=retry, **kwargs), **options)

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def load_library(self) -> str:
        """See :meth:`dtaskq.Client.load_library`."""
        await self._run("load_library", {}, self._load)
        return LIBRARY.name

    async def announce_node(self, node: str, process: str, ttl_ms: int) -> str | None:
        """See :meth:`dtaskq.Client.announce_node`."""
        return await self._drive(ops.announce_node(self._core.router, node, process, ttl_ms))

    async def ping(self) -> str:
        """See :meth:`dtaskq.Client.ping`."""
        await self._drive(ops.ping())
        return LIBRARY.name

    async def add_task(
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
        """See :meth:`dtaskq.Client.add_task`."""
        return await self._drive(
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

    async def get_task(self, namespace: str, task_id: str) -> Task | None:
        """See :meth:`dtaskq.Client.get_task`."""
        return await self._drive(reads.get_task(self._core.router, namespace, task_id))

    async def list_tasks(self, namespace: str | None = None) -> dict[str, list[Task]]:
        """See :meth:`dtaskq.Client.list_tasks`."""
        return await self._drive(reads.list_tasks(self._core.router, namespace))

    async def task_view(self, namespace: str, task_id: str, node: str) -> TaskView | None:
        """See :meth:`dtaskq.Client.task_view`."""
        return await self._drive(reads.task_view(self._core.router, namespace, task_id, node))

    async def node_units(self, ref: TaskRef, node: str, group: str = "") -> list[str]:
        """See :meth:`dtaskq.Client.node_units`."""
        return await self._drive(reads.node_units(self._core.router, ref, node, group))

    async def task_summaries(self, namespace: str, node: str) -> list[TaskSummary]:
        """See :meth:`dtaskq.Client.task_summaries`."""
        return await self._drive(reads.task_summaries(self._core.router, namespace, node))

    async def claim_unit(self, ref: TaskRef, node: str, unit: str | int) -> int:
        """See :meth:`dtaskq.Client.claim_unit`."""
        return await self._drive(claims.claim_unit(self._core.router, ref, node, unit))

    async def claim_first(self, ref: TaskRef, node: str) -> ClaimedUnit | Done:
        """See :meth:`dtaskq.Client.claim_first`."""
        return await self._drive(claims.claim_one(self._core.router, ref, node, None))

    async def claim_next(self, ref: TaskRef, node: str, last: int) -> ClaimedUnit | Done:
        """See :meth:`dtaskq.Client.claim_next`."""
        return await self._drive(claims.claim_one(self._core.router, ref, node, last))

    async def claim(
        self, ref: TaskRef, node: str, max_units: int = 1, last: int | None = None
    ) -> list[ClaimedUnit] | Done:
        """See :meth:`dtaskq.Client.claim`."""
        return await self._drive(claims.claim_batch(self._core.router, ref, node, max_units, last))

    async def complete_and_claim(
        self,
        ref: TaskRef,
        node: str,
        done: Sequence[tuple[str | int, int]],
        max_units: int = 1,
        last: int | None = None,
    ) -> ClaimResult:
        """See :meth:`dtaskq.Client.complete_and_claim`."""
        return await self._drive(
            claims.claim_range(self._core.router, ref, node, max_units, last, done)
        )

    async def claim_any(
        self,
        ref: TaskRef,
        node: str,
        max_units: int = 1,
        units: Iterable[str] | None = None,
        complete: Sequence[tuple[str | int, int]] = (),
    ) -> ClaimResult:
        """See :meth:`dtaskq.Client.claim_any`."""
        return await self._drive(
            claims.claim_any(self._core.router, ref, node, max_units, units, complete)
        )

    async def update_progress(
        self, ref: TaskRef, node: str, unit: str | int, progress: float, token: int | None = None
    ) -> int | None:
        """See :meth:`dtaskq.Client.update_progress`."""
        return await self._drive(
            ops.update_progress(self._core.router, ref, node, unit, progress, token)
        )

    async def complete_unit(
        self, ref: TaskRef, node: str, unit: str | int, token: int | None = None
    ) -> int:
        """See :meth:`dtaskq.Client.complete_unit`."""
        return await self._drive(ops.complete_unit(self._core.router, ref, node, unit, token))

    async def fail_unit(
        self,
        ref: TaskRef,
        node: str,
        unit: str | int,
        error: str,
        token: int | None = None,
        retryable: bool = False,
    ) -> bool:
        """See :meth:`dtaskq.Client.fail_unit`."""
        return await self._drive(
            ops.fail_unit(self._core.router, ref, node, unit, error, token, retryable)
        )

    async def heartbeat(
        self, node: str, claims: Sequence[tuple[TaskRef, str | int, int]]
    ) -> list[ClaimStatus]:
        """See :meth:`dtaskq.Client.heartbeat`."""
        return await self._drive(ops.heartbeat(self._core.router, node, claims))

    async def release(
        self, node: str, claims: Sequence[tuple[TaskRef, str | int, int]]
    ) -> list[bool]:
        """See :meth:`dtaskq.Client.release`."""
        return await self._drive(ops.release(self._core.router, node, claims))

    async def record_prepare_ack(
        self, ref: TaskRef, node: str, success: bool = True, error: str = ""
    ) -> bool:
        """See :meth:`dtaskq.Client.record_prepare_ack`."""
        return await self._drive(
            ops.record_ack(self._core.router, ref, node, "prepare", success, error)
        )

    async def record_post_ack(
        self, ref: TaskRef, node: str, success: bool = True, error: str = ""
    ) -> bool:
        """See :meth:`dtaskq.Client.record_post_ack`."""
        return await self._drive(
            ops.record_ack(self._core.router, ref, node, "post", success, error)
        )

    async def finalize_task(self, ref: TaskRef) -> bool:
        """See :meth:`dtaskq.Client.finalize_task`."""
        return await self._drive(ops.finalize_task(self._core.router, ref))

    async def cancel_task(self, ref: TaskRef) -> None:
        """See :meth:`dtaskq.Client.cancel_task`."""
        await self._drive(ops.cancel_task(self._core.router, ref))

    async def cleanup_task(self, ref: TaskRef) -> None:
        """See :meth:`dtaskq.Client.cleanup_task`."""
        await self._drive(ops.cleanup_task(self._core.router, ref))

    async def sweep(
        self,
        namespace: str,
        partition: int = 0,
        limit: int = ops.DEFAULT_SWEEP_BATCH,
        *,
        sweeper: str | None = None,
        lock_ms: int = 0,
    ) -> ops.SweepResult:
        """See :meth:`dtaskq.Client.sweep`."""
        return await self._drive(
            ops.sweep(self._core.router, namespace, partition, limit, sweeper, lock_ms)
        )

    async def partitions(self, namespace: str) -> list[Partition]:
        """See :meth:`dtaskq.Client.partitions`."""
        return await self._drive(ops.partitions(self._core.router, namespace))
