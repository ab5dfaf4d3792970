"""dtaskq: a Redis-backed distributed work queue.

Work is split into units, spread over worker processes on many hosts, and tracked in Redis
with one atomic Lua script per state change.
"""

from typing import TYPE_CHECKING, Any

from .aio import AsyncClient
from .client import Client
from .errors import (
    AcksMissing,
    DtaskqError,
    InvalidArgument,
    LeaseLost,
    PermanentRejection,
    TaskConflict,
    TaskDoesNotExist,
    TaskExists,
    TaskNotFinalizing,
    TaskNotRunning,
    TaskStillRunning,
    TaskTooFresh,
    TransientError,
    UnitAlreadyTerminal,
    UnitNotReady,
    UnitWrongNode,
)
from .models import (
    DONE,
    Ack,
    ClaimedUnit,
    ClaimStatus,
    Done,
    Task,
    TaskRef,
    TaskStatus,
    Unit,
    UnitSpec,
    UnitStatus,
)
from .ops import SweepResult

if TYPE_CHECKING:
    from .worker import Worker

__all__ = [
    "DONE",
    "Ack",
    "AcksMissing",
    "AsyncClient",
    "ClaimStatus",
    "ClaimedUnit",
    "Client",
    "Done",
    "DtaskqError",
    "InvalidArgument",
    "LeaseLost",
    "PermanentRejection",
    "SweepResult",
    "Task",
    "TaskConflict",
    "TaskDoesNotExist",
    "TaskExists",
    "TaskNotFinalizing",
    "TaskNotRunning",
    "TaskRef",
    "TaskStatus",
    "TaskStillRunning",
    "TaskTooFresh",
    "TransientError",
    "Unit",
    "UnitAlreadyTerminal",
    "UnitNotReady",
    "UnitSpec",
    "UnitStatus",
    "UnitWrongNode",
    "Worker",
]


def __getattr__(name: str) -> Any:
    # The worker runtime loads on first use: a program that only adds and reads tasks does
    # not pay for it.
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Worker"])
