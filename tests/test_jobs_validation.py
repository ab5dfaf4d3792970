"""Bad input to the job API is rejected with InvalidArgument by the client, before any Redis
call and writing nothing (tests/test_jobs_lua_checks.py: the functions' own checks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jobs_support import QUEUE, fill_queue
from support import Rejects, one_server

import dtaskq
from dtaskq.job_models import Backoff, JobSpec
from dtaskq.job_ops import Report
from dtaskq.keys import QueuePartition


def P(client: dtaskq.Client) -> QueuePartition:
    """Partition 0 of the test queue under the client's prefix, made without a server call."""
    return QueuePartition(client._core.router.prefix, QUEUE, 0)


SOON = datetime.now(UTC) + timedelta(days=1)
NAIVE = datetime(2030, 1, 1, 12, 0)

BAD_QUEUES = {
    "empty": "",
    "65-chars": "q" * 65,
    "space": "a q",
    "colon": "q:x",
    "brace": "q{x}",
    "not-str": 7,
    "none": None,
}

BAD_IDS = {
    "empty": "",
    "201-bytes": "i" * 201,
    "brace": "a{b",
    "space": "a b",
    "newline": "a\nb",
    "control": "a\x01b",
    "bytes": b"ab",
    "int": 12,
    "none": None,
}

Call_ = Callable[[dtaskq.Client, Any], object]


SAMPLE: list[Any] = []
"""The first bad value of each call, for the test that runs them on a server's filled queue."""


def _cases(values: dict[str, Any], **calls: Call_) -> list[Any]:
    cases = []
    for name, call in calls.items():
        for i, (label, value) in enumerate(values.items()):
            cases.append(pytest.param(call, value, id=f"{name}-{label}"))
            if i == 0:
                SAMPLE.append(cases[-1])
    return cases


def _enqueue(name: str) -> Call_:
    """An enqueue with option ``name`` set to the value under test."""
    return lambda c, v: c.enqueue(QUEUE, "h", (1,), **{name: v})


