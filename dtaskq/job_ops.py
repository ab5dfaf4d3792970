"""The operations of the job API as I/O-free steps (docs/jobs.md): each validates its
arguments, then yields the function calls it needs and returns the decoded result, for
``Client`` and ``AsyncClient`` alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import job_args, keys, validate
from .calls import Arg, Call, Router, Steps, claimer_request_id, request_id
from .codec import at, optional_at, unpack
from .errors import InvalidArgument
from .job_models import (
    DEFAULT_LEASE_MS,
    JOB_STATUS_LETTERS,
    ClaimedJob,
    DeadJob,
    JobClaim,
    JobInfo,
    JobSpec,
    JobStatus,
    JobSweepResult,
)
from .scripts import function

ENQUEUE_BATCH = 100
"""Jobs per enqueue call; ``enqueue_many`` pipelines up to ``PIPELINE_CALLS`` such calls."""
PIPELINE_CALLS = 10
MAX_CLAIM = 1000
MAX_LEASE_MS = 86_400_000
DEFAULT_DEAD_PAGE = 1000

_ENQUEUE = function("enqueue_jobs")
_CLAIM = function("claim_jobs")
_HEARTBEAT = function("heartbeat_jobs")
_RELEASE = function("release_jobs")
_CANCEL = function("cancel_job")
_GET = function("get_job")
_AWAIT = function("await_job")
_SWEEP = function("sweep_jobs")
_DEAD = function("dead_jobs")
_HANDLE_DEAD = function("handle_dead")
_CONFIGURE = function("configure_queue")


@dataclass(frozen=True)
class Enqueued:
    """One job an enqueue call answered for: its id, status, and whether this call made it."""

    id: str
    status: JobStatus
    created: bool


@dataclass(frozen=True)
class Report:
    """The outcome of one attempt, which a worker reports with its next claim: ``code`` is
    ``c`` (completed, ``value`` = msgpack result), ``f`` (failed, retried after ``delay_ms``
    while attempts remain; ``value`` = error) or ``F`` (failed for good)."""

    id: str
    token: int
    code: str
    value: bytes
    delay_ms: int = 0


def check_report(report: Any) -> None:
    """``InvalidArgument`` unless ``report`` is a well-formed :class:`Report`."""
    if not isinstance(report, Report):
        raise InvalidArgument(f"reports must be Report values, got {report!r}")
    validate.ident(report.id, "job id")
    validate.integer(report.token, "token", 1)
    if report.code not in ("c", "f", "F"):
        raise InvalidArgument(f"a report's code is c, f or F, got {report.code!r}")
    validate.integer(report.delay_ms, "delay_ms", 0)
    if not isinstance(report.value, bytes):
        raise InvalidArgument("a report's value must be bytes")


def _context(queue: str, job_id: str | None = None) -> dict[str, Any]:
    return {"queue": queue, "job_id": job_id}


def enqueue(router: Router, queue: str, specs: Iterable[JobSpec]) -> Steps[list[Enqueued]]:
    """Adds jobs: one call per partition and batch of ``ENQUEUE_BATCH``, ``PIPELINE_CALLS``
    calls per round trip. Answers in the order of ``specs``."""
    validate.namespace(queue)
    records = [job_args.record(spec) for spec in job_args.specs(specs)]
    if not records:
        return []
    parts = yield from router.queue_partitions(queue)
    by_partition: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        by_partition.setdefault(keys.partition_of(str(record[0]), len(parts)), []).append(i)
    calls: list[tuple[Call, list[int]]] = []
    for index, members in by_partition.items():
        for start in range(0, len(members), ENQUEUE_BATCH):
            batch = members[start : start + ENQUEUE_BATCH]
            argv: list[Arg] = [request_id()]
            argv += [value for i in batch for value in records[i]]
            calls.append((Call(_ENQUEUE, [parts[index].lanes_key()], argv, _context(queue)), batch))
    answers: list[Enqueued | None] = [None] * len(records)
    for start in range(0, len(calls), PIPELINE_CALLS):
        chunk = calls[start : start + PIPELINE_CALLS]
        if len(chunk) == 1:
            replies = [(yield chunk[0][0])]
        else:
            replies = yield [call for call, _ in chunk]
        for (_, batch), reply in zip(chunk, replies, strict=True):
            for k, i in enumerate(batch):
                status, created = reply[2 * k : 2 * k + 1], reply[2 * k + 1] == ord("1")
                answers[i] = Enqueued(str(records[i][0]), JOB_STATUS_LETTERS[status], created)
    return [answer for answer in answers if answer is not None]


def _job_call(router: Router, queue: str, job_id: str, fn: Any) -> Steps[Any]:
    validate.namespace(queue)
    validate.ident(job_id, "job id")
    part = yield from router.queue_partition(queue, job_id, register=False)
    if part is None:
        return None
    return (yield Call(fn, [part.job_key(job_id)], [job_id], _context(queue, job_id)))


def decode_job(queue: str, job_id: str, flat: list[bytes]) -> JobInfo:
    """A :class:`JobInfo` from a job's record, as ``get_job`` answers it."""
    f = dict(zip(flat[::2], flat[1::2], strict=True))

    def num(name: bytes, default: int = 0) -> int:
        value = f.get(name)
        return int(value) if value is not None else default

    result = f.get(b"o")
    key = f.get(b"k")
    # The latest claim: "<token> <node> <started ms> <result ttl ms>".
    token, node, started, _ = f[b"c"].split(b" ") if b"c" in f else (b"0", None, b"0", b"")
    status = JOB_STATUS_LETTERS[f[b"s"]]
    ran = status in (JobStatus.RUNNING, JobStatus.COMPLETED)
    return JobInfo(
        queue=queue,
        id=job_id,
        handler=f[b"h"].decode(),
        status=status,
        attempt=num(b"f") + num(b"l") + ran,
        token=int(token) or None,
        failures=num(b"f"),
        max_attempts=num(b"m", 1),
        priority=num(b"p"),
        enqueued_at=at(num(b"e")),
        run_at=optional_at(num(b"r")),
        deadline=optional_at(num(b"d")),
        started_at=optional_at(int(started)),
        finished_at=optional_at(num(b"F")),
        error=f.get(b"x", b"").decode("utf-8", "replace"),
        node=node.decode() if node else None,
        idempotency_key=key.decode() if key is not None else None,
        result=unpack(result) if result is not None else None,
        leases_lost=num(b"l"),
        lease_ends_at=optional_at(num(b"L")),
    )


