"""Bad input is rejected with InvalidArgument: by the client before any Redis call, and by
every script itself before its first write (docs/rules.md rules 1 and 8, docs/errors.md)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import dtaskq
from dtaskq import TaskRef, UnitSpec
from dtaskq.keys import Partition, namespaces_key
from dtaskq.scripts import LIBRARY

State = Callable[[], dict[bytes, object]]

NS = "valid-ns"
REF = TaskRef(NS, "task", 1)

BAD_NAMESPACES = {
    "empty": "",
    "65-chars": "n" * 65,
    "space": "bad ns",
    "colon": "ns:x",
    "brace": "ns{x}",
    "slash": "a/b",
    "non-ascii": "nämespace",
    "not-str": 7,
    "none": None,
}

BAD_IDS = {
    "empty": "",
    "201-bytes": "i" * 201,
    "201-bytes-multibyte": "é" * 100 + "i",
    "open-brace": "a{b",
    "close-brace": "a}b",
    "space": "a b",
    "tab": "a\tb",
    "newline": "a\nb",
    "cr": "a\rb",
    "nul": "a\x00b",
    "control": "a\x01b",
    "del": "a\x7fb",
    "bytes": b"ab",
    "int": 12,
    "none": None,
}

# Reports name a unit by its id, or a range unit by its number.
BAD_UNIT_REFS = {
    **{k: v for k, v in BAD_IDS.items() if k != "int"},
    "negative-int": -1,
    "bool": True,
    "float": 1.5,
    "2**53": 2**53,
}


def _cases(values: dict[str, Any], **calls: Callable[[dtaskq.Client, Any], object]) -> list[Any]:
    return [
        pytest.param(call, value, id=f"{name}-{label}")
        for name, call in calls.items()
        for label, value in values.items()
    ]


CASES: list[Any] = [
    *_cases(
        BAD_NAMESPACES,
        add_task=lambda c, v: c.add_task(v, "t", units=["u"]),
        get_task=lambda c, v: c.get_task(v, "t"),
        sweep=lambda c, v: c.sweep(v),
        ref=lambda c, v: c.claim_unit(TaskRef(v, "t", 1), "n", "u"),
    ),
    *_cases(
        {k: v for k, v in BAD_NAMESPACES.items() if v is not None},  # None lists every namespace
        list_tasks=lambda c, v: c.list_tasks(v),
    ),
    *_cases(
        BAD_IDS,
        add_task=lambda c, v: c.add_task(NS, v, units=["u"]),
        get_task=lambda c, v: c.get_task(NS, v),
        ref=lambda c, v: c.cancel_task(TaskRef(NS, v, 1)),
        unit_id=lambda c, v: c.add_task(NS, "t", units=["ok", v]),
        unit_spec=lambda c, v: c.add_task(NS, "t", units=[UnitSpec(v)]),
        conflict_key=lambda c, v: c.add_task(NS, "t", units=["u"], conflict_keys=["k", v]),
        claim_node=lambda c, v: c.claim_unit(REF, v, "u"),
        progress_node=lambda c, v: c.update_progress(REF, v, "u", 0.5),
        complete_node=lambda c, v: c.complete_unit(REF, v, "u"),
        fail_node=lambda c, v: c.fail_unit(REF, v, "u", "e"),
        heartbeat_node=lambda c, v: c.heartbeat(v, [(REF, "u", 1)]),
        release_node=lambda c, v: c.release(v, [(REF, "u", 1)]),
        ack_node=lambda c, v: c.record_prepare_ack(REF, v),
        post_ack_node=lambda c, v: c.record_post_ack(REF, v),
    ),
    *_cases(
        BAD_UNIT_REFS,
        claim_unit=lambda c, v: c.claim_unit(REF, "n", v),
        progress_unit=lambda c, v: c.update_progress(REF, "n", v, 0.5),
        complete_unit=lambda c, v: c.complete_unit(REF, "n", v),
        fail_unit=lambda c, v: c.fail_unit(REF, "n", v, "e"),
        heartbeat_unit=lambda c, v: c.heartbeat("n", [(REF, v, 1)]),
        release_unit=lambda c, v: c.release("n", [(REF, v, 1)]),
    ),
    *_cases(
        {
            "str": "payload",
            "none": None,
            "bytearray": bytearray(b"x"),
            "memoryview": memoryview(b"x"),
        },
        payload=lambda c, v: c.add_task(NS, "t", units=["u"], payload=v),
    ),
    *_cases(
        {"11-bytes": b"x" * 11, "1-MiB": b"x" * 2**20},
        payload_over_limit=lambda c, v: c.add_task(NS, "t", units=["u"], payload=v),
    ),
    *_cases(
        {
            "nan": float("nan"),
            "inf": float("inf"),
            "-inf": float("-inf"),
            "negative": -0.1,
            "above-one": 1.1,
            "two": 2,
            "str": "0.5",
            "true": True,
            "false": False,
            "none": None,
        },
        progress=lambda c, v: c.update_progress(REF, "n", "u", v),
    ),
    *_cases(
        {"zero": 0, "negative": -1, "float": 1.5, "true": True, "str": "100", "huge": 2**41},
        lease_ms=lambda c, v: c.add_task(NS, "t", units=["u"], lease_ms=v),
    ),
    *_cases(
        {"forever": "forever", "upper": "REASSIGN", "none": None},
        on_lease_expiry=lambda c, v: c.add_task(NS, "t", units=["u"], on_lease_expiry=v),
    ),
    *_cases(
        {"zero": 0, "negative": -3, "float": 2.0, "true": True},
        max_attempts=lambda c, v: c.add_task(NS, "t", units=["u"], max_attempts=v),
    ),
    *_cases(
        {"negative": -1, "float": 1.5},
        retry_backoff_ms=lambda c, v: c.add_task(NS, "t", units=["u"], retry_backoff_ms=v),
        completed_ttl_ms=lambda c, v: c.add_task(NS, "t", units=["u"], completed_ttl_ms=v),
    ),
    *_cases(
        {"int": 1, "str": "yes", "none": None},
        ack_barrier=lambda c, v: c.add_task(NS, "t", units=["u"], ack_barrier=v),
        prepare_barrier=lambda c, v: c.add_task(NS, "t", units=["u"], prepare_barrier=v),
        retryable=lambda c, v: c.fail_unit(REF, "n", "u", "e", retryable=v),
        success=lambda c, v: c.record_post_ack(REF, "n", success=v),
    ),
    *_cases(
        {
            "100001-units": [f"u{i}" for i in range(100_001)],
            "empty": [],
            "str": "abc",
            "bytes": b"abc",
            "duplicate": ["a", "b", "a"],
            "group-control-char": [UnitSpec("a", group="g\n")],
            "group-201-bytes": [UnitSpec("a", group="g" * 201)],
            "group-not-str": [UnitSpec("a", group=None)],  # type: ignore[arg-type]
        },
        units=lambda c, v: c.add_task(NS, "t", units=v),
    ),
    *_cases(
        {"str": "key", "1001-keys": [f"k{i}" for i in range(1001)]},
        conflict_keys=lambda c, v: c.add_task(NS, "t", units=["u"], conflict_keys=v),
    ),
    *_cases(
        {"negative": -1, "str": "1", "float": 1.0, "true": True, "2**53+1": 2**53 + 1},
        progress_token=lambda c, v: c.update_progress(REF, "n", "u", 0.5, token=v),
        complete_token=lambda c, v: c.complete_unit(REF, "n", "u", token=v),
        fail_token=lambda c, v: c.fail_unit(REF, "n", "u", "e", token=v),
        heartbeat_token=lambda c, v: c.heartbeat("n", [(REF, "u", v)]),
        release_token=lambda c, v: c.release("n", [(REF, "u", v)]),
    ),
    *_cases(
        {
            "version-0": TaskRef(NS, "t", 0),
            "version-negative": TaskRef(NS, "t", -1),
            "version-str": TaskRef(NS, "t", "1"),  # type: ignore[arg-type]
            "version-float": TaskRef(NS, "t", 1.0),  # type: ignore[arg-type]
            "version-bool": TaskRef(NS, "t", True),
            "version-none": TaskRef(NS, "t", None),  # type: ignore[arg-type]
            "tuple": (NS, "t", 1),
            "none": None,
        },
        claim_ref=lambda c, v: c.claim_unit(v, "n", "u"),
        progress_ref=lambda c, v: c.update_progress(v, "n", "u", 0.5),
        complete_ref=lambda c, v: c.complete_unit(v, "n", "u"),
        fail_ref=lambda c, v: c.fail_unit(v, "n", "u", "e"),
        prepare_ack_ref=lambda c, v: c.record_prepare_ack(v, "n"),
        post_ack_ref=lambda c, v: c.record_post_ack(v, "n"),
        finalize_ref=lambda c, v: c.finalize_task(v),
        cancel_ref=lambda c, v: c.cancel_task(v),
        cleanup_ref=lambda c, v: c.cleanup_task(v),
        heartbeat_ref=lambda c, v: c.heartbeat("n", [(v, "u", 1)]),
        release_ref=lambda c, v: c.release("n", [(v, "u", 1)]),
    ),
    *_cases(
        {
            "list-claim": [[REF, "u", 1]],
            "bare-ref": [REF],
            "pair": [(REF, "u")],
            "quadruple": [(REF, "u", 1, 2)],
            "second-bad": [(REF, "u", 1), [REF, "v", 1]],
            "claims-none": None,
            "claims-generator": ((REF, "u", 1) for _ in range(1)),
            "claims-str": "abc",
        },
        heartbeat_claims=lambda c, v: c.heartbeat("n", v),
        release_claims=lambda c, v: c.release("n", v),
    ),
    *_cases(
        {"none": None, "bytes": b"disk full", "int": 5, "over-64KiB": "x" * 65_537},
        fail_error=lambda c, v: c.fail_unit(REF, "n", "u", v),
        ack_error=lambda c, v: c.record_prepare_ack(REF, "n", success=False, error=v),
        post_ack_error=lambda c, v: c.record_post_ack(REF, "n", success=False, error=v),
    ),
    *_cases(
        {"zero": 0, "negative": -1, "10001": 10_001, "float": 5.0, "str": "10"},
        sweep_limit=lambda c, v: c.sweep(NS, 0, limit=v),
    ),
    *_cases(
        {"negative": -1, "1024": 1024, "str": "0"},
        sweep_partition=lambda c, v: c.sweep(NS, v),
    ),
    *_cases(
        {"unknown": {"lease": 5}, "typo": {"conflict_key": ["k"]}},
        add_task_options=lambda c, v: c.add_task(NS, "t", units=["u"], **v),
    ),
]


@pytest.fixture
def offline() -> Iterator[dtaskq.Client]:
    """A client whose every Redis call fails: nothing listens on port 1."""
    with dtaskq.Client.from_url(
        "redis://127.0.0.1:1/0", retry_attempts=1, max_payload_bytes=10
    ) as client:
        yield client


def test_the_offline_client_cannot_reach_redis(offline: dtaskq.Client) -> None:
    """The premise of the tests below: a call that passes validation raises TransientError."""
    with pytest.raises(dtaskq.TransientError):
        offline.get_task(NS, "t")
    with pytest.raises(dtaskq.TransientError):
        offline.list_tasks()


LIMIT_CASES: dict[str, Callable[[dtaskq.Client], object]] = {
    "payload-at-limit": lambda c: c.add_task(NS, "t", units=["u"], payload=b"x" * 10),
    "ids-at-200-bytes": lambda c: c.add_task(NS, "i" * 200, units=["é" * 100]),
    "progress-0": lambda c: c.update_progress(REF, "n", "u", 0),
    "progress-1": lambda c: c.update_progress(REF, "n", "u", 1),
    "token-0": lambda c: c.update_progress(REF, "n", "u", 1.0, token=0),
    "100000-units": lambda c: c.add_task(NS, "t", units=[f"u{i}" for i in range(100_000)]),
    "minimal-options": lambda c: c.add_task(NS, "t", units=["u"], lease_ms=1, max_attempts=1),
    "unicode-group": lambda c: c.add_task(NS, "t", units=[UnitSpec("u", group="ünï group")]),
    "sweep-limit-1": lambda c: c.sweep(NS, 0, limit=1),
    "error-64KiB": lambda c: c.fail_unit(REF, "n", "u", "x" * 65_536),
    "1000-conflict-keys": lambda c: c.add_task(
        NS, "t", units=["u"], conflict_keys=[f"k{i}" for i in range(1000)]
    ),
}


@pytest.mark.parametrize("call", list(LIMIT_CASES.values()), ids=list(LIMIT_CASES))
def test_values_at_the_limits_pass_validation(
    offline: dtaskq.Client, call: Callable[[dtaskq.Client], object]
) -> None:
    """The boundaries are inclusive: these calls get as far as Redis."""
    with pytest.raises(dtaskq.TransientError):
        call(offline)


def test_heartbeat_without_claims_needs_no_call(offline: dtaskq.Client) -> None:
    assert offline.heartbeat("n", []) == []
    assert offline.release("n", []) == []


@pytest.mark.parametrize(("call", "value"), CASES)
def test_bad_input_is_rejected_before_any_redis_call(
    offline: dtaskq.Client, call: Callable[[dtaskq.Client, Any], object], value: Any
) -> None:
    with pytest.raises(dtaskq.InvalidArgument) as caught:
        call(offline, value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.message


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": "bad prefix"},
        {"prefix": ""},
        {"partitions": {"ns": 0}},
        {"partitions": {"ns": 1025}},
        {"partitions": {"bad ns": 2}},
        {"max_payload_bytes": -1},
        {"retry_attempts": 0},
        {"retry_attempts": True},
        {"timeout": 5},
    ],
    ids=[
        "prefix-space",
        "prefix-empty",
        "partitions-0",
        "partitions-1025",
        "partitions-bad-ns",
        "max-payload-negative",
        "retry-attempts-0",
        "retry-attempts-bool",
        "unknown-option",
    ],
)
def test_bad_client_options_are_rejected(options: dict[str, Any]) -> None:
    with (
        redis.Redis.from_url("redis://127.0.0.1:1/0") as connection,
        pytest.raises(dtaskq.InvalidArgument),
    ):
        dtaskq.Client(connection, **options)


def test_a_decoding_connection_is_rejected() -> None:
    with (
        redis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True) as connection,
        pytest.raises(dtaskq.InvalidArgument, match="decode_responses"),
    ):
        dtaskq.Client(connection)


ERROR_CLASSES = [
    obj for _, obj in inspect.getmembers(dtaskq, inspect.isclass) if issubclass(obj, Exception)
]


def test_every_exported_exception_is_a_dtaskq_error() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {
        "DtaskqError",
        "InvalidArgument",
        "PermanentRejection",
        "TransientError",
        "TaskExists",
        "TaskConflict",
        "TaskDoesNotExist",
        "TaskNotRunning",
        "UnitWrongNode",
        "UnitAlreadyTerminal",
        "LeaseLost",
        "TaskNotFinalizing",
        "AcksMissing",
        "TaskStillRunning",
        "TaskTooFresh",
        "UnitNotReady",
    } <= names
    for cls in ERROR_CLASSES:
        assert issubclass(cls, dtaskq.DtaskqError), cls
    assert issubclass(dtaskq.InvalidArgument, ValueError)
    for cls in (
        dtaskq.TaskExists,
        dtaskq.TaskConflict,
        dtaskq.TaskDoesNotExist,
        dtaskq.TaskNotRunning,
        dtaskq.UnitWrongNode,
        dtaskq.UnitAlreadyTerminal,
        dtaskq.LeaseLost,
        dtaskq.TaskNotFinalizing,
        dtaskq.AcksMissing,
        dtaskq.TaskStillRunning,
        dtaskq.TaskTooFresh,
    ):
        assert issubclass(cls, dtaskq.PermanentRejection), cls
    for cls in (dtaskq.InvalidArgument, dtaskq.TransientError, dtaskq.UnitNotReady):
        assert not issubclass(cls, dtaskq.PermanentRejection), cls


# --- the scripts check their own arguments ----------------------------------------------


class Scripts:
    """Runs scripts straight on the server, around a namespace that holds real state: an
    active task ``live`` (unit ``a`` claimed by ``n1`` with token 1, unit ``b`` pending) and a
    cancelled task ``old`` that a successful add_task would replace."""

    def __init__(self, r: redis.Redis, prefix: str, namespace: str) -> None:
        self.r = r
        self.prefix = prefix
        self.namespace = namespace
        self.part = Partition(prefix, namespace, 0)

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.r.fcall(LIBRARY.functions[name].server_name, len(keys), *keys, *args)

    def on_task(self, name: str, task_id: str, args: list[Any]) -> Any:
        return self.run(name, [self.part.task_key(task_id)], args)


@pytest.fixture
def scripts(client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str) -> Scripts:
    live = client.add_task(namespace, "live", units=["a", "b"], conflict_keys=["k"])
    assert client.claim_unit(live, "n1", "a") == 1
    old = client.add_task(namespace, "old", units=["a"])
    client.cancel_task(old)
    assert (live.version, old.version) == (1, 2)
    return Scripts(r, prefix, namespace)


def add_args(**change: Any) -> list[Any]:
    """A valid ARGV for add_task on task ``old``, with some values changed or units given."""
    base = {
        "task_id": "old",
        "payload": b"p",
        "lease_ms": "1000",
        "expiry": "reassign",
        "max_attempts": "1",
        "backoff": "0",
        "ttl": "1000",
        "barrier": "0",
        "request": "req-1",
        "n_conflicts": "1",
        "conflicts": ["k2"],
        "units": ["x", ""],
    }
    base.update(change)
    return [
        *(base[k] for k in list(base)[:10]),
        *base["conflicts"],
        *base["units"],
    ]


ADD_TASK_CASES = {
    "lease-abc": add_args(lease_ms="abc"),
    "lease-1.5": add_args(lease_ms="1.5"),
    "lease-0": add_args(lease_ms="0"),
    "lease-negative": add_args(lease_ms="-5"),
    "lease-empty": add_args(lease_ms=""),
    "lease-nan": add_args(lease_ms="nan"),
    "lease-inf": add_args(lease_ms="inf"),
    "expiry-forever": add_args(expiry="forever"),
    "expiry-empty": add_args(expiry=""),
    "max-attempts-0": add_args(max_attempts="0"),
    "backoff-negative": add_args(backoff="-1"),
    "ttl-abc": add_args(ttl="abc"),
    "barrier-3": add_args(barrier="3"),
    "request-id-space": add_args(request="a b"),
    "request-id-empty": add_args(request=""),
    "conflict-count-abc": add_args(n_conflicts="x"),
    "conflict-count-negative": add_args(n_conflicts="-1"),
    "conflict-count-too-big": add_args(n_conflicts="3"),
    "conflict-key-brace": add_args(conflicts=["{k}"]),
    "conflict-key-space": add_args(conflicts=["k k"]),
    "odd-unit-pairs": add_args(units=["x", "", "y"]),
    "zero-units": add_args(units=[]),
    "unit-id-space": add_args(units=["a b", ""]),
    "unit-id-brace": add_args(units=["a{b", ""]),
    "unit-id-close-brace": add_args(units=["b}", ""]),
    "unit-id-newline": add_args(units=["a\nb", ""]),
    "unit-id-empty": add_args(units=["", ""]),
    "unit-id-201-bytes": add_args(units=["u" * 201, ""]),
    "duplicate-units": add_args(units=["x", "", "y", "", "x", "g"]),
    "group-control-char": add_args(units=["x", "g\x01"]),
    "group-201-bytes": add_args(units=["x", "g" * 201]),
    "task-id-space": add_args(task_id="o ld"),
    "task-id-brace": add_args(task_id="{old}"),
    "task-id-empty": add_args(task_id=""),
}

# (script, task id, ARGV) for the scripts that run on one task's keys.
TASK_SCRIPT_CASES: dict[str, tuple[str, str, list[Any]]] = {
    "claim-unit-id-space": ("claim_unit", "live", ["live", "1", "b c", "n2"]),
    "claim-unit-id-brace": ("claim_unit", "live", ["live", "1", "{b}", "n2"]),
    "claim-node-empty": ("claim_unit", "live", ["live", "1", "b", ""]),
    "claim-node-tab": ("claim_unit", "live", ["live", "1", "b", "n\t2"]),
    "claim-version-empty": ("claim_unit", "live", ["live", "", "b", "n2"]),
    "claim-task-id-space": ("claim_unit", "live", ["li ve", "1", "b", "n2"]),
    "claim-missing-node": ("claim_unit", "live", ["live", "1", "b"]),
    "progress-nan": ("update_progress", "live", ["live", "1", "b", "n2", "nan", ""]),
    "progress-inf": ("update_progress", "live", ["live", "1", "b", "n2", "inf", ""]),
    "progress-2": ("update_progress", "live", ["live", "1", "b", "n2", "2", ""]),
    "progress-negative": ("update_progress", "live", ["live", "1", "b", "n2", "-0.1", ""]),
    "progress-abc": ("update_progress", "live", ["live", "1", "b", "n2", "abc", ""]),
    "progress-empty": ("update_progress", "live", ["live", "1", "b", "n2", "", ""]),
    "progress-token-abc": ("update_progress", "live", ["live", "1", "a", "n1", "0.5", "abc"]),
    "progress-token-negative": ("update_progress", "live", ["live", "1", "a", "n1", "0.5", "-1"]),
    "progress-token-float": ("update_progress", "live", ["live", "1", "a", "n1", "0.5", "1.5"]),
    "progress-unit-space": ("update_progress", "live", ["live", "1", "a a", "n1", "0.5", "1"]),
    "complete-token-abc": ("complete_unit", "live", ["live", "1", "a", "n1", "abc"]),
    "complete-token-negative": ("complete_unit", "live", ["live", "1", "a", "n1", "-1"]),
    "complete-node-brace": ("complete_unit", "live", ["live", "1", "a", "n}1", "1"]),
    "complete-missing-token": ("complete_unit", "live", ["live", "1", "a", "n1"]),
    "fail-token-abc": ("fail_unit", "live", ["live", "1", "a", "n1", "x", "boom", "0"]),
    "fail-retryable-2": ("fail_unit", "live", ["live", "1", "a", "n1", "1", "boom", "2"]),
    "fail-retryable-abc": ("fail_unit", "live", ["live", "1", "a", "n1", "1", "boom", "yes"]),
    "fail-error-too-long": ("fail_unit", "live", ["live", "1", "a", "n1", "1", "e" * 65537, "0"]),
    "fail-missing-error": ("fail_unit", "live", ["live", "1", "a", "n1", "1"]),
    "ack-bad-phase": ("record_ack", "live", ["live", "1", "n1", "middle", "1", ""]),
    "ack-empty-phase": ("record_ack", "live", ["live", "1", "n1", "", "1", ""]),
    "ack-success-2": ("record_ack", "live", ["live", "1", "n1", "post", "2", ""]),
    "ack-node-space": ("record_ack", "live", ["live", "1", "n 1", "post", "0", "x"]),
    "ack-missing-error": ("record_ack", "live", ["live", "1", "n1", "post", "0"]),
    "finalize-version-empty": ("finalize_task", "live", ["live", ""]),
    "cancel-version-empty": ("cancel_task", "live", ["live", ""]),
    "cancel-task-id-brace": ("cancel_task", "live", ["{live}", "1"]),
    "cleanup-version-space": ("cleanup_task", "old", ["old", "2 "]),
    "get-task-id-space": ("get_task", "live", ["li ve"]),
}


def _expect_invalid(scripts: Scripts, state: State, run: Callable[[], Any]) -> None:
    before = state()
    with pytest.raises(redis.ResponseError) as caught:
        run()
    assert str(caught.value).startswith("DTQ_INVALID_ARGUMENT "), str(caught.value)
    assert state() == before
    # The client still reads the task that was there.
    live = dtaskq.Client(scripts.r, prefix=scripts.prefix).get_task(scripts.namespace, "live")
    assert live is not None and live.units["a"].node == "n1"


@pytest.mark.parametrize("args", list(ADD_TASK_CASES.values()), ids=list(ADD_TASK_CASES))
def test_add_task_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    task_id = args[0] if args[0] in ("live", "old") else "old"
    _expect_invalid(scripts, state, lambda: scripts.on_task("add_task", task_id, args))


def test_add_task_script_accepts_the_base_arguments(scripts: Scripts) -> None:
    """The malformed cases above differ from a valid call in one value only."""
    version = scripts.on_task("add_task", "old", add_args())
    assert version == 3
    assert scripts.r.hget(scripts.part.task_key("old"), "status") == b"STARTED"


@pytest.mark.parametrize(
    ("name", "task_id", "args"), list(TASK_SCRIPT_CASES.values()), ids=list(TASK_SCRIPT_CASES)
)
def test_task_scripts_check_their_arguments(
    scripts: Scripts, state: State, name: str, task_id: str, args: list[Any]
) -> None:
    _expect_invalid(scripts, state, lambda: scripts.on_task(name, task_id, args))


# --- range tasks: add_range_task and claim_range ---------------------------------------


@pytest.fixture
def range_scripts(scripts: Scripts, client: dtaskq.Client) -> Scripts:
    """``scripts``, plus an active range task ``span`` (units 0..9 in regions [0, 5) and
    [5, 10), unit 0 claimed by ``n1``)."""
    span = client.add_task(scripts.namespace, "span", unit_count=10, workers_hint=2)
    assert span.version == 3
    assert client.claim_first(span, "n1") == 0
    return scripts


ADD_RANGE_TASK_CASES = {
    "unit-count-0": add_args(units=["0", "4"]),
    "unit-count-negative": add_args(units=["-1", "4"]),
    "unit-count-2**53+1": add_args(units=["9007199254740993", "4"]),
    "unit-count-exponent": add_args(units=["1e1", "4"]),
    "unit-count-hex": add_args(units=["0x10", "4"]),
    "unit-count-leading-zero": add_args(units=["010", "4"]),
    "unit-count-1.5": add_args(units=["1.5", "4"]),
    "unit-count-abc": add_args(units=["abc", "4"]),
    "unit-count-empty": add_args(units=["", "4"]),
    "unit-count-nan": add_args(units=["nan", "4"]),
    "unit-count-inf": add_args(units=["inf", "4"]),
    "workers-hint-100001": add_args(units=["10", "100001"]),
    "workers-hint-1.5": add_args(units=["10", "1.5"]),
    "workers-hint-abc": add_args(units=["10", "abc"]),
    "workers-hint-empty": add_args(units=["10", ""]),
    "workers-hint-missing": add_args(units=["10"]),
    "extra-value": add_args(units=["10", "4", "x"]),
    "no-count": add_args(units=[]),
    "lease-0": add_args(lease_ms="0", units=["10", "4"]),
    "task-id-brace": add_args(task_id="{old}", units=["10", "4"]),
}


@pytest.mark.parametrize(
    "args", list(ADD_RANGE_TASK_CASES.values()), ids=list(ADD_RANGE_TASK_CASES)
)
def test_add_range_task_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    _expect_invalid(scripts, state, lambda: scripts.on_task("add_range_task", "old", args))


def test_add_range_task_script_accepts_the_base_arguments(scripts: Scripts) -> None:
    """The malformed cases above differ from a valid call in one value only."""
    assert scripts.on_task("add_range_task", "old", add_args(units=["10", "4"])) == 3
    keys = scripts.part.task_keys("old")
    assert scripts.r.hmget(keys[0], "status", "unit_count") == [b"STARTED", b"10"]
    assert scripts.r.zrange(keys[9], 0, -1) == [b"0 3 ", b"3 6 ", b"6 8 ", b"8 10 "]


# ARGV of claim_range: task id, version, node, max units, last ("" for none), request id.
CLAIM_RANGE_CASES: dict[str, tuple[str, list[Any]]] = {
    "max-units-0": ("span", ["span", "3", "n2", "0", "", "r1", "0"]),
    "max-units-1001": ("span", ["span", "3", "n2", "1001", "", "r1", "0"]),
    "max-units-negative": ("span", ["span", "3", "n2", "-1", "", "r1", "0"]),
    "max-units-1.5": ("span", ["span", "3", "n2", "1.5", "", "r1", "0"]),
    "max-units-abc": ("span", ["span", "3", "n2", "abc", "", "r1", "0"]),
    "max-units-empty": ("span", ["span", "3", "n2", "", "", "r1", "0"]),
    "last-negative": ("span", ["span", "3", "n2", "1", "-1", "r1", "0"]),
    "last-N": ("span", ["span", "3", "n2", "1", "10", "r1", "0"]),
    "last-2**53": ("span", ["span", "3", "n2", "1", "9007199254740992", "r1", "0"]),
    "last-1.5": ("span", ["span", "3", "n2", "1", "1.5", "r1", "0"]),
    "last-abc": ("span", ["span", "3", "n2", "1", "abc", "r1", "0"]),
    "last-missing": ("span", ["span", "3", "n2", "1"]),
    "node-empty": ("span", ["span", "3", "", "1", "", "r1", "0"]),
    "node-space": ("span", ["span", "3", "n 2", "1", "", "r1", "0"]),
    "version-empty": ("span", ["span", "", "n2", "1", "", "r1", "0"]),
    "task-id-brace": ("span", ["{span}", "3", "n2", "1", "", "r1", "0"]),
    "named-units": ("live", ["live", "1", "n2", "1", "", "r1", "0"]),
    "request-id-missing": ("span", ["span", "3", "n2", "1", ""]),
    "request-id-space": ("span", ["span", "3", "n2", "1", "", "r 1", "0"]),
    "completions-missing": ("span", ["span", "3", "n2", "1", "", "r1"]),
    "completions-1001": ("span", ["span", "3", "n2", "1", "", "r1", "1001"]),
    "completions-short": ("span", ["span", "3", "n2", "1", "", "r1", "1", "0"]),
    "completions-long": ("span", ["span", "3", "n2", "1", "", "r1", "1", "0", "1", "x"]),
    "completion-token-abc": ("span", ["span", "3", "n2", "1", "", "r1", "1", "0", "abc"]),
    "completion-unit-space": ("span", ["span", "3", "n2", "1", "", "r1", "1", "0 1", "1"]),
}


@pytest.mark.parametrize(
    ("task_id", "args"), list(CLAIM_RANGE_CASES.values()), ids=list(CLAIM_RANGE_CASES)
)
def test_claim_range_script_checks_its_arguments(
    range_scripts: Scripts, state: State, task_id: str, args: list[Any]
) -> None:
    run = range_scripts.on_task
    _expect_invalid(range_scripts, state, lambda: run("claim_range", task_id, args))


def test_claim_range_script_accepts_the_base_arguments(range_scripts: Scripts) -> None:
    """The malformed cases above differ from a valid call in one value only."""
    args = ["span", "3", "n2", "2", "", "r1", "0"]
    assert range_scripts.on_task("claim_range", "span", args) == [0, [], 5, 2, 1]
    args = ["span", "3", "n2", "2", "6", "r2", "1", "5", "1"]
    assert range_scripts.on_task("claim_range", "span", args) == [0, [b""], 7, 2, 1]


# ARGV of claim_any: task id, version, node, max units, request id, completions, filter.
CLAIM_ANY_CASES: dict[str, list[Any]] = {
    "max-units-0": ["live", "1", "n2", "0", "r1", "0", "0"],
    "max-units-1001": ["live", "1", "n2", "1001", "r1", "0", "0"],
    "max-units-abc": ["live", "1", "n2", "abc", "r1", "0", "0"],
    "node-space": ["live", "1", "n 2", "1", "r1", "0", "0"],
    "request-id-space": ["live", "1", "n2", "1", "r 1", "0", "0"],
    "completions-missing": ["live", "1", "n2", "1", "r1"],
    "completion-token-abc": ["live", "1", "n2", "1", "r1", "1", "a", "abc", "0"],
    "filter-missing": ["live", "1", "n2", "1", "r1", "0"],
    "filter-short": ["live", "1", "n2", "1", "r1", "0", "2", "b"],
    "filter-long": ["live", "1", "n2", "1", "r1", "0", "1", "b", "c"],
    "filter-unit-brace": ["live", "1", "n2", "1", "r1", "0", "1", "{b}"],
    "filter-100001": ["live", "1", "n2", "1", "r1", "0", "100001"],
    "version-empty": ["live", "", "n2", "1", "r1", "0", "0"],
}


@pytest.mark.parametrize("args", list(CLAIM_ANY_CASES.values()), ids=list(CLAIM_ANY_CASES))
def test_claim_any_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    _expect_invalid(scripts, state, lambda: scripts.on_task("claim_any", "live", args))


def test_claim_any_script_accepts_the_base_arguments(scripts: Scripts) -> None:
    """The malformed cases above differ from a valid call in one value only."""
    args = ["live", "1", "n2", "1", "r1", "0", "1", "b"]
    assert scripts.on_task("claim_any", "live", args) == [0, [], b"b", 1]
    args = ["live", "1", "n1", "1", "r2", "1", "a", "1", "0"]
    assert scripts.on_task("claim_any", "live", args) == [0, [b""]]


# ARGV of heartbeat and release: node, then (task id, version, unit id, token) per claim.
HEARTBEAT_CASES: dict[str, list[Any]] = {
    "three-values": ["n1", "live", "1", "a"],
    "five-values": ["n1", "live", "1", "a", "1", "extra"],
    "token-abc": ["n1", "live", "1", "a", "abc"],
    "token-empty": ["n1", "live", "1", "a", ""],
    "token-negative": ["n1", "live", "1", "a", "-1"],
    "node-space": ["n 1", "live", "1", "a", "1"],
    "node-missing": [],
    "second-claim-bad": ["n1", "live", "1", "a", "1", "live", "1", "b c", "1"],
    "version-empty": ["n1", "live", "", "a", "1"],
    "task-id-brace": ["n1", "{live}", "1", "a", "1"],
    "token-float": ["n1", "live", "1", "a", "1.0"],
    "token-2**53+1": ["n1", "live", "1", "a", "9007199254740993"],
    # A valid claim first: the bad one after it must stop the call before any write.
    "bad-after-a-held-claim": ["n1", "live", "1", "a", "1", "live", "1", "a", "x"],
}


@pytest.mark.parametrize("args", list(HEARTBEAT_CASES.values()), ids=list(HEARTBEAT_CASES))
def test_heartbeat_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    keys = [scripts.part.lease_index_key()]
    _expect_invalid(scripts, state, lambda: scripts.run("heartbeat", keys, args))


@pytest.mark.parametrize("args", list(HEARTBEAT_CASES.values()), ids=list(HEARTBEAT_CASES))
def test_release_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    keys = [scripts.part.lease_index_key()]
    _expect_invalid(scripts, state, lambda: scripts.run("release", keys, args))


def test_release_script_accepts_the_base_arguments(scripts: Scripts) -> None:
    """The malformed cases above differ from a valid call in one value only."""
    keys = [scripts.part.lease_index_key()]
    args = ["n1", "live", "1", "a", "1", "live", "1", "b", "1"]
    assert scripts.run("release", keys, args) == [1, 0]
    assert scripts.run("release", keys, args) == [0, 0]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("sweep", ["0"]),
        ("sweep", ["-1"]),
        ("sweep", ["abc"]),
        ("sweep", ["10001"]),
        ("sweep", []),
        ("list_tasks", ["", "0"]),
        ("list_tasks", ["", "1001"]),
        ("list_tasks", ["", "x"]),
        ("list_tasks", ["a b", "10"]),
    ],
    ids=[
        "sweep-limit-0",
        "sweep-limit-negative",
        "sweep-limit-abc",
        "sweep-limit-10001",
        "sweep-no-limit",
        "list-page-0",
        "list-page-1001",
        "list-page-abc",
        "list-cursor-space",
    ],
)
def test_partition_scripts_check_their_arguments(
    scripts: Scripts, state: State, name: str, args: list[Any]
) -> None:
    keys = [scripts.part.lease_index_key() if name == "sweep" else scripts.part.index_key()]
    _expect_invalid(scripts, state, lambda: scripts.run(name, keys, args))


@pytest.mark.parametrize(
    "args",
    [
        ["bad name", "1"],
        ["", "1"],
        ["n" * 65, "1"],
        ["ns{x}", "1"],
        ["new-ns", "-1"],
        ["new-ns", "1025"],
        ["new-ns", "abc"],
        ["new-ns", "1.5"],
        ["new-ns"],
        [],
    ],
    ids=[
        "space",
        "empty",
        "65-chars",
        "brace",
        "partitions-negative",
        "partitions-1025",
        "partitions-abc",
        "partitions-float",
        "partitions-missing",
        "nothing",
    ],
)
def test_register_namespace_script_checks_its_arguments(
    scripts: Scripts, state: State, args: list[Any]
) -> None:
    keys = [namespaces_key(scripts.prefix)]
    _expect_invalid(scripts, state, lambda: scripts.run("register_namespace", keys, args))


# ARGV of the reads and announcements added for schedulers and workers.
READ_CASES: dict[str, tuple[str, list[Any]]] = {
    "view-node-space": ("task_view", ["live", "n 1"]),
    "view-node-missing": ("task_view", ["live"]),
    "units-version-empty": ("node_units", ["live", "", "n1", ""]),
    "units-node-brace": ("node_units", ["live", "1", "{n1}", ""]),
    "units-group-control": ("node_units", ["live", "1", "n1", "g\x01"]),
    "units-group-missing": ("node_units", ["live", "1", "n1"]),
    "sweep-lock-without-sweeper": ("sweep", ["10", "", "100"]),
    "sweep-sweeper-without-lock": ("sweep", ["10", "n1", "0"]),
    "sweep-lock-60001": ("sweep", ["10", "n1", "60001"]),
    "sweep-sweeper-space": ("sweep", ["10", "n 1", "100"]),
    "summaries-node-space": ("list_summaries", ["n 1", "", "10"]),
    "summaries-page-0": ("list_summaries", ["n1", "", "0"]),
    "announce-ttl-99": ("announce_node", ["p1", "99"]),
    "announce-process-space": ("announce_node", ["p 1", "1000"]),
}


@pytest.mark.parametrize(("name", "args"), list(READ_CASES.values()), ids=list(READ_CASES))
def test_reads_and_announcements_check_their_arguments(
    scripts: Scripts, state: State, name: str, args: list[Any]
) -> None:
    part = scripts.part
    key = {
        "task_view": part.task_key("live"),
        "node_units": part.task_key("live"),
        "sweep": part.lease_index_key(),
        "list_summaries": part.index_key(),
        "announce_node": f"{scripts.prefix}:node:n1",
    }[name]
    _expect_invalid(scripts, state, lambda: scripts.run(name, [key], args))
