"""What a worker asks of the code that does the work: the provider protocols of
``docs/runtime.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..models import Task

if TYPE_CHECKING:
    from .recorder import Recorder


@dataclass(frozen=True)
class TaskDescriptor:
    """A task version for which a provider holds local state (files, indexes, caches)."""

    task_id: str
    version: int


@runtime_checkable
class TaskHandle(Protocol):
    """The local run of a task on one node, as :meth:`Provider.start_task` returns it."""

    def terminate(self) -> None:
        """Asks the run to stop soon: the task left STARTED, or the worker is shutting down."""

    def done(self) -> bool:
        """True once the run has stopped (finished, terminated or crashed)."""


class Provider(Protocol):
    """Runs the tasks of one namespace on this node.

    Every callback may be called again after a crash and must be idempotent. The optional
    callbacks are described by :class:`UnitAwareProvider` and :class:`RecoveryAwareProvider`;
    a provider implements whichever it needs.
    """

    def get_local_tasks(self) -> list[TaskDescriptor]:
        """The task versions this node keeps local state for; the worker calls
        :meth:`cleanup_task` for each once its task is gone from Redis or replaced."""

    def cleanup_task(self, desc: TaskDescriptor) -> None:
        """Deletes the local state of a task version that is gone."""

    def start_task(self, task: Task, recorder: Recorder) -> TaskHandle:
        """Starts working on ``task`` here: claim units and report through ``recorder``
        (:class:`~dtaskq.worker.UnitRunner` does this for the common case)."""


class UnitAwareProvider(Provider, Protocol):
    """A provider that takes part in group completion and the ack barrier (``docs/rules.md``).

    A callback that raises counts as a failure: it fails the node's prepare or post ack and
    so the task; its message becomes the ack's error.
    """

    def on_group_completed(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        """Every unit of ``group`` is complete; ``local_unit_ids`` are those this node did.
        Called only on nodes owning units of the group."""

    def on_swap_requested(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        """The task entered SWAPPING: make this node's results of ``group`` live."""

    def on_task_completed(self, task: Task) -> None:
        """Called once per node when the task is SWAPPING or terminal."""


class RecoveryAwareProvider(Provider, Protocol):
    """A provider that can tell whether its callbacks' local effects survived a restart."""

    def local_callbacks_done(self, task: Task, node: str) -> bool:
        """False when the local work of callbacks whose acks are recorded is incomplete (say,
        a swap was lost with the disk), so the worker runs those callbacks again."""


class LocalTasksInMemory:
    """``get_local_tasks`` and ``cleanup_task`` for a provider whose local state lives and dies
    with its process: it calls :meth:`remember` in ``start_task`` and inherits the rest (its
    own ``__init__`` calls this one)."""

    def __init__(self) -> None:
        self._started: set[TaskDescriptor] = set()

    def remember(self, task: Task) -> None:
        """Notes that ``task`` was started here."""
        self._started.add(TaskDescriptor(task.task_id, task.version))

    def get_local_tasks(self) -> list[TaskDescriptor]:
        """The task versions started here."""
        return list(self._started)

    def cleanup_task(self, desc: TaskDescriptor) -> None:
        """Forgets a task version that is gone."""
        self._started.discard(desc)
