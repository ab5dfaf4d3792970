"""Node ids are unique among live workers: a second live worker that runs as the same node is
reported; once the first has stopped (its announcement lapsed), the id is free again."""

from __future__ import annotations

import logging

import pytest
import redis
from waiting import until

import dtaskq
from dtaskq.keys import node_key
from dtaskq.worker import LocalTasksInMemory, Worker
from dtaskq.worker.heartbeats import PRESENCE_TTL_MS

CLASH = "another live worker runs as node"


def test_announcements_name_the_live_holder(client: dtaskq.Client) -> None:
    assert client.announce_node("n1", "p1", 1_000) is None
    assert client.announce_node("n1", "p1", 1_000) is None  # a holder announces again
    assert client.announce_node("n1", "p2", 1_000) == "p1"
    assert client.announce_node("n2", "p2", 1_000) is None
    with pytest.raises(dtaskq.InvalidArgument):
        client.announce_node("n1", "p 2", 1_000)
    with pytest.raises(dtaskq.InvalidArgument):
        client.announce_node("n1", "p2", 50)


def test_two_live_workers_with_one_node_id_are_reported(
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dtaskq")
    first = Worker(client, {namespace: LocalTasksInMemory()}, node_id="twin")
    second = Worker(client, {namespace: LocalTasksInMemory()}, node_id="twin")
    first.start()
    try:
        until(lambda: r.get(node_key(prefix, "twin")), what="the first worker's announcement")
        second.start()
        until(lambda: any(CLASH in r.getMessage() for r in caplog.records), what="the clash")
    finally:
        second.stop(grace_ms=0)
        first.stop(grace_ms=0)
    assert PRESENCE_TTL_MS <= 10_000  # a stopped worker's id is free again within seconds
