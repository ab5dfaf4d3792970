"""Group callbacks, barrier acks and finalization of one task on one node
(``docs/rules.md``, ``docs/runtime.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..client import Client
from ..errors import AcksMissing, TaskNotFinalizing
from ..models import Task, TaskStatus, TaskView
from .logs import Fields
from .provider import Provider

MAX_ACK_ERROR = 65536

_SWAPPED = (TaskStatus.SWAPPING, TaskStatus.FINISHED)
"""Statuses in which an owning node runs its post phase (in FINISHED, only a replay)."""

_GROUPS_MAY_RUN = (
    TaskStatus.STARTED,
    TaskStatus.PREPARING,
    TaskStatus.SWAPPING,
    TaskStatus.FINISHED,
)


def local_groups(view: TaskView, *, complete_only: bool) -> list[str]:
    """The groups of a named-unit task in which the view's node owns units; with
    ``complete_only``, only those whose every unit is complete. Range tasks have none."""
    return [g for g, left in view.groups_left.items() if not complete_only or left == 0]


@dataclass(frozen=True)
class NodeContext:
    """What settling a task needs of the node it runs on."""

    client: Client
    provider: Provider
    node: str
    log: Fields


class Settled(Protocol):
    """What this process remembers of a task's callbacks and acks; a settlement reads it and
    records in it each step it took."""

    recovered: bool
    """First seen past STARTED: this process did not see the task run."""
    recovery_decided: bool
    started: bool
    """A handle ran here in this process: the node took part even if it owns no unit."""
    groups: dict[str, str]
    """Groups whose callback ran (or needs no rerun) -> its error, "" for success."""
    post_done: bool
    """The post phase (swap callbacks, post ack) is done or needs no rerun."""
    completed: bool
    """``on_task_completed`` ran (or needs no rerun)."""


class Settlement:
    """One pass over a task's callbacks and acks on this node; repeatable, since every step
    remembers in ``local`` (this process) or in Redis (acks) that it happened."""

    def __init__(self, context: NodeContext, local: Settled, view: TaskView) -> None:
        self._s = context
        self._local = local
        self._view = view
        self._task = view.task
        self._full: Task | None = None
        self._node = context.node
        self._extra = {"task": view.task.task_id}

    def run(self) -> None:
        """Fires what is due for the task's current status."""
        task, local = self._task, self._local
        owner = self._node in task.nodes
        if local.recovered and not local.recovery_decided:
            self._decide_recovery()
        if owner and task.status in _GROUPS_MAY_RUN:
            self._group_callbacks()
        if owner and task.status is TaskStatus.PREPARING and self._node not in task.prepare_acks:
            errors = [e for e in local.groups.values() if e]
            self._s.client.record_prepare_ack(task.ref, self._node, not errors, _joined(errors))
            self._s.log.info("prepare ack recorded", extra=self._extra)
        if owner and task.ack_barrier and task.status in _SWAPPED and not local.post_done:
            self._post_phase()
        if task.status is TaskStatus.SWAPPING and (local.post_done or _all_acked(task)):
            self._finalize()
        if task.status.is_terminal and not local.completed and (owner or local.started):
            self._call("on_task_completed")
            local.completed = True

    def _decide_recovery(self) -> None:
        """A restarted node skips the phases whose acks it recorded, unless the provider says
        their local work is incomplete."""
        task, local, node = self._task, self._local, self._node
        local.recovery_decided = True
        check = getattr(self._s.provider, "local_callbacks_done", None)
        if check is not None and not check(self._snapshot(), node):
            self._s.log.info("local callbacks incomplete: replaying them", extra=self._extra)
            return
        if task.prepare_barrier:
            groups_done = node in task.prepare_acks
        elif task.ack_barrier:
            groups_done = node in task.post_acks
        else:
            groups_done = True
        if groups_done:
            local.groups = dict.fromkeys(local_groups(self._view, complete_only=True), "")
        local.post_done = local.completed = node in task.post_acks or not task.ack_barrier

    def _group_callbacks(self) -> None:
        local = self._local
        for group in local_groups(self._view, complete_only=True):
            if group not in local.groups:
                local.groups[group] = self._call("on_group_completed", group, self._units(group))

    def _post_phase(self) -> None:
        task, local = self._task, self._local
        errors = [] if task.prepare_barrier else [e for e in local.groups.values() if e]
        for group in local_groups(self._view, complete_only=False):
            errors.append(self._call("on_swap_requested", group, self._units(group)))
        if not local.completed:
            errors.append(self._call("on_task_completed"))
            local.completed = True
        errors = [e for e in errors if e]
        if self._node not in task.post_acks:
            self._s.client.record_post_ack(task.ref, self._node, not errors, _joined(errors))
            self._s.log.info("post ack recorded", extra=self._extra)
        local.post_done = True

    def _finalize(self) -> None:
        try:
            if self._s.client.finalize_task(self._task.ref):
                self._s.log.info("finalized", extra=self._extra)
        except (AcksMissing, TaskNotFinalizing):
            pass  # another node's ack is still due, or the task moved on

    def _units(self, group: str) -> list[str]:
        """This node's units of ``group``, for a callback about to run."""
        return self._s.client.node_units(self._task.ref, self._node, group)

    def _snapshot(self) -> Task:
        """The whole task, for the provider: read once per settlement, and only when a
        callback runs (a view holds neither the payload nor other nodes' units)."""
        if self._full is None:
            full = self._s.client.get_task(self._task.namespace, self._task.task_id)
            self._full = full if full is not None and full.version == self._task.version else None
        return self._full or self._task

    def _call(self, name: str, *args: Any) -> str:
        """Runs an optional provider callback on the task and ``args``; returns its error
        text, "" on success."""
        callback = getattr(self._s.provider, name, None)
        if callback is None:
            return ""
        try:
            callback(self._snapshot(), *args)
        except Exception as exc:  # a callback's failure is reported through the ack
            self._s.log.warning("%s failed: %s", name, exc, extra=self._extra)
            return f"{name}: {type(exc).__name__}: {exc}"
        self._s.log.info("%s done", name, extra=self._extra)
        return ""


def _all_acked(task: Task) -> bool:
    return all(n in task.post_acks and task.post_acks[n].success for n in task.nodes)


def _joined(errors: list[str]) -> str:
    return "; ".join(errors)[:MAX_ACK_ERROR]
