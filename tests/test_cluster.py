"""dtaskq on a real 3-primary Redis Cluster: namespaces whose partitions spread over every
primary, worker processes that read each slot's events, a worker killed mid-task, the function
library on every primary and across a failover, and a cluster node used as a single server.
(Every other server test also runs on a cluster: see the ``server_url`` fixture.)"""

from __future__ import annotations

import signal
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster
from waiting import until
from worker_procs import Workers

import dtaskq
from dtaskq.cluster_server import EmbeddedCluster
from dtaskq.keys import Partition
from dtaskq.scripts import LIBRARY

PARTITIONS = 6


@pytest.fixture
def url(cluster: EmbeddedCluster) -> str:
    """The cluster's URL as dtaskq takes it."""
    return f"{cluster.url}?cluster=1"


@pytest.fixture
def spread(url: str, prefix: str, namespace: str) -> Iterator[dtaskq.Client]:
    """A client whose test namespace has six partitions."""
    with dtaskq.Client.from_url(url, prefix=prefix, partitions={namespace: PARTITIONS}) as c:
        yield c


def _primary_of(rc: RedisCluster, key: str) -> int:
    node = rc.get_node_from_key(key)
    assert node is not None
    return int(node.port)


def _task_primary(rc: RedisCluster, prefix: str, ref: dtaskq.TaskRef) -> int:
    index = dtaskq.keys.partition_of(ref.task_id, PARTITIONS)
    return _primary_of(rc, Partition(prefix, ref.namespace, index).task_key(ref.task_id))


def test_partitions_spread_over_every_primary(
    spread: dtaskq.Client, rc: RedisCluster, cluster: EmbeddedCluster, prefix: str, namespace: str
) -> None:
    refs = [spread.add_task(namespace, f"t{i}", units=["a", "b"]) for i in range(24)]
    assert len(spread.partitions(namespace)) == PARTITIONS
    primaries = {n.port for n in cluster.nodes if n.role == "primary"}
    assert {_task_primary(rc, prefix, ref) for ref in refs} == primaries
    for ref in refs:
        first = spread.claim_any(ref, "n1").units[0]
        result = spread.claim_any(ref, "n1", complete=[(first, first.token)])
        assert result.units == ["b"] and not result.rejected
        spread.complete_unit(ref, "n1", "b", result.units[0].token)
    summaries = spread.task_summaries(namespace, "n1")
    assert len(summaries) == 24 and all(s.status is dtaskq.TaskStatus.FINISHED for s in summaries)


def test_a_killed_worker_leaves_every_unit_completed_once(
    url: str, rc: RedisCluster, prefix: str, namespace: str
) -> None:
    """Three worker processes serve a six-partition namespace; one is SIGKILLed inside a
    unit; the tasks on every primary still finish, every unit completed, and only what the
    victim had not reported yet was done twice."""
    with dtaskq.Client.from_url(url, prefix=prefix, partitions={namespace: PARTITIONS}) as c:
        refs = [
            c.add_task(namespace, f"r{i}", unit_count=20, workers_hint=3, lease_ms=2000)
            for i in range(3)
        ]
        named = c.add_task(namespace, "named", units=[f"u{i}" for i in range(20)], lease_ms=2000)
        primaries = {_task_primary(rc, prefix, r) for r in [*refs, named]}
        assert len(primaries) >= 2, "the tasks should live on more than one primary"
        workers = Workers(url, prefix, namespace, rc)  # type: ignore[arg-type]
        try:
            workers.start("victim", concurrency=2, unit_ms=1000, lease_ms=2000)
            until(lambda: len(workers.log("begin", node="victim")) >= 2, what="victim's units")
            workers.start("a", unit_ms=50, lease_ms=2000)
            workers.start("b", unit_ms=50, lease_ms=2000)
            until(lambda: len(workers.log("begin", node="victim")) >= 3, what="victim busy")
            workers.signal("victim", signal.SIGKILL)

            def all_finished() -> bool:
                found = [c.get_task(namespace, r.task_id) for r in [*refs, named]]
                return all(t is not None and t.status.is_terminal for t in found)

            until(all_finished, timeout=40, what="every task to finish")
            for ref in [*refs, named]:
                task = c.get_task(namespace, ref.task_id)
                assert task is not None and task.status is dtaskq.TaskStatus.FINISHED
            done = Counter((d["task"], d["unit"]) for d in workers.log("done"))
            expected = {(r.task_id, str(u)) for r in refs for u in range(20)}
            expected |= {("named", f"u{i}") for i in range(20)}
            assert set(done) == expected
            # At least once: a unit the victim finished but had not reported yet (its
            # completion rides on its thread's next claim) runs again elsewhere; no other.
            victims = {(d["task"], d["unit"]) for d in workers.log("done", node="victim")}
            twice = {unit for unit, count in done.items() if count > 1}
            assert twice <= victims and len(twice) <= 2, f"units done twice: {twice}"
        finally:
            workers.close()


def test_the_library_reaches_every_primary(url: str, cluster: EmbeddedCluster) -> None:
    primaries = [n for n in cluster.nodes if n.role == "primary"]
    for node in primaries:
        redis.Redis(host=node.host, port=node.port).function_flush()
    with dtaskq.Client.from_url(url) as client:
        assert client.load_library() == LIBRARY.name
    for node in primaries:
        listed = redis.Redis(host=node.host, port=node.port).function_list(library=LIBRARY.name)
        assert len(listed) == 1, f"no library on {node.port}"


def test_a_cluster_node_used_as_a_single_server_is_a_clear_error(
    cluster: EmbeddedCluster, prefix: str, namespace: str
) -> None:
    with (
        dtaskq.Client.from_url(cluster.url, prefix=prefix) as plain,
        pytest.raises(dtaskq.ConfigurationError, match=r"\?cluster=1"),
    ):
        for i in range(20):  # some namespaces' slots are this node's, most are not
            plain.add_task(f"{namespace}-{i}", "t", units=["a"])


def test_calls_survive_a_failover(cluster: EmbeddedCluster, prefix: str, namespace: str) -> None:
    """A replica promoted by failover serves the library it got from its primary."""
    with (
        EmbeddedCluster(cluster.binary, replicas=1) as replicated,
        dtaskq.Client.from_url(f"{replicated.url}?cluster=1", prefix=prefix) as client,
    ):
        ref = client.add_task(namespace, "t", units=["a", "b"])
        token = client.claim_unit(ref, "n1", "a")
        key = Partition(prefix, namespace, 0).task_key("t")
        holder = client.redis.get_node_from_key(key)  # type: ignore[union-attr]
        assert holder is not None
        replicated.failover(int(holder.port))
        assert client.complete_unit(ref, "n1", "a", token) == token
        assert client.claim_any(ref, "n2").units == ["b"]
        task = client.get_task(namespace, "t")
        assert task is not None and task.units["a"].status is dtaskq.UnitStatus.COMPLETED


def test_a_cluster_that_cannot_be_reached_is_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(dtaskq.TransientError):
        dtaskq.Client.from_url(f"redis://127.0.0.1:{port}?cluster=1", connect_timeout=1)
