"""The worker process: schedulers, heartbeats, sweeps and a graceful shutdown
(``docs/runtime.md``)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from .. import validate
from ..client import Client
from ..errors import DtaskqError, InvalidArgument
from ..handlers import Registry
from ..models import TaskRef
from ..ops import DEFAULT_SWEEP_BATCH
from .gate import Gate
from .heartbeats import Heartbeats
from .jobs import JobRunner
from .leases import Claims
from .logs import Fields
from .provider import Provider
from .recorder import DEFAULT_INTERVAL_S
from .scheduler import DEFAULT_RESYNC_S, Scheduler
from .sweeper import DEFAULT_SWEEP_INTERVAL_S, Sweeper

DEFAULT_CONCURRENCY = 8
DEFAULT_LEASE_MS = 30_000
DEFAULT_GRACE_MS = 30_000
_POLL_S = 0.05


def default_node_id() -> str:
    """This host's name as a node id (see :func:`as_node_id`).

    A node id must stay the same across restarts of the same host identity: sticky units and
    barrier acks wait for the node that holds them, and a restarted worker takes them back
    only under the same id. It must also be unique among live workers, so several workers on
    one host each need an id of their own (``--node-id``)."""
    return as_node_id(socket.gethostname())


def as_node_id(name: str) -> str:
    """``name`` made a valid node id: braces, whitespace and other unprintable characters
    become ``-``, and the result is cut to 200 bytes; "localhost" if nothing is left."""
    cleaned = "".join(c if c.isprintable() and validate.is_ident(c) else "-" for c in name)
    cut = cleaned.encode()[: validate.MAX_ID_BYTES].decode(errors="ignore")
    return cut or "localhost"


class Worker:
    """Serves namespaces and job queues on this node: one :class:`~dtaskq.worker.Scheduler`
    per namespace with its provider, a :class:`~dtaskq.worker.jobs.JobRunner` for the
    ``queues`` with the ``handlers`` of a :class:`dtaskq.Registry` (default queues: those its
    handlers name), one heartbeat thread, one sweeper. At most ``concurrency`` units of tasks
    run at once, and at most ``concurrency`` jobs.

    Embed it with :meth:`start` and :meth:`stop`, or let :meth:`run` own the process: it
    stops gracefully on the first SIGTERM or SIGINT and exits at once on the second.

    ``node_id`` names this worker to the others: the same across restarts of the same host
    identity, unique among live workers (default: :func:`default_node_id`, the host name).

    ``lease_ms`` caps the lease the heartbeats plan for: each claim is renewed a third of
    ``min(lease_ms, task's lease_ms)`` after the last renewal. ``grace_ms`` is how long
    :meth:`stop` lets running units finish before it releases them to other nodes.
    """

    def __init__(
        self,
        client: Client,
        providers: Mapping[str, Provider] | None = None,
        *,
        handlers: Registry | None = None,
        queues: Sequence[str] | None = None,
        node_id: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_ms: int = DEFAULT_LEASE_MS,
        grace_ms: int = DEFAULT_GRACE_MS,
        resync_s: float = DEFAULT_RESYNC_S,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
        progress_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        providers = providers or {}
        for namespace in providers:
            validate.namespace(namespace)
        if handlers is not None and not isinstance(handlers, Registry):
            raise InvalidArgument("handlers must be a dtaskq.Registry")
        if queues is None:
            queues = handlers.queues() if handlers is not None else []
        queues = [validate.namespace(q) for q in dict.fromkeys(queues)]
        if queues and handlers is None:
            raise InvalidArgument("a worker serving queues needs a registry of handlers")
        if not providers and not queues:
            raise InvalidArgument(
                "a worker needs a namespace and its provider, or a queue and its handlers"
            )
        self.node = validate.ident(node_id or default_node_id(), "node id")
        validate.integer(concurrency, "concurrency", 1, 10_000)
        self._lease_ms = validate.integer(lease_ms, "lease_ms", 1)
        self._grace_ms = validate.integer(grace_ms, "grace_ms", 0)
        for name, value in (
            ("resync_s", resync_s),
            ("sweep_interval_s", sweep_interval_s),
            ("progress_interval_s", progress_interval_s),
        ):
            if not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidArgument(f"{name} must be a number >= 0")
        validate.integer(sweep_batch, "sweep_batch", 1, 10_000)
        self.client = client
        self.claims = Claims()
        self.gate = Gate(concurrency)
        self.log = Fields(node=self.node)
        self.schedulers = [
            Scheduler(
                client,
                namespace,
                provider,
                self.node,
                self.claims,
                self.gate,
                resync_s=resync_s,
                progress_interval=progress_interval_s,
            )
            for namespace, provider in providers.items()
        ]
        self.jobs = (
            JobRunner(client, handlers, queues, self.node, concurrency)
            if handlers is not None and queues
            else None
        )
        self._heartbeats = Heartbeats(
            client,
            self.node,
            self.claims,
            max_lease_ms=lease_ms,
            on_stopped=self._stopped,
            renew_jobs=self.jobs.renew if self.jobs else None,
        )
        self._sweeper = Sweeper(
            client,
            list(providers),
            self.node,
            queues=queues,
            interval_s=sweep_interval_s,
            batch=sweep_batch,
        )
        self._queues = queues
        self._stop_requested = threading.Event()

    def start(self) -> None:
        """Starts every thread; returns at once."""
        self._heartbeats.start()
        self._sweeper.start()
        for scheduler in self.schedulers:
            scheduler.start()
        if self.jobs is not None:
            self.jobs.start()
        served = [s.namespace for s in self.schedulers] + [f"queue {q}" for q in self._queues]
        self.log.info("worker started: %s", ", ".join(served))

    def stop(self, grace_ms: int | None = None) -> None:
        """Stops claiming, lets running units finish for up to ``grace_ms`` (default: the
        worker's), then terminates local handles and releases the units still held, so that
        other nodes take them at once instead of after their leases."""
        grace = self._grace_ms if grace_ms is None else grace_ms
        self.gate.close()
        jobs = self.jobs
        if jobs is not None:
            jobs.stop_claiming()
        running = len(self.claims) + (jobs.running if jobs else 0)
        self.log.info("stopping: %d units and jobs running, grace %d ms", running, grace)
        deadline = time.monotonic() + grace / 1000
        if jobs is not None:
            jobs.wait_running(deadline)
        while len(self.claims) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        for scheduler in self.schedulers:
            scheduler.stop()
        self._release()
        if jobs is not None:
            jobs.stop()
        self._heartbeats.stop()
        self._sweeper.stop()
        self.log.info("worker stopped")

    def _release(self) -> None:
        """Completes the units done here but not reported yet, and gives back the others."""
        held = []
        for claim in self.claims.snapshot():
            if not self.claims.finished(claim):
                held.append(claim)
                continue
            try:  # its thread may report it too: an identical completion is accepted twice
                self.client.complete_unit(claim.ref, self.node, claim.unit, claim.token)
            except DtaskqError as exc:
                self.log.warning("completion failed: %s", exc, extra={"unit": claim.unit})
            self.claims.remove(claim.ref, claim.unit)
        if not held:
            return
        try:
            released = self.client.release(self.node, [(c.ref, c.unit, c.token) for c in held])
        except DtaskqError as exc:
            self.log.warning("release failed, the leases will run out instead: %s", exc)
            return
        for claim in held:
            self.claims.remove(claim.ref, claim.unit)
        self.log.info("released %d units", sum(released))

    def _stopped(self, refs: set[TaskRef]) -> None:
        for scheduler in self.schedulers:
            scheduler.wake(refs)

    def request_stop(self) -> None:
        """Asks :meth:`run` to stop gracefully (what the first SIGTERM or SIGINT does)."""
        self._stop_requested.set()

    def run(self) -> int:
        """Runs until SIGTERM or SIGINT (or :meth:`request_stop`), then stops gracefully; a
        second signal exits the process at once. Call from the main thread. Returns 0."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        while not self._stop_requested.wait(0.5):
            pass
        self.stop()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested.is_set():
            os._exit(128 + signum)
        self.log.info("signal %d: stopping (a second one exits at once)", signum)
        self._stop_requested.set()
