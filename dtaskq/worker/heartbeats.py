"""Lease renewal on its own thread, so that a handler hogging the CPU or blocking cannot
starve it (``docs/runtime.md``)."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence

from ..client import Client
from ..errors import DtaskqError
from ..models import ClaimStatus, TaskRef
from .leases import Claim, Claims
from .loop import Loop

log = logging.getLogger("dtaskq.worker")

TICK_S = 0.1
PRESENCE_S = 1.0
"""How often a worker announces that it runs as its node."""
PRESENCE_TTL_MS = 5_000
"""How long an announcement lasts: a stopped worker's node id is free again after it."""


def renew(client: Client, node: str, claims: Claims, held: Sequence[Claim]) -> set[TaskRef]:
    """Renews ``held`` in one call per partition and files the answers in ``claims``: lost
    units are marked lost, units of tasks that stopped running are forgotten. Returns the task
    versions found no longer running."""
    if not held:
        return set()
    answers = client.heartbeat(node, [(c.ref, c.unit, c.token) for c in held])
    stopped: set[TaskRef] = set()
    for claim, answer in zip(held, answers, strict=True):
        if answer is ClaimStatus.LOST:
            where = {"ns": claim.ref.namespace, "task": claim.ref.task_id, "unit": claim.unit}
            log.warning("lease lost", extra=where)
            claims.lose(claim.ref, claim.unit)
        elif answer is ClaimStatus.NOT_RUNNING:
            stopped.add(claim.ref)
    for ref in stopped:
        claims.drop_task(ref)
    return stopped


class Heartbeats(Loop):
    """Renews each held claim a third of its lease (capped by ``max_lease_ms``) after its
    claim or last renewal, so that two renewals can fail before a lease runs out.

    Every PRESENCE_S it also announces that this process runs as its node, and warns when
    another live process announces the same node id: two workers sharing one would take each
    other's units and acks (``docs/runtime.md``)."""

    def __init__(
        self,
        client: Client,
        node: str,
        claims: Claims,
        *,
        max_lease_ms: int,
        on_stopped: Callable[[set[TaskRef]], None],
        renew_jobs: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._renew_jobs = renew_jobs
        self._node = node
        self._claims = claims
        self._max_lease_ms = max_lease_ms
        self._on_stopped = on_stopped
        self._process = f"{os.getpid()}.{secrets.token_hex(4)}"
        self._next_presence = 0.0
        self._rival: str | None = None
        super().__init__("dtaskq-heartbeats")

    def period_s(self, claim: Claim) -> float:
        """Seconds between two renewals of ``claim``."""
        return max(TICK_S, min(claim.lease_ms, self._max_lease_ms) / 3000)

    def run(self) -> None:
        """Renews due claims every tick."""
        due: dict[Claim, float] = {}
        while not self.stopping.wait(TICK_S):
            try:
                self._announce()
                due = self._renew_due(due)
                if self._renew_jobs is not None:
                    self._renew_jobs()
            except DtaskqError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # the thread must outlive any surprise, or every lease goes
                log.exception("heartbeat failed")

    def _announce(self) -> None:
        now = time.monotonic()
        if now < self._next_presence:
            return
        self._next_presence = now + PRESENCE_S
        rival = self._client.announce_node(self._node, self._process, PRESENCE_TTL_MS)
        if rival is not None and rival != self._rival:
            log.warning(
                "another live worker runs as node %s (process %s): node ids must be unique "
                "among live workers; pin one with --node-id",
                self._node,
                rival,
            )
        self._rival = rival

    def _renew_due(self, due: dict[Claim, float]) -> dict[Claim, float]:
        """Renews the claims whose time has come; returns when each held claim is due next.
        Raises when the renewal failed: its claims are then due again at the next tick."""
        now = time.monotonic()
        due = {c: due.get(c, now + self.period_s(c) - TICK_S) for c in self._claims.snapshot()}
        ready = [c for c, at in due.items() if at <= now]
        if not ready:
            return due
        stopped = renew(self._client, self._node, self._claims, ready)
        for claim in ready:
            due[claim] = now + self.period_s(claim)
        if stopped:
            self._on_stopped(stopped)
        return due