CASES: list[Any] = [
    *_cases(
        BAD_QUEUES,
        enqueue=lambda c, v: c.enqueue(v, "h"),
        enqueue_many=lambda c, v: c.enqueue_many(v, [JobSpec("h")]),
        get_job=lambda c, v: c.get_job(v, "j"),
        cancel_job=lambda c, v: c.cancel_job(v, "j"),
        job=lambda c, v: c.job(v, "j"),
        wait_for_job=lambda c, v: c.wait_for_job(v, "j", 1),
        configure_queue=lambda c, v: c.configure_queue(v, aging_ms=10),
        dead_jobs=lambda c, v: c.dead_jobs(v),
        requeue_dead=lambda c, v: c.requeue_dead(v),
        purge_dead=lambda c, v: c.purge_dead(v),
        queue_partitions=lambda c, v: c.queue_partitions(v),
    ),
    *_cases(
        BAD_IDS,
        handler=lambda c, v: c.enqueue(QUEUE, v),
        spec_handler=lambda c, v: c.enqueue_many(QUEUE, [JobSpec("h"), JobSpec(v)]),
        get_job=lambda c, v: c.get_job(QUEUE, v),
        cancel_job=lambda c, v: c.cancel_job(QUEUE, v),
        job=lambda c, v: c.job(QUEUE, v),
        requeue_dead_id=lambda c, v: c.requeue_dead(QUEUE, ["ok", v]),
        purge_dead_id=lambda c, v: c.purge_dead(QUEUE, [v]),
        claim_node=lambda c, v: c.claim_jobs(P(c), v, 1),
        heartbeat_node=lambda c, v: c.heartbeat_jobs(P(c), v, [("j", 1)]),
        release_node=lambda c, v: c.release_jobs(P(c), v, [("j", 1)]),
        heartbeat_job=lambda c, v: c.heartbeat_jobs(P(c), "n", [("j", 1), (v, 1)]),
        release_job=lambda c, v: c.release_jobs(P(c), "n", [(v, 1)]),
        report_job=lambda c, v: c.claim_jobs(P(c), "n", 1, [Report(v, 1, "c", b"")]),
        sweeper=lambda c, v: c.sweep_jobs(P(c), sweeper=v, lock_ms=100),
    ),
    *_cases(
        {k: v for k, v in BAD_IDS.items() if v is not None},  # None: any handler
        requeue_handler=lambda c, v: c.requeue_dead(QUEUE, handler=v),
        purge_handler=lambda c, v: c.purge_dead(QUEUE, handler=v),
    ),
    *_cases(
        {"str": "abc", "dict": {"a": 1}, "int": 5, "none": None, "set": {1, 2}},
        args=lambda c, v: c.enqueue(QUEUE, "h", v),
    ),
    *_cases(
        {
            "object": [object()],
            "set": [{1, 2}],
            "2**64": [2**64],
            "datetime": [SOON],
            "lone-surrogate": ["\ud800"],
            "nested-object": [{"a": [1, object()]}],
        },
        unencodable_args=lambda c, v: c.enqueue(QUEUE, "h", v),
        unencodable_spec=lambda c, v: c.enqueue_many(QUEUE, [JobSpec("h"), JobSpec("h", v)]),
    ),
    *_cases(
        {"list": [1], "int-key": {1: "x"}, "object-value": {"a": object()}, "str": "a=1"},
        kwargs=lambda c, v: c.enqueue(QUEUE, "h", (), v),
    ),
    *_cases(
        {"1001": 1001, "-1001": -1001, "float": 1.5, "bool": True, "str": "1", "none": None},
        priority=_enqueue("priority"),
    ),
    *_cases(
        {
            "negative": -1,
            "negative-timedelta": timedelta(seconds=-1),
            "str": "5",
            "bool": True,
            "nan": float("nan"),
            "inf": float("inf"),
            "huge": 2.0**60,
        },
        delay=_enqueue("delay"),
        result_ttl=_enqueue("result_ttl"),
    ),
    *_cases(
        {
            "naive": NAIVE,
            "str": "2030-01-01T00:00:00Z",
            "epoch-int": 1_900_000_000,
            "before-1970": datetime(1969, 12, 31, tzinfo=UTC),
            "date": SOON.date(),
        },
        run_at=_enqueue("run_at"),
        deadline=_enqueue("deadline"),
    ),
    *_cases(
        {"fail-upper": "FAIL", "ignore": "ignore", "none": None, "bool": True},
        on_deadline=_enqueue("on_deadline"),
    ),
    *_cases(
        {
            "zero": 0,
            "sub-ms": 0.0004,
            "negative": -1,
            "str": "5",
            "bool": True,
            "nan": float("nan"),
        },
        timeout=_enqueue("timeout"),
    ),
    *_cases(
        {"zero": 0, "1001": 1001, "float": 2.0, "bool": True, "str": "3", "none": None},
        max_attempts=_enqueue("max_attempts"),
    ),
    *_cases(
        {
            "zero": 0,
            "negative": -1,
            "str": "1",
            "bool": True,
            "none": None,
            "first-zero": Backoff(0),
            "max-below-first": Backoff(2, 1),
            "first-nan": Backoff(float("nan")),
            "first-str": Backoff("1"),  # type: ignore[arg-type]
            "max-inf": Backoff(1, float("inf")),
        },
        backoff=_enqueue("backoff"),
    ),
    *_cases(
        {
            "empty": "",
            "space": "a b",
            "brace": "{k}",
            "200-bytes": "k" * 200,  # its job id "=k..." would be 201 bytes
            "int": 5,
            "bytes": b"k",
        },
        idempotency_key=_enqueue("idempotency_key"),
    ),
    *_cases(
        {
            "typo": {"priorty": 1},
            "retries": {"retries": 3},
            "one-unknown": {"priority": 1, "prio": 2},
        },
        options=lambda c, v: c.enqueue(QUEUE, "h", (), None, **v),
    ),
    *_cases(
        {"str": "h", "spec-and-str": [JobSpec("h"), "h"], "none": None, "int": 5},
        specs=lambda c, v: c.enqueue_many(QUEUE, v),
    ),
    *_cases(
        {
            "together": {"delay": 1, "run_at": SOON},
            "together-zero": {"delay": 0, "run_at": SOON},
        },
        delay_and_run_at=lambda c, v: c.enqueue(QUEUE, "h", **v),
        spec_delay_and_run_at=lambda c, v: c.enqueue_many(QUEUE, [JobSpec("h", **v)]),
    ),
    *_cases(
        {"negative": -1, "nan": float("nan"), "str": "1", "bool": True},
        result_timeout=lambda c, v: c.job(QUEUE, "j").result(v),
        wait_timeout=lambda c, v: c.wait_for_job(QUEUE, "j", v),
    ),
    *_cases(
        {"zero": 0, "above-a-day": 86_400_001, "float": 10.0, "bool": True, "str": "10"},
        aging_ms=lambda c, v: c.configure_queue(QUEUE, aging_ms=v),
    ),
    *_cases(
        {"zero": 0, "negative": -1, "too-many": 1_000_001, "float": 5.0, "str": "5"},
        dead_limit=lambda c, v: c.dead_jobs(QUEUE, v),
    ),
    *_cases(
        {"str": "job-1", "bytes": b"job-1", "int": 5},
        requeue_ids=lambda c, v: c.requeue_dead(QUEUE, v),
        purge_ids=lambda c, v: c.purge_dead(QUEUE, v),
    ),
    *_cases(
        {
            "none": None,
            "str": "jobs",
            "other-type": ("dtq", QUEUE, 0),
            "bad-queue": QueuePartition("dtq", "a q", 0),
            "bad-prefix": QueuePartition("a b", QUEUE, 0),
            "negative-index": QueuePartition("dtq", QUEUE, -1),
            "str-index": QueuePartition("dtq", QUEUE, "0"),  # type: ignore[arg-type]
        },
        claim_part=lambda c, v: c.claim_jobs(v, "n", 1),
        heartbeat_part=lambda c, v: c.heartbeat_jobs(v, "n", [("j", 1)]),
        release_part=lambda c, v: c.release_jobs(v, "n", [("j", 1)]),
        sweep_part=lambda c, v: c.sweep_jobs(v),
        wait_part=lambda c, v: c.wait_for_jobs([v], 0.1),
    ),
    *_cases(
        {"negative": -1, "1001": 1001, "float": 1.0, "bool": True, "str": "1"},
        max_jobs=lambda c, v: c.claim_jobs(P(c), "n", v),
    ),
    *_cases(
        {
            "not-a-report": ("j", 1, "c", b""),
            "token-0": Report("j", 0, "c", b""),
            "token-str": Report("j", "1", "c", b""),  # type: ignore[arg-type]
            "token-bool": Report("j", True, "c", b""),
            "code-x": Report("j", 1, "x", b""),
            "code-lower-f-word": Report("j", 1, "fail", b""),
            "delay-negative": Report("j", 1, "f", b"", -1),
            "delay-float": Report("j", 1, "f", b"", 1.5),  # type: ignore[arg-type]
            "value-none": Report("j", 1, "c", None),  # type: ignore[arg-type]
            "value-int": Report("j", 1, "c", 5),  # type: ignore[arg-type]
        },
        report=lambda c, v: c.claim_jobs(P(c), "n", 1, [Report("ok", 1, "c", b""), v]),
    ),
    *_cases(
        {"str": "jobs", "report": Report("j", 1, "c", b""), "none": None},
        reports=lambda c, v: c.claim_jobs(P(c), "n", 1, v),
    ),
    *_cases(
        {
            "str": "ab",
            "none": None,
            "bare-id": ["j"],
            "single": [("j",)],
            "triple": [("j", 1, 2)],
            "token-0": [("j", 0)],
            "token-str": [("j", "1")],
            "second-bad": [("j", 1), ("k", -1)],
        },
        heartbeat_claims=lambda c, v: c.heartbeat_jobs(P(c), "n", v),
        release_claims=lambda c, v: c.release_jobs(P(c), "n", v),
    ),
    *_cases(
        {"zero": 0, "10001": 10_001, "str": "5", "float": 5.0},
        sweep_limit=lambda c, v: c.sweep_jobs(P(c), v),
    ),
    *_cases(
        {"zero": 0, "60001": 60_001, "float": 100.0, "bool": True},
        sweep_lock=lambda c, v: c.sweep_jobs(P(c), sweeper="s", lock_ms=v),
    ),
    *_cases(
        {"positive": 100, "float-zero": 0.0, "bool": False, "str": "0"},
        lock_without_sweeper=lambda c, v: c.sweep_jobs(P(c), lock_ms=v),
    ),
    *_cases(
        {"zero": 0, "negative": -1, "str": "1"},
        wait_timeout=lambda c, v: c.wait_for_jobs([P(c)], v),
    ),
    *_cases(
        {"empty": [], "none": None, "one-part": QueuePartition("dtq", QUEUE, 0)},
        wait_parts=lambda c, v: c.wait_for_jobs(v, 0.1),
    ),
]