def get_job(router: Router, queue: str, job_id: str) -> Steps[JobInfo | None]:
    """A job's record, or None when there is none."""
    flat = yield from _job_call(router, queue, job_id, _GET)
    if not flat:
        return None
    return decode_job(queue, job_id, flat)


def await_job(
    router: Router, queue: str, job_id: str
) -> Steps[tuple[JobInfo | JobStatus | None, str]]:
    """The record of an ended job; else marks the job as awaited and answers its status; None
    when there is no such job. Also answers the list to block on for the job's end."""
    reply = yield from _job_call(router, queue, job_id, _AWAIT)
    part = yield from router.queue_partition(queue, job_id, register=False)
    done = part.done_key(job_id) if part else ""
    if isinstance(reply, bytes):
        return JOB_STATUS_LETTERS[reply], done
    if not reply:
        return None, done
    return decode_job(queue, job_id, reply), done


def cancel_job(router: Router, queue: str, job_id: str) -> Steps[JobStatus | None]:
    """Cancels a job that has not ended; answers the status it had (None: no such job)."""
    reply = yield from _job_call(router, queue, job_id, _CANCEL)
    return JOB_STATUS_LETTERS[reply] if reply else None


def claim_jobs(
    router: Router,
    part: keys.QueuePartition,
    node: str,
    max_jobs: int,
    reports: Sequence[Report] = (),
    lease_ms: int = DEFAULT_LEASE_MS,
) -> Steps[JobClaim]:
    """Reports finished attempts, then claims up to ``max_jobs`` jobs of one partition."""
    job_args.partition(part)
    validate.ident(node, "node id")
    validate.integer(max_jobs, "max_jobs", 0, MAX_CLAIM)
    validate.integer(lease_ms, "lease_ms", 1, MAX_LEASE_MS)
    argv: list[Any] = [node, claimer_request_id(router.claimer()), max_jobs, lease_ms]
    if isinstance(reports, (str, bytes, Report)) or not isinstance(reports, Iterable):
        raise InvalidArgument("reports must be a list of Report")
    for report in reports:
        check_report(report)
        argv += [report.id, report.token, report.code, report.delay_ms, report.value]
    settled, flat, next_due = yield Call(
        _CLAIM, [part.lanes_key()], argv, _context(part.queue) | {"node": node}
    )
    jobs = [
        ClaimedJob(
            queue=part.queue,
            partition=part.index,
            id=flat[i].decode(),
            token=flat[i + 1],
            handler=flat[i + 2].decode(),
            arguments=flat[i + 3],
            timeout_ms=flat[i + 4] or None,
            deadline_ms=flat[i + 5] or None,
            attempt=flat[i + 6],
            failures=flat[i + 7],
            max_attempts=flat[i + 8],
            backoff=job_args.decode_backoff(flat[i + 9]),
        )
        for i in range(0, len(flat), 10)
    ]
    return JobClaim([bool(s) for s in settled], jobs, next_due if next_due >= 0 else None)


def _claims_call(
    router: Router,
    fn: Any,
    part: keys.QueuePartition,
    node: str,
    claims: Iterable[tuple[str, int]],
    lease_ms: int | None = None,
) -> Steps[list[int]]:
    job_args.partition(part)
    validate.ident(node, "node id")
    argv: list[Any] = [node]
    if lease_ms is not None:
        argv.append(validate.integer(lease_ms, "lease_ms", 1, MAX_LEASE_MS))
    head = len(argv)
    for job_id, token in job_args.claims(claims):
        argv += [job_id, token]
    if len(argv) == head:
        return []
    return list((yield Call(fn, [part.lanes_key()], argv, _context(part.queue, None))))


