"""dtaskq: a Redis-backed distributed work queue.

Work is split into units, spread over worker processes on many hosts, and tracked in Redis
with one atomic Lua script per state change.
"""

from typing import TYPE_CHECKING, Any

from .aio import AsyncClient
from .client import Client
from .errors import (
    AcksMissing,
    BurstTimeout,
    ConfigurationError,
    DeadlineExceeded,
    DtaskqError,
    InvalidArgument,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    PermanentRejection,
    ServerError,
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
from .handlers import Fail, Handler, JobContext, Registry, Retry
from .job_handle import AsyncJob, Job
from .job_models import (
    Backoff,
    ClaimedJob,
    DeadJob,
    JobClaim,
    JobInfo,
    JobOptions,
    JobSpec,
    JobStatus,
    JobSweepResult,
)
from .keys import QueuePartition
from .models import (
    DONE,
    Ack,
    ClaimedName,
    ClaimedUnit,
    ClaimResult,
    ClaimStatus,
    Done,
    Task,
    TaskRef,
    TaskStatus,
    TaskSummary,
    TaskView,
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
    "AsyncJob",
    "Backoff",
    "BurstTimeout",
    "ClaimResult",
    "ClaimStatus",
    "ClaimedJob",
    "ClaimedName",
    "ClaimedUnit",
    "Client",
    "ConfigurationError",
    "DeadJob",
    "DeadlineExceeded",
    "Done",
    "DtaskqError",
    "Fail",
    "Handler",
    "InvalidArgument",
    "Job",
    "JobCancelled",
    "JobClaim",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobOptions",
    "JobSpec",
    "JobStatus",
    "JobSweepResult",
    "JobTimeout",
    "LeaseLost",
    "PermanentRejection",
    "QueuePartition",
    "Registry",
    "Retry",
    "ServerError",
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
    "TaskSummary",
    "TaskTooFresh",
    "TaskView",
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
