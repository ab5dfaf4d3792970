"""The embedded Redis Cluster: formation, slot ownership, failovers, killed nodes, cleanup."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from dtaskq import _cluster_nodes
from dtaskq.cluster_server import SLOTS, EmbeddedCluster
from dtaskq.server import find_server_binaries

HOST = "127.0.0.1"
MIN_VERSION = {"redis": (7, 0), "valkey": (7, 2)}
WAIT = 10.0  # for conditions that hold within milliseconds on an idle machine


@pytest.fixture(params=find_server_binaries(), ids=lambda b: b[0])
def binary(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """Each installed server binary as (kind, path)."""
    found: tuple[str, Path] = request.param
    return found


@pytest.fixture
def replicated(binary: tuple[str, Path]) -> Iterator[EmbeddedCluster]:
    """A cluster of three primaries with one replica each, for this test alone."""
    with EmbeddedCluster(binary[1], replicas=1) as cluster:
        yield cluster


def _direct(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port)


def _cluster_info(port: int) -> dict[str, str]:
    with _direct(port) as client:
        text = client.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _slot_owners(port: int) -> list[tuple[int, int, int]]:
    """(first slot, last slot, primary port) as the node on ``port`` sees them."""
    with _direct(port) as client:
        reply = client.execute_command("CLUSTER", "SLOTS")
    return sorted((start, end, primary[1]) for start, end, primary, *_ in reply)


def _primaries(cluster: EmbeddedCluster) -> list[int]:
    return [node.port for node in cluster.nodes if node.role == "primary"]


def _replica_of(cluster: EmbeddedCluster, primary: int) -> int:
    nodes = cluster.nodes
    index = [node.port for node in nodes].index(primary)
    follower = nodes[index + 1]
    assert follower.role == "replica"
    return follower.port


def _keys_on_every_primary(rc: RedisCluster, prefix: str, primaries: list[int]) -> dict[int, str]:
    """One key of this test per primary port, chosen by the slot it hashes to."""
    found: dict[int, str] = {}
    for index in range(10_000):
        key = f"{prefix}:{index}"
        found.setdefault(rc.get_node_from_key(key).port, key)
        if sorted(found) == sorted(primaries):
            return found
    raise AssertionError(f"no keys found for every primary: {found}")


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT:g} s: {what}"
        time.sleep(0.02)


def test_three_primaries_share_the_slots(cluster: EmbeddedCluster) -> None:
    nodes = cluster.nodes
    ports = [node.port for node in nodes]
    assert [node.role for node in nodes] == ["primary"] * 3
    assert {node.host for node in nodes} == {HOST}
    assert all(port + 10000 <= 65535 for port in ports)
    assert cluster.url == f"redis://{HOST}:{ports[0]}"
    version = tuple(int(part) for part in cluster.version.split(".")[:2])
    assert version >= MIN_VERSION[cluster.kind]

    # Three contiguous ranges of (nearly) equal size, one per primary, seen alike everywhere.
    owners = _slot_owners(ports[0])
    assert [owner for _, _, owner in owners] == ports
    assert owners[0][0] == 0 and owners[-1][1] == SLOTS - 1
    assert all(prev[1] + 1 == nxt[0] for prev, nxt in itertools.pairwise(owners))
    sizes = [end - start + 1 for start, end, _ in owners]
    assert max(sizes) - min(sizes) <= 1
    for port in ports:
        assert _slot_owners(port) == owners
        info = _cluster_info(port)
        assert (info["cluster_state"], info["cluster_size"]) == ("ok", "3")
        assert info["cluster_known_nodes"] == "3"
        with _direct(port) as client:
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            # Each node's bus listens 10000 above its port.
            myself = next(
                line
                for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()
                if "myself" in line
            )
            assert f"{HOST}:{port}@{port + 10000}" in myself


def test_keys_on_every_primary_are_written_and_read(
    cluster: EmbeddedCluster, rc: RedisCluster, prefix: str
) -> None:
    keys = _keys_on_every_primary(rc, prefix, _primaries(cluster))
    try:
        for port, key in keys.items():
            with _direct(port) as direct:
                assert direct.execute_command("CLUSTER", "KEYSLOT", key) == rc.keyslot(key)
            rc.set(key, str(port).encode())
        for port, key in keys.items():
            assert rc.get(key) == str(port).encode()
            # The primary owning the slot serves it without redirecting.
            with _direct(port) as direct:
                assert direct.get(key) == str(port).encode()
    finally:
        for key in keys.values():
            rc.delete(key)


def test_failover_swaps_roles_and_the_client_follows(
    replicated: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated
    assert [node.role for node in cluster.nodes] == ["primary", "replica"] * 3
    old = _primaries(cluster)[0]
    replica = _replica_of(cluster, old)
    with RedisCluster(host=HOST, port=old) as rc:
        keys = _keys_on_every_primary(rc, prefix, _primaries(cluster))
        for key in keys.values():
            rc.set(key, b"before")

        assert cluster.failover(old) == replica

        assert _primaries(cluster) == [replica, *_primaries(cluster)[1:]]
        assert _replica_of(cluster, replica) == old
        with _direct(old) as client:
            replication = client.info("replication")
        assert (replication["role"], replication["master_port"]) == ("slave", replica)
        for node in cluster.nodes:
            assert _cluster_info(node.port)["cluster_state"] == "ok"
            assert _slot_owners(node.port)[0][2] == replica
        # The same client reads and writes every range, the moved one included.
        for key in keys.values():
            assert rc.get(key) == b"before"
            rc.set(key, b"after")
            assert rc.get(key) == b"after"
        with _direct(replica) as client:
            assert client.get(keys[old]) == b"after"


def test_a_function_loaded_on_a_primary_reaches_its_replica_and_survives_failover(
    replicated: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated
    primary, *others = _primaries(cluster)
    replica = _replica_of(cluster, primary)
    library = f"lib{prefix}"
    code = (
        f"#!lua name={library}\n"
        f"redis.register_function('get{prefix}', "
        "function(keys) return redis.call('GET', keys[1]) end)"
    )
    with _direct(primary) as client:
        assert client.function_load(code) == library.encode()

    def loaded(port: int) -> bool:
        with _direct(port) as client:
            return bool(client.function_list(library))

    # Replicated like a write; FUNCTION LOAD does not cross to the other primaries.
    _eventually(lambda: loaded(replica), "the function reached the replica")
    assert not any(loaded(port) for port in others)

    assert cluster.failover(primary) == replica
    with RedisCluster(host=HOST, port=replica) as rc:
        key = _keys_on_every_primary(rc, prefix, _primaries(cluster))[replica]
        rc.set(key, b"value")
        assert rc.fcall(f"get{prefix}", 1, key) == b"value"


def test_a_killed_primary_is_replaced_by_its_replica_and_rejoins(
    replicated: EmbeddedCluster, prefix: str
) -> None:
    cluster = replicated
    killed = _primaries(cluster)[1]
    replica = _replica_of(cluster, killed)
    with RedisCluster(host=HOST, port=_primaries(cluster)[0]) as rc:
        keys = _keys_on_every_primary(rc, prefix, _primaries(cluster))
        for key in keys.values():
            rc.set(key, b"kept")

        assert cluster.kill_primary(killed) == replica

        assert not _accepts_connections(killed)
        assert killed not in [node.port for node in cluster.nodes]
        assert _primaries(cluster)[1] == replica
        assert len(cluster.nodes) == 5
        for node in cluster.nodes:
            assert _cluster_info(node.port)["cluster_state"] == "ok"
        for key in keys.values():
            assert rc.get(key) == b"kept"

        cluster.restart(killed)

        assert _replica_of(cluster, replica) == killed
        with _direct(killed) as client:
            assert client.info("replication")["master_port"] == replica
            # A replica answers reads for its primary's slots once told to.
            client.execute_command("READONLY")
            assert client.get(keys[killed]) == b"kept"
        rc.set(keys[killed], b"again")
        assert rc.get(keys[killed]) == b"again"


def test_stop_ends_every_node_and_removes_the_directory(binary: tuple[str, Path]) -> None:
    cluster = EmbeddedCluster(binary[1])
    cluster.start()
    ports = [node.port for node in cluster.nodes]
    pids, directories = [], []
    for port in ports:
        with redis.Redis(host=HOST, port=port, decode_responses=True) as client:
            pids.append(client.info("server")["process_id"])
            directories.append(Path(client.config_get("dir")["dir"]))
    assert all(directory.is_dir() for directory in directories)

    cluster.stop()

    for port, pid, directory in zip(ports, pids, directories, strict=True):
        assert not _accepts_connections(port)
        assert not _accepts_connections(port + 10000)
        assert not directory.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not directories[0].parent.exists()
    with pytest.raises(RuntimeError, match="not running"):
        _ = cluster.url
    cluster.stop()


def test_start_twice_is_refused(cluster: EmbeddedCluster) -> None:
    with pytest.raises(RuntimeError, match="already"):
        cluster.start()


def test_failover_needs_a_primary_with_a_replica(cluster: EmbeddedCluster) -> None:
    primary = _primaries(cluster)[0]
    with pytest.raises(ValueError, match="no replica"):
        cluster.failover(primary)
    with pytest.raises(ValueError, match="no replica"):
        cluster.kill_primary(primary)
    with pytest.raises(ValueError, match="no primary"):
        cluster.failover(1)
    with pytest.raises(ValueError, match="no stopped node"):
        cluster.restart(primary)
    assert _cluster_info(primary)["cluster_state"] == "ok"


@pytest.mark.parametrize(("primaries", "replicas"), [(0, 0), (3, -1)])
def test_impossible_sizes_are_refused(primaries: int, replicas: int) -> None:
    with pytest.raises(ValueError):
        EmbeddedCluster(Path("unused"), primaries=primaries, replicas=replicas)


def test_ports_leave_room_for_the_cluster_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _cluster_nodes._free_port
    # A port whose bus port someone else holds, found the way the cluster looks for one.
    while True:
        taken_bus = real()
        if taken_bus - 10000 > 1024:
            break
    with socket.socket() as holder:
        holder.bind((HOST, taken_bus))
        offered = iter([65000, taken_bus - 10000])

        def free_port(port: int = 0) -> int:
            return real(port) if port else next(offered, None) or real()

        monkeypatch.setattr(_cluster_nodes, "_free_port", free_port)
        chosen = _cluster_nodes._bus_capable_port()

    assert chosen not in (65000, taken_bus - 10000)
    assert chosen + 10000 <= 65535
