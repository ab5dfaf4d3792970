"""Each job function checks its ARGV before its first write: a call that a client could not
make (a raw ``Call`` with bad arguments) is rejected with InvalidArgument and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from jobs_support import QUEUE, fill_queue, part0
from support import Rejects

import dtaskq
from dtaskq.calls import Call
from dtaskq.scripts import function


def _record(**fields: str) -> list[str]:
    """The 12 ARGV values of one enqueue_jobs record, valid unless ``fields`` say otherwise."""
    record = {
        "id": "new-job",
        "handler": "h",
        "args": "\x92\x90\x80",
        "priority": "0",
        "delay": "",
        "run_at": "",
        "deadline": "",
        "drop": "0",
        "timeout": "",
        "attempts": "1",
        "backoff": "",
        "ttl": "",
    }
    unknown = set(fields) - set(record)
    assert not unknown, unknown
    return list((record | fields).values())


LANES = "lanes"  # stands for the partition's lanes key
JOB = "job"  # stands for the hash of the queued job "=queued"

LUA_CASES: dict[str, tuple[str, str, list[Any]]] = {
    "enqueue-short-record": ("enqueue_jobs", LANES, _record()[:11]),
    "enqueue-no-record": ("enqueue_jobs", LANES, []),
    "enqueue-2nd-bad-priority": ("enqueue_jobs", LANES, _record() + _record(priority="1001")),
    "enqueue-priority-float": ("enqueue_jobs", LANES, _record(priority="1.0")),
    "enqueue-delay-and-run-at": ("enqueue_jobs", LANES, _record(delay="5", run_at="1")),
    "enqueue-backoff": ("enqueue_jobs", LANES, _record() + _record(id="b", backoff="1,x")),
    "enqueue-drop-flag": ("enqueue_jobs", LANES, _record(drop="2")),
    "enqueue-timeout-0": ("enqueue_jobs", LANES, _record(timeout="0")),
    "enqueue-attempts-0": ("enqueue_jobs", LANES, _record(attempts="0")),
    "enqueue-ttl-negative": ("enqueue_jobs", LANES, _record(ttl="-1")),
    "enqueue-id-space": ("enqueue_jobs", LANES, _record(id="a b")),
    "enqueue-wrong-key": ("enqueue_jobs", JOB, _record()),
    "claim-claimer-empty": ("claim_jobs", LANES, ["n1", "", "1"]),
    "claim-max-1001": ("claim_jobs", LANES, ["n1", "r1", "1001"]),
    "claim-report-arity": ("claim_jobs", LANES, ["n1", "r1", "1", "RUNNING", "1", "c", "0"]),
    "claim-2nd-report-bad": (
        "claim_jobs",
        LANES,
        ["n1", "r1", "1", "RUNNING", "1", "c", "0", "v", "x", "1", "z", "0", ""],
    ),
    "claim-report-token-0": ("claim_jobs", LANES, ["n1", "r1", "1", "x", "0", "c", "0", ""]),
    "heartbeat-odd": ("heartbeat_jobs", LANES, ["n1", "RUNNING"]),
    "heartbeat-token-word": ("heartbeat_jobs", LANES, ["n1", "RUNNING", "one"]),
    "release-2nd-bad": ("release_jobs", LANES, ["n1", "RUNNING", "1", "x", "0"]),
    "release-no-node": ("release_jobs", LANES, []),
    "cancel-other-key": ("cancel_job", JOB, ["another"]),
    "cancel-bad-id": ("cancel_job", JOB, ["a b"]),
    "await-other-key": ("await_job", JOB, ["another"]),
    "get-other-key": ("get_job", JOB, ["another"]),
    "sweep-limit-0": ("sweep_jobs", LANES, ["0", "", "0"]),
    "sweep-lock-without-sweeper": ("sweep_jobs", LANES, ["10", "", "100"]),
    "sweep-sweeper-without-lock": ("sweep_jobs", LANES, ["10", "s1", "0"]),
    "sweep-wrong-key": ("sweep_jobs", JOB, ["10", "", "0"]),
    "dead-count-0": ("dead_jobs", LANES, ["0", "0"]),
    "handle-dead-action": ("handle_dead", LANES, ["delete", "", "0", "10"]),
    "handle-dead-2nd-id-bad": ("handle_dead", LANES, ["requeue", "", "0", "10", "DEAD", "a b"]),
    "handle-dead-handler": ("handle_dead", LANES, ["requeue", "a b", "0", "10"]),
    "configure-aging-0": ("configure_queue", LANES, ["0"]),
    "configure-aging-exponent": ("configure_queue", LANES, ["1e3"]),
}


@pytest.mark.parametrize(("name", "key", "argv"), LUA_CASES.values(), ids=list(LUA_CASES))
def test_each_function_checks_its_arguments_before_writing(
    client: dtaskq.Client, rejects: Rejects, name: str, key: str, argv: list[Any]
) -> None:
    fill_queue(client)
    part = part0(client)
    dead = client.dead_jobs(QUEUE)[0].id
    (running,) = [j.decode() for j in client.redis.zrange(f"{part.base}leases", 0, -1)]
    argv = [running if a == "RUNNING" else dead if a == "DEAD" else a for a in argv]
    call_key = part.lanes_key() if key == LANES else part.job_key("=queued")
    error = rejects(dtaskq.InvalidArgument, client._execute, Call(function(name), [call_key], argv))
    assert error.message