@pytest.fixture
def offline() -> Iterator[dtaskq.Client]:
    """A client whose every Redis call fails: nothing listens on port 1."""
    with dtaskq.Client.from_url("redis://127.0.0.1:1/0", retry_attempts=1) as client:
        yield client


@pytest.mark.parametrize(("call", "value"), CASES)
def test_bad_input_is_rejected_before_any_redis_call(
    offline: dtaskq.Client, call: Call_, value: Any
) -> None:
    with pytest.raises(dtaskq.InvalidArgument) as caught:
        call(offline, value)
    assert type(caught.value) is dtaskq.InvalidArgument
    assert caught.value.message


LIMIT_CASES: dict[str, Callable[[dtaskq.Client], object]] = {
    "priorities": lambda c: c.enqueue_many(
        QUEUE, [JobSpec("h", priority=p) for p in (-1000, 1000)]
    ),
    "handler-200-bytes": lambda c: c.enqueue(QUEUE, "h" * 200),
    "key-199-bytes": lambda c: c.enqueue(QUEUE, "h", idempotency_key="k" * 199),
    "zero-delay-and-ttl": lambda c: c.enqueue(QUEUE, "h", delay=0, result_ttl=0),
    "timedelta-delay": lambda c: c.enqueue(QUEUE, "h", delay=timedelta(minutes=1)),
    "timeout-1ms": lambda c: c.enqueue(QUEUE, "h", timeout=0.001),
    "attempts-1000": lambda c: c.enqueue(QUEUE, "h", max_attempts=1000),
    "aware-times": lambda c: c.enqueue(
        QUEUE, "h", run_at=SOON, deadline=SOON.astimezone(timezone(timedelta(hours=-5)))
    ),
    "epoch": lambda c: c.enqueue(QUEUE, "h", run_at=datetime(1970, 1, 1, tzinfo=UTC)),
    "drop": lambda c: c.enqueue(QUEUE, "h", deadline=SOON, on_deadline="drop"),
    "backoff-1ms": lambda c: c.enqueue(QUEUE, "h", backoff=Backoff(0.001, 0.001)),
    "backoff-timedelta": lambda c: c.enqueue(QUEUE, "h", backoff=timedelta(seconds=2)),
    "backoff-of-timedeltas": lambda c: c.enqueue(
        QUEUE,
        "h",
        backoff=Backoff(timedelta(seconds=1), timedelta(minutes=1)),  # type: ignore[arg-type]
    ),
    "args-and-kwargs": lambda c: c.enqueue(QUEUE, "h", [1, "x", b"y", None], {"k": [1.5]}),
    "aging-bounds": lambda c: c.configure_queue(QUEUE, aging_ms=86_400_000),
    "dead-limit": lambda c: c.dead_jobs(QUEUE, 1_000_000),
    "requeue-all": lambda c: c.requeue_dead(QUEUE),
    "purge-none-by-id": lambda c: c.purge_dead(QUEUE, iter(["j"]), handler="h"),
    "claim-bounds": lambda c: c.claim_jobs(P(c), "n", 1000, [Report("j", 1, "F", b"text", 0)]),
    "claim-none": lambda c: c.claim_jobs(P(c), "n", 0),
    "heartbeat-generator": lambda c: c.heartbeat_jobs(P(c), "n", (("j", 1) for _ in range(2))),
    "sweep-bounds": lambda c: c.sweep_jobs(P(c), 10_000, sweeper="s", lock_ms=60_000),
    "wait-1ms": lambda c: c.wait_for_jobs([P(c), P(c)], 0.001),
}


@pytest.mark.parametrize("call", list(LIMIT_CASES.values()), ids=list(LIMIT_CASES))
def test_values_at_the_limits_pass_validation(
    offline: dtaskq.Client, call: Callable[[dtaskq.Client], object]
) -> None:
    """The boundaries are inclusive: these calls get as far as Redis."""
    with pytest.raises(dtaskq.TransientError):
        call(offline)


def test_empty_batches_need_no_call(offline: dtaskq.Client) -> None:
    assert offline.enqueue_many(QUEUE, []) == []
    assert offline.heartbeat_jobs(P(offline), "n", []) == []
    assert offline.release_jobs(P(offline), "n", []) == []


@one_server  # the client rejects these calls before any Redis call, whatever the server
@pytest.mark.parametrize(("call", "value"), SAMPLE)
def test_a_rejected_call_writes_nothing(
    client: dtaskq.Client, rejects: Rejects, call: Call_, value: Any
) -> None:
    fill_queue(client)
    rejects(dtaskq.InvalidArgument, call, client, value)
