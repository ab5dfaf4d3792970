"""Each job function checks its ARGV before its first write: a call that a client could not
make (a raw ``Call`` with bad arguments) is rejected with InvalidArgument, for the reason the
case names, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from jobs_support import QUEUE, fill_queue, part0, running
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


def _enqueue(*records: list[str], request: str = "rid-1") -> list[str]:
    """The ARGV of an enqueue_jobs call: its request id, then the records."""
    return [request] + [value for record in records for value in record]


LANES = "lanes"  # stands for the partition's lanes key
JOB = "job"  # stands for the hash of the queued job "=queued"
# In ARGV: RUNNING, TOKEN stand for the id and token of the job that n1 runs, DEAD for the id
# of the dead job: a valid report, claim or id next to the bad value, which a function that
# wrote before its checks would apply.
RUNNING, TOKEN, DEAD = "RUNNING", "TOKEN", "DEAD"
REPORT = [RUNNING, TOKEN, "c", "0", "\xc0"]
CLAIM = ["n1", "p.1/1", "1", "30000"]
DAY_MS = "86400000"

# name: (function, key, ARGV, a part of the error's message)
LUA_CASES: dict[str, tuple[str, str, list[Any], str]] = {
    "enqueue-no-request-id": ("enqueue_jobs", LANES, [], "request id"),
    "enqueue-request-id-empty": ("enqueue_jobs", LANES, _enqueue(_record(), request=""), "request"),
    "enqueue-request-id-101": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(), request="r" * 101),
        "1-100",
    ),
    "enqueue-record-without-request-id": ("enqueue_jobs", LANES, _record(), "12 values"),
    "enqueue-short-record": ("enqueue_jobs", LANES, _enqueue(_record()[:11]), "12 values"),
    "enqueue-no-record": ("enqueue_jobs", LANES, _enqueue(), "12 values"),
    "enqueue-2nd-bad-priority": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(), _record(id="b", priority="1001")),
        "priority",
    ),
    "enqueue-priority-float": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(priority="1.0")),
        "priority",
    ),
    "enqueue-priority-plus": ("enqueue_jobs", LANES, _enqueue(_record(priority="+1")), "priority"),
    "enqueue-priority-leading-zero": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(priority="07")),
        "priority",
    ),
    "enqueue-priority-minus-zero": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(priority="-0")),
        "priority",
    ),
    "enqueue-delay-exponent": ("enqueue_jobs", LANES, _enqueue(_record(delay="1e3")), "delay ms"),
    "enqueue-run-at-hex": ("enqueue_jobs", LANES, _enqueue(_record(run_at="0x10")), "run at"),
    "enqueue-deadline-float": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(deadline="1700000000000.5")),
        "deadline",
    ),
    "enqueue-delay-and-run-at": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(delay="5", run_at="1")),
        "not both",
    ),
    "enqueue-backoff-word": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(), _record(id="b", backoff="1,x")),
        "backoff",
    ),
    "enqueue-backoff-first-above-max": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(backoff="5,2")),
        "first <= max",
    ),
    "enqueue-backoff-first-0": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(backoff="0,2")),
        "backoff first ms",
    ),
    "enqueue-backoff-leading-zero": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(backoff="1,02")),
        "backoff max ms",
    ),
    "enqueue-backoff-one-value": ("enqueue_jobs", LANES, _enqueue(_record(backoff="5")), "backoff"),
    "enqueue-drop-flag": ("enqueue_jobs", LANES, _enqueue(_record(drop="2")), "drop flag"),
    "enqueue-timeout-0": ("enqueue_jobs", LANES, _enqueue(_record(timeout="0")), "timeout ms"),
    "enqueue-attempts-0": ("enqueue_jobs", LANES, _enqueue(_record(attempts="0")), "max attempts"),
    "enqueue-attempts-1001": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(attempts="1001")),
        "max attempts",
    ),
    "enqueue-ttl-negative": ("enqueue_jobs", LANES, _enqueue(_record(ttl="-1")), "result ttl"),
    "enqueue-id-space": ("enqueue_jobs", LANES, _enqueue(_record(id="a b")), "job id"),
    "enqueue-handler-brace": (
        "enqueue_jobs",
        LANES,
        _enqueue(_record(handler="{h}")),
        "handler name",
    ),
    "enqueue-wrong-key": ("enqueue_jobs", JOB, _enqueue(_record()), "lanes key"),
    "claim-node-space": ("claim_jobs", LANES, ["a b", *CLAIM[1:]], "node id"),
    "claim-claimer-empty": ("claim_jobs", LANES, ["n1", "", "1", "30000"], "claimer"),
    "claim-claimer-101": ("claim_jobs", LANES, ["n1", "c" * 101, "1", "30000"], "claimer"),
    "claim-max-1001": ("claim_jobs", LANES, ["n1", "p.1/1", "1001", "30000"], "max jobs"),
    "claim-no-lease": ("claim_jobs", LANES, CLAIM[:3], "lease ms"),
    "claim-lease-0": ("claim_jobs", LANES, ["n1", "p.1/1", "1", "0"], "lease ms"),
    "claim-lease-above-a-day": ("claim_jobs", LANES, [*CLAIM[:3], "86400001"], "lease ms"),
    "claim-lease-float": ("claim_jobs", LANES, [*CLAIM[:3], "30000.0"], "lease ms"),
    "claim-report-arity": ("claim_jobs", LANES, [*CLAIM, *REPORT[:4]], "quintuples"),
    "claim-2nd-report-bad": (
        "claim_jobs",
        LANES,
        [*CLAIM, *REPORT, "x", "1", "z", "0", ""],
        "settle code",
    ),
    "claim-report-token-0": ("claim_jobs", LANES, [*CLAIM, RUNNING, "0", "c", "0", ""], "token"),
    "claim-report-delay-negative": (
        "claim_jobs",
        LANES,
        [*CLAIM, *REPORT, RUNNING, TOKEN, "f", "-1", "boom"],
        "retry delay ms",
    ),
    "claim-wrong-key": ("claim_jobs", JOB, CLAIM, "lanes key"),
    "heartbeat-odd": ("heartbeat_jobs", LANES, ["n1", "30000", RUNNING], "pairs"),
    "heartbeat-token-word": ("heartbeat_jobs", LANES, ["n1", "30000", RUNNING, "one"], "token"),
    "heartbeat-node-empty": ("heartbeat_jobs", LANES, ["", "30000", RUNNING, TOKEN], "node id"),
    "heartbeat-lease-0": ("heartbeat_jobs", LANES, ["n1", "0", RUNNING, TOKEN], "lease ms"),
    "heartbeat-lease-above-a-day": (
        "heartbeat_jobs",
        LANES,
        ["n1", "86400001", RUNNING, TOKEN],
        "lease ms",
    ),
    "heartbeat-lease-word": ("heartbeat_jobs", LANES, ["n1", "soon", RUNNING, TOKEN], "lease ms"),
    "release-2nd-bad": ("release_jobs", LANES, ["n1", RUNNING, TOKEN, "x", "0"], "token"),
    "release-odd": ("release_jobs", LANES, ["n1", RUNNING, TOKEN, "x"], "pairs"),
    "release-no-node": ("release_jobs", LANES, [], "node id"),
    "cancel-other-key": ("cancel_job", JOB, ["another"], "hash of job another"),
    "cancel-bad-id": ("cancel_job", JOB, ["a b"], "job id"),
    "await-other-key": ("await_job", JOB, ["another"], "hash of job another"),
    "get-other-key": ("get_job", JOB, ["another"], "hash of job another"),
    "sweep-limit-0": ("sweep_jobs", LANES, ["0", "", "0"], "limit"),
    "sweep-limit-10001": ("sweep_jobs", LANES, ["10001", "", "0"], "limit"),
    "sweep-lock-without-sweeper": ("sweep_jobs", LANES, ["10", "", "100"], "needs a sweeper"),
    "sweep-sweeper-without-lock": ("sweep_jobs", LANES, ["10", "s1", "0"], "takes the lock"),
    "sweep-lock-60001": ("sweep_jobs", LANES, ["10", "s1", "60001"], "lock ms"),
    "sweep-wrong-key": ("sweep_jobs", JOB, ["10", "", "0"], "lanes key"),
    "dead-count-0": ("dead_jobs", LANES, ["0", "0"], "count"),
    "dead-offset-negative": ("dead_jobs", LANES, ["-1", "10"], "offset"),
    "handle-dead-action": ("handle_dead", LANES, ["delete", "", "0", "10"], "action"),
    "handle-dead-2nd-id-bad": (
        "handle_dead",
        LANES,
        ["requeue", "", "0", "10", DEAD, "a b"],
        "job id",
    ),
    "handle-dead-handler": ("handle_dead", LANES, ["requeue", "a b", "0", "10"], "handler"),
    "handle-dead-limit-0": ("handle_dead", LANES, ["purge", "", "0", "0", DEAD], "limit"),
    "configure-aging-0": ("configure_queue", LANES, ["0"], "aging ms"),
    "configure-aging-above-a-day": ("configure_queue", LANES, ["86400001"], "aging ms"),
    "configure-aging-exponent": ("configure_queue", LANES, ["1e3"], "aging ms"),
}


@pytest.mark.parametrize(("name", "key", "argv", "reason"), LUA_CASES.values(), ids=list(LUA_CASES))
def test_each_function_checks_its_arguments_before_writing(
    client: dtaskq.Client, rejects: Rejects, name: str, key: str, argv: list[Any], reason: str
) -> None:
    fill_queue(client)
    part = part0(client)
    dead = client.dead_jobs(QUEUE)[0].id
    ((running_id, claim),) = running(client.redis, part).items()
    token = claim.split(" ")[0]
    stand_for = {RUNNING: running_id, TOKEN: token, DEAD: dead}
    argv = [stand_for.get(a, a) if isinstance(a, str) else a for a in argv]
    call_key = part.lanes_key() if key == LANES else part.job_key("=queued")
    error = rejects(dtaskq.InvalidArgument, client._execute, Call(function(name), [call_key], argv))
    assert reason in error.message, error.message


def test_the_valid_calls_next_to_the_bad_values_pass(client: dtaskq.Client) -> None:
    """The premise of the cases above: with its bad value left out, each call is accepted."""
    fill_queue(client)
    part = part0(client)
    ((running_id, claim),) = running(client.redis, part).items()
    token = claim.split(" ")[0]
    lanes = part.lanes_key()

    def call(name: str, argv: list[Any]) -> Any:
        argv = [token if a == TOKEN else running_id if a == RUNNING else a for a in argv]
        return client._execute(Call(function(name), [lanes], argv))

    assert call("heartbeat_jobs", ["n1", DAY_MS, RUNNING, TOKEN]) == [0]
    assert call("release_jobs", ["n1", RUNNING, TOKEN]) == [1]
    settled, jobs, _ = call("claim_jobs", CLAIM)
    assert settled == [] and jobs[1] > int(token)
    running_id, token = jobs[0].decode(), str(jobs[1])
    assert call("claim_jobs", ["n1", "p.1/2", "0", DAY_MS, *REPORT])[0] == [1]
    assert (
        call("enqueue_jobs", _enqueue(_record(backoff="2,2", ttl="0"), request="r" * 100)) == b"Q1"
    )
    assert call("sweep_jobs", ["10000", "s1", "60000"])[4] >= 0
