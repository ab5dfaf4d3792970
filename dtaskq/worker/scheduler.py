"""One namespace's tasks on one node: when to start and stop local work, and the callbacks
and acks of groups and barriers (``docs/rules.md``, ``docs/runtime.md``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..client import Client
from ..errors import DtaskqError
from ..models import Task, TaskRef, TaskStatus, TaskSummary, TaskView
from .events import EventFeed
from .gate import Gate
from .leases import Claims
from .logs import Fields
from .loop import Loop
from .provider import Provider, TaskDescriptor, TaskHandle
from .recorder import DEFAULT_INTERVAL_S, Recorder
from .settle import NodeContext, Settlement

DEFAULT_RESYNC_S = 5.0
HANDLE_MIN_S = 1.0
"""A handle that ends sooner after its start is not restarted at once (see ``_take_woken``)."""
_BARRIERS = (TaskStatus.PREPARING, TaskStatus.SWAPPING)

EVENT_WAIT_S = 0.25
"""How long the scheduler waits for events: also how soon it notices that its callbacks
finished or that it should stop."""


@dataclass
class Local:
    """What this node knows and did about one task version."""

    task: Task
    recovered: bool
    """First seen past STARTED: this process did not see the task run."""
    handle: TaskHandle | None = None
    """The provider's run of the task here, the latest one."""
    recorder: Recorder | None = None
    """The recorder handed to that run (told when units come back)."""
    started_at: float = 0.0
    end_seen: bool = False
    """The loop has noticed that the latest handle ended."""
    started: bool = False
    """A handle ran here in this process: the node took part even if it owns no unit."""
    groups: dict[str, str] = field(default_factory=dict)
    """Groups whose callback ran (or needs no rerun) -> its error, "" for success."""
    post_done: bool = False
    """The post phase (swap callbacks, post ack) is done or needs no rerun."""
    completed: bool = False
    """``on_task_completed`` ran (or needs no rerun)."""
    recovery_decided: bool = False
    busy: Future[None] | None = None
    """The settlement running on the callback pool, if any."""
    dirty: bool = False
    """The task changed while a settlement ran: settle again once it is done."""


