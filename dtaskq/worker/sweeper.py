"""Periodic bounded sweeps of the partitions a worker serves (DESIGN §7)."""

from __future__ import annotations

import redis

from ..client import Client
from ..errors import DtaskqError
from ..ops import DEFAULT_SWEEP_BATCH
from .logs import Fields
from .loop import Loop

DEFAULT_SWEEP_INTERVAL_S = 1.0


class Sweeper(Loop):
    """Every ``interval_s``, sweeps each partition of the served namespaces whose lock it
    wins, ``batch`` items per call while more are due.

    The lock is a key set with NX for one interval and never deleted: whichever worker sets it
    first sweeps that partition this interval, the others skip it. Sweeping is idempotent, so
    the lock only saves work.
    """

    def __init__(
        self,
        client: Client,
        namespaces: list[str],
        node: str,
        *,
        interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        self._client = client
        self._namespaces = namespaces
        self._node = node
        self._interval_s = interval_s
        self._batch = batch
        self._log = Fields(node=node)
        super().__init__("dtaskq-sweeper")

    def sweep_once(self) -> None:
        """Sweeps every served partition whose lock this worker wins now."""
        lock_ms = max(1, int(self._interval_s * 1000))
        for namespace in self._namespaces:
            for partition in self._client.partitions(namespace):
                if not self._client.redis.set(
                    partition.sweep_lock_key(), self._node, nx=True, px=lock_ms
                ):
                    continue
                while not self.stopping.is_set():
                    result = self._client.sweep(namespace, partition.index, self._batch)
                    if result.reclaimed or result.deleted:
                        self._log.info(
                            "swept: %d leases ended, %d tasks deleted",
                            result.reclaimed,
                            result.deleted,
                            extra={"ns": namespace},
                        )
                    if not result.more:
                        break

    def run(self) -> None:
        """Sweeps every interval."""
        while not self.stopping.wait(self._interval_s):
            try:
                self.sweep_once()
            except (DtaskqError, redis.RedisError) as exc:
                self._log.warning("sweep failed: %s", exc)
            except Exception:  # keep sweeping at the next interval
                self._log.exception("sweep failed")
