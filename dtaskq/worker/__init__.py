"""The worker runtime (``docs/runtime.md``): what runs on the hosts.

A :class:`Worker` serves namespaces through :class:`Provider` objects. Per namespace a
scheduler starts local work when a task has units for this node, stops it when the task
leaves STARTED, fires group callbacks and drives the ack barrier; heartbeats keep leases alive
on their own thread; a sweeper reclaims expired leases and deletes old tasks. Providers report
through a :class:`Recorder`; :class:`UnitRunner` is a ready-made handle that runs one function
per claimed unit.
"""

from .gate import Gate
from .leases import Claim, Claims
from .provider import (
    LocalTasksInMemory,
    Provider,
    RecoveryAwareProvider,
    TaskDescriptor,
    TaskHandle,
    UnitAwareProvider,
)
from .recorder import Recorder
from .runner import FatalError, UnitContext, UnitFunction, UnitRunner
from .runtime import Worker, default_node_id
from .scheduler import Scheduler

__all__ = [
    "Claim",
    "Claims",
    "FatalError",
    "Gate",
    "LocalTasksInMemory",
    "Provider",
    "Recorder",
    "RecoveryAwareProvider",
    "Scheduler",
    "TaskDescriptor",
    "TaskHandle",
    "UnitAwareProvider",
    "UnitContext",
    "UnitFunction",
    "UnitRunner",
    "Worker",
    "default_node_id",
]