class Scheduler(Loop):
    """Runs the tasks of ``namespace`` through ``provider`` on this node.

    It wakes on the events the functions write to each partition's stream (within
    milliseconds of a change on any node) and reads this node's view of the tasks they name; each
    ``resync_s`` it reads a summary of every task of the namespace (one call per partition) and
    the views of those where something may be due, so a missed event delays work but never
    loses it. Callbacks run on a small pool, one task's at a time, so a slow swap never holds up
    another task's start or termination.
    """

    def __init__(
        self,
        client: Client,
        namespace: str,
        provider: Provider,
        node: str,
        claims: Claims,
        gate: Gate,
        *,
        resync_s: float = DEFAULT_RESYNC_S,
        progress_interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.namespace = namespace
        self.client = client
        self.provider = provider
        self.node = node
        self._claims = claims
        self._gate = gate
        self._resync_s = resync_s
        self._progress_interval = progress_interval
        self.log = Fields(node=node, ns=namespace)
        self._context = NodeContext(client, provider, node, self.log)
        self._local: dict[str, Local] = {}
        self._feed = EventFeed(client, self.log)
        self._woken: set[str] = set()
        self._woken_lock = threading.Lock()
        self._callbacks = ThreadPoolExecutor(4, thread_name_prefix=f"dtaskq-{namespace}-callbacks")
        super().__init__(f"dtaskq-{namespace}")

    # -- life cycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops scheduling and terminates every local handle."""
        super().stop()
        self._feed.stop()
        for local in list(self._local.values()):
            if local.handle is not None:
                local.handle.terminate()
        self._callbacks.shutdown(wait=False, cancel_futures=True)

    def wake(self, refs: Iterable[TaskRef]) -> None:
        """Rereads these tasks soon (say, a heartbeat found them no longer running)."""
        with self._woken_lock:
            self._woken.update(r.task_id for r in refs if r.namespace == self.namespace)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Reacts to events and resyncs until stopped."""
        next_resync = 0.0
        while not self.stopping.is_set():
            try:
                # A namespace without partitions gets them with its first task: look for them
                # at every pass until then, not only at the slow resync.
                if time.monotonic() >= next_resync or not self._feed.following:
                    self._feed.follow(self.client.partitions(self.namespace))
                    self._resync()
                    next_resync = time.monotonic() + self._resync_s
                for task_id in self._events() | self._take_woken():
                    self._evaluate(task_id, self._view(task_id))
            except DtaskqError as exc:
                self.log.warning("scheduling pass failed: %s", exc)
                self.stopping.wait(0.5)
            except Exception:  # a provider's bug must not end scheduling for good
                self.log.exception("scheduling pass failed")
                self.stopping.wait(0.5)

    def _take_woken(self) -> set[str]:
        """Tasks to reread besides those events named: woken by heartbeats, whose callbacks
        ran while more changed, or whose handle just ended (units may have come back while it
        ran, with no event still to come). A handle that ended within HANDLE_MIN_S of its start
        is left to events and the resync, so that nothing restarts in a tight loop."""
        with self._woken_lock:
            woken, self._woken = self._woken, set()
        now = time.monotonic()
        for task_id, local in list(self._local.items()):
            if local.dirty and (local.busy is None or local.busy.done()):
                woken.add(task_id)
            if local.handle is not None and not local.end_seen and local.handle.done():
                local.end_seen = True
                if now - local.started_at >= HANDLE_MIN_S:
                    woken.add(task_id)
        return woken

    def _events(self) -> set[str]:
        """Ids of the tasks that events name, waiting up to EVENT_WAIT_S for some."""
        task_ids: set[str] = set()
        for event in self._feed.take(EVENT_WAIT_S):
            task_ids.add(event.task_id)
            if event.kind == "returned" and event.node in ("", self.node):
                self._units_returned(event.task_id)
        return task_ids

    def _view(self, task_id: str) -> TaskView | None:
        return self.client.task_view(self.namespace, task_id, self.node)

    def _units_returned(self, task_id: str) -> None:
        """Units of a task this node runs are claimable again: its running handle takes them
        before it goes on with its spans, instead of when a span ends."""
        local = self._local.get(task_id)
        if local is not None and local.recorder is not None:
            local.recorder.units_returned()

    def _resync(self) -> None:
        """Reads a summary of every task (one call per partition) and, for the tasks where
        something may be due here, this node's view of it."""
        summaries = {s.task_id: s for s in self.client.task_summaries(self.namespace, self.node)}
        for task_id in set(self._local) | set(summaries):
            summary = summaries.get(task_id)
            if summary is None:
                self._evaluate(task_id, None)
            elif self._due(summary):
                self._evaluate(task_id, self._view(task_id))
        for desc in self.provider.get_local_tasks():
            current = summaries.get(desc.task_id)
            if current is None or current.version != desc.version:
                self._cleanup(desc.task_id, desc)

    def _due(self, summary: TaskSummary) -> bool:
        """True unless this node already acted on the task as it stands: same version and
        status, nothing to start, no settlement left to finish."""
        local = self._local.get(summary.task_id)
        if local is None or local.dirty:
            return True
        task = local.task
        if (task.version, task.status) != (summary.version, summary.status):
            return True
        if summary.status in _BARRIERS:
            return True  # acks may have come in with no event seen (the stream is capped)
        return summary.claimable and self._idle(local) and not self._gate.closed

    # -- decisions -------------------------------------------------------------------------

    def _evaluate(self, task_id: str, view: TaskView | None) -> None:
        task = None if view is None else view.task
        local = self._local.get(task_id)
        if local is not None and (task is None or local.task.version != task.version):
            self._retire(task_id, local)
            local = None
        if view is None or task is None:
            return
        if local is None:
            local = self._local[task_id] = Local(task, recovered=task.status != TaskStatus.STARTED)
        local.task = task
        extra = {"task": task_id}
        if task.status is TaskStatus.STARTED:
            if not self._gate.closed and self._idle(local) and view.claimable:
                self._start(local)
        elif local.handle is not None and not local.handle.done():
            self.log.info("terminating: task is %s", task.status.value, extra=extra)
            local.handle.terminate()
            self._claims.drop_task(task.ref)
        if local.busy is not None and not local.busy.done():
            local.dirty = True
            return
        local.dirty = False
        local.busy = self._callbacks.submit(self._settle, local, view)

    @staticmethod
    def _idle(local: Local) -> bool:
        return local.handle is None or local.handle.done()

    def _start(self, local: Local) -> None:
        # The provider gets the whole task (payload, every unit): read once per start.
        task = self.client.get_task(self.namespace, local.task.task_id)
        if task is None or task.version != local.task.version:
            return  # replaced meanwhile: its events follow
        recorder = Recorder(
            self.client,
            task,
            self.node,
            self._claims,
            self._gate,
            interval=self._progress_interval,
        )
        try:
            local.handle = self.provider.start_task(task, recorder)
            local.recorder = recorder
        except Exception:  # a provider's bug must not stop the worker
            self.log.exception("start_task failed", extra={"task": task.task_id})
            return
        local.started = True
        local.started_at = time.monotonic()
        local.end_seen = False
        self.log.info("started (version %d)", task.version, extra={"task": task.task_id})

    def _retire(self, task_id: str, local: Local) -> None:
        """Forgets a task version that is gone or replaced, stopping its local work."""
        if local.handle is not None:
            local.handle.terminate()
        self._claims.drop_task(local.task.ref)
        del self._local[task_id]
        for desc in self.provider.get_local_tasks():
            if desc.task_id == task_id and desc.version == local.task.version:
                self._cleanup(task_id, desc)

    def _cleanup(self, task_id: str, desc: TaskDescriptor) -> None:
        try:
            self.provider.cleanup_task(desc)
        except Exception:  # retried at the next resync
            self.log.exception("cleanup_task failed", extra={"task": task_id})
        else:
            self.log.info("local state cleaned up", extra={"task": task_id})

    # -- callbacks and acks (on the callback pool) -----------------------------------------

    def _settle(self, local: Local, view: TaskView) -> None:
        extra = {"task": view.task.task_id}
        try:
            Settlement(self._context, local, view).run()
        except DtaskqError as exc:
            self.log.warning("settling failed: %s", exc, extra=extra)
            local.dirty = True
        except Exception:
            self.log.exception("settling failed", extra=extra)