def heartbeat_jobs(
    router: Router,
    part: keys.QueuePartition,
    node: str,
    claims: Iterable[tuple[str, int]],
    lease_ms: int = DEFAULT_LEASE_MS,
) -> Steps[list[int]]:
    """Renews the node's lease: per claim 0 held, 1 lost, 2 cancelled."""
    return (yield from _claims_call(router, _HEARTBEAT, part, node, claims, lease_ms))


def release_jobs(
    router: Router, part: keys.QueuePartition, node: str, claims: Iterable[tuple[str, int]]
) -> Steps[list[bool]]:
    """Hands claimed jobs back to their lanes without counting an attempt."""
    return [bool(r) for r in (yield from _claims_call(router, _RELEASE, part, node, claims))]


def sweep_jobs(
    router: Router, part: keys.QueuePartition, limit: int, sweeper: str | None, lock_ms: int
) -> Steps[JobSweepResult]:
    """One bounded sweep of a queue partition."""
    job_args.partition(part)
    validate.integer(limit, "limit", 1, 10_000)
    if sweeper is not None:
        validate.ident(sweeper, "sweeper")
        validate.integer(lock_ms, "lock_ms", 1, 60_000)
    elif isinstance(lock_ms, bool) or not isinstance(lock_ms, int) or lock_ms != 0:
        raise InvalidArgument(f"lock_ms needs a sweeper, got {lock_ms!r}")
    reclaimed, promoted, expired, more, wait = yield Call(
        _SWEEP, [part.lanes_key()], [limit, sweeper or "", lock_ms], _context(part.queue)
    )
    if wait == -2:
        return JobSweepResult(0, 0, 0, False, None, locked_out=True)
    return JobSweepResult(reclaimed, promoted, expired, bool(more), wait if wait >= 0 else None)


def dead_jobs(router: Router, queue: str, limit: int) -> Steps[list[DeadJob]]:
    """The dead-letter set of every partition of a queue, oldest first, at most ``limit``."""
    validate.namespace(queue)
    validate.integer(limit, "limit", 1, 1_000_000)
    found: list[DeadJob] = []
    # Each partition's set is oldest first: the queue's oldest `limit` are among the first
    # `limit` of every partition.
    for part in (yield from router.queue_partitions(queue, register=False)):
        offset = 0
        while offset < limit:
            count = min(DEFAULT_DEAD_PAGE, limit - offset)
            seen, page = yield Call(_DEAD, [part.lanes_key()], [offset, count], _context(queue))
            for job_id, failed, handler, error, failures in page:
                found.append(
                    DeadJob(
                        queue,
                        job_id.decode(),
                        at(failed),
                        handler.decode(),
                        error.decode("utf-8", "replace"),
                        failures,
                    )
                )
            if seen < count:
                break
            offset += count
    found.sort(key=lambda dead: dead.failed_at)
    return found[:limit]


def handle_dead(
    router: Router,
    queue: str,
    action: str,
    job_ids: Iterable[str] | None,
    handler: str | None,
) -> Steps[int]:
    """Requeues or purges dead-letter entries: the ids given, else every entry (of
    ``handler``, when given); answers how many."""
    validate.namespace(queue)
    ids = job_args.job_ids(job_ids)
    if handler is not None:
        validate.ident(handler, "handler")
    parts = yield from router.queue_partitions(queue, register=False)
    handled = 0
    for part in parts:
        mine = None
        if ids is not None:
            mine = [i for i in ids if keys.partition_of(i, len(parts)) == part.index]
            if not mine:
                continue
        offset, more = 0, True
        while more:
            done, kept, more_flag = yield Call(
                _HANDLE_DEAD,
                [part.lanes_key()],
                [action, handler or "", offset, DEFAULT_DEAD_PAGE, *(mine or [])],
                _context(queue),
            )
            handled += done
            offset += kept
            more = bool(more_flag) and mine is None
    return handled


def wake_keys(parts: Any, timeout: Any) -> list[str]:
    """The wake markers ``wait_for_jobs`` blocks on, after checking its arguments."""
    validate.seconds(timeout, "timeout", 0.001)
    if isinstance(parts, keys.QueuePartition) or not isinstance(parts, Iterable):
        raise InvalidArgument("wait_for_jobs takes a list of QueuePartition")
    wake = [job_args.partition(part).wake_key() for part in parts]
    if not wake:
        raise InvalidArgument("wait_for_jobs needs at least one partition")
    return wake


def configure_queue(router: Router, queue: str, aging_ms: int) -> Steps[None]:
    """Sets a queue's options on every one of its partitions."""
    validate.namespace(queue)
    validate.integer(aging_ms, "aging_ms", 1, 86_400_000)
    for part in (yield from router.queue_partitions(queue)):
        yield Call(_CONFIGURE, [part.lanes_key()], [aging_ms], _context(queue))
