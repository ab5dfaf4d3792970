"""The one exception hierarchy of dtaskq, and the mapping from script error codes to it."""

from __future__ import annotations

import re
from typing import Any


class DtaskqError(Exception):
    """Base of every dtaskq error; carries what the failed call was about.

    ``code`` is the script's ``DTQ_`` code where one answered.
    """

    code = ""

    def __init__(
        self,
        message: str,
        *,
        namespace: str | None = None,
        task_id: str | None = None,
        version: int | None = None,
        unit: str | None = None,
        node: str | None = None,
        queue: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.namespace = namespace
        self.task_id = task_id
        self.version = version
        self.unit = unit
        self.node = node
        self.queue = queue
        self.job_id = job_id


class InvalidArgument(DtaskqError, ValueError):
    """An argument is malformed; raised before any Redis call, or by a script's own check."""

    code = "INVALID_ARGUMENT"


class PermanentRejection(DtaskqError):
    """The state forbids the call: retrying the same call cannot succeed."""


class TaskExists(PermanentRejection):
    """A task with that id is still active."""

    code = "TASK_EXISTS"


class TaskConflict(PermanentRejection):
    """An active task of the namespace holds one of the conflict keys."""

    code = "TASK_CONFLICT"


class TaskDoesNotExist(PermanentRejection):
    """No such task, task version or unit."""

    code = "TASK_DOES_NOT_EXIST"


class TaskNotRunning(PermanentRejection):
    """The task is not in a status that accepts the call (usually: not STARTED)."""

    code = "TASK_NOT_RUNNING"


class UnitWrongNode(PermanentRejection):
    """The unit is owned by another node."""

    code = "UNIT_WRONG_NODE"


class UnitAlreadyTerminal(PermanentRejection):
    """The unit already completed or failed."""

    code = "UNIT_ALREADY_TERMINAL"


class LeaseLost(PermanentRejection):
    """The report's token is stale: the lease expired or the unit was claimed again."""

    code = "LEASE_LOST"


class TaskNotFinalizing(PermanentRejection):
    """``finalize_task`` on a task that is not SWAPPING (or FINISHED)."""

    code = "TASK_NOT_FINALIZING"


class AcksMissing(PermanentRejection):
    """Some expected nodes have not acked; ``nodes`` lists them."""

    code = "ACKS_MISSING"

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes whose acks are missing."""
        return tuple(self.message.rpartition(": ")[2].split())


class TaskStillRunning(PermanentRejection):
    """``cleanup_task`` on an active task."""

    code = "TASK_STILL_RUNNING"


class TaskTooFresh(PermanentRejection):
    """``cleanup_task`` on a terminal task not yet older than its TTL."""

    code = "TASK_TOO_FRESH"


class UnitNotReady(DtaskqError):
    """The unit is backing off after a retryable failure; claim it again later.

    Not permanent: the same call succeeds once the backoff has passed.
    """

    code = "UNIT_NOT_READY"
    retry_after_ms: int | None = None
    """How long until the unit (or, for a range claim, the first unit left) is ready."""


class TransientError(DtaskqError):
    """The server could not be reached or was busy, even after bounded retries."""


class ConfigurationError(DtaskqError):
    """The client or the server is set up in a way dtaskq cannot work with: a permission the
    user lacks, a rejected password or certificate, a cluster node used as a single server, a
    function library this user may not load. Retrying cannot help; the message says what to
    change."""


class ServerError(DtaskqError):
    """The server answered in a way dtaskq does not expect (a Lua runtime error, an unknown
    error reply); the message carries the server's text."""


class JobError(DtaskqError):
    """Base of the outcomes of one job that ``Job.result()`` raises; ``queue`` and ``job_id``
    name it."""

    def __init__(self, message: str, *, error: str = "", **context: Any) -> None:
        super().__init__(message, **context)
        self.error = error
        """The error the job ended with (its handler's, or why the queue ended it)."""


class JobFailed(JobError):
    """``Job.result()`` of a job that failed for good: its attempts ran out, its handler raised
    ``Fail``, or it could not run (unknown handler, undecodable arguments)."""


class DeadlineExceeded(JobFailed):
    """``Job.result()`` of a job whose deadline passed before it started, so it never ran."""


class JobCancelled(JobError):
    """``Job.result()`` of a cancelled job."""


class JobNotFound(JobError, PermanentRejection):
    """No job of that id: never enqueued, dropped at its deadline, or its record expired (its
    result TTL passed, or was 0)."""


class JobTimeout(JobError, TimeoutError):
    """``Job.result(timeout=...)`` gave up waiting; the job itself goes on."""


class BurstTimeout(DtaskqError, TimeoutError):
    """:func:`dtaskq.testing.run_burst` did not drain its queues within its timeout: jobs
    still ran, were ready, or were scheduled past it. The jobs still running were released
    back to their queues."""


_BY_CODE: dict[str, type[DtaskqError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        TaskExists,
        TaskConflict,
        TaskDoesNotExist,
        TaskNotRunning,
        UnitWrongNode,
        UnitAlreadyTerminal,
        LeaseLost,
        TaskNotFinalizing,
        AcksMissing,
        TaskStillRunning,
        TaskTooFresh,
        UnitNotReady,
    )
}

ERROR_CODES = frozenset(_BY_CODE)

# Errors raised from nested Lua functions get the server's location appended:
# " script: <name>, on @user_function:<line>." (Redis) or " script: on @user_function:<line>."
# (Valkey); plain scripts say @user_script.
_BACKING_OFF = re.compile(r"(\d+) ms")
_LOCATION = re.compile(r"\s*script: (?:\w+, )?on @user_(?:script|function):\d+\.\s*$")


def from_script_error(text: str, context: dict[str, Any]) -> DtaskqError | None:
    """The exception for a script's ``DTQ_<CODE> <message>`` reply, or None for other errors.

    An unknown ``DTQ_`` code maps to :class:`PermanentRejection`.
    """
    if not text.startswith("DTQ_"):
        return None
    code, _, message = text[4:].partition(" ")
    message = _LOCATION.sub("", message)
    cls = _BY_CODE.get(code, PermanentRejection)
    error = cls(message, **context)
    error.code = code
    if isinstance(error, UnitNotReady):
        wait = _BACKING_OFF.search(message)
        error.retry_after_ms = int(wait.group(1)) if wait else None
    return error
