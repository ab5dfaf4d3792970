"""The server processes of an embedded Redis Cluster, and what they report.

:class:`Nodes` launches cluster-enabled servers on ports whose cluster bus port is
free too, runs commands on them, and waits until they all agree on the slot map and
every replica has synced. Which slots go where, and why a node changes role, is
decided by :class:`dtaskq.cluster_server.EmbeddedCluster`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import redis

from dtaskq.server import (
    _HOST,
    _client,
    _free_port,
    _kill,
    _launch,
    _log_tail,
    _Running,
    _shut_down,
    _spawn,
    _wait_until_ready,
)

SETTLE_TIMEOUT = 30.0
"""Seconds to wait, by default, for the nodes to agree after a change."""

_BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
_MAX_PORT = 65535 - _BUS_OFFSET
_PORT_PROBES = 200
_CALL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02


class Shard(NamedTuple):
    """A slot range, its primary's port and its replicas' ports (sorted)."""

    start: int
    end: int
    primary: int
    replicas: tuple[int, ...]


SlotMap = tuple[Shard, ...]  # sorted by first slot


@dataclass
class _Node:
    directory: Path
    running: _Running | None
    client: redis.Redis | None


class Nodes:
    """The server processes of one cluster, by port in start order, killed ones included."""

    def __init__(self, binary: Path, node_timeout_ms: int) -> None:
        """Prepare to run ``binary`` with a cluster node timeout of ``node_timeout_ms``."""
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        self._nodes: dict[int, _Node] = {}

    @property
    def ports(self) -> list[int]:
        """Every node's port in start order, killed nodes included."""
        return list(self._nodes)

    def start(self, directory: Path, count: int) -> None:
        """Start ``count`` nodes, each in a new folder of ``directory``, and return once
        each answers; :meth:`stop` stops those that did if this raises.

        They start all at once: a primary refuses to serve in its first 2 s
        (CLUSTER_WRITABLE_DELAY), and those seconds then run for all of them together.
        """
        taken: set[int] = set()
        spawned: list[tuple[Path, int, subprocess.Popen[bytes]]] = []
        try:
            for index in range(count):
                node_dir = directory / f"node-{index}"
                node_dir.mkdir()
                port = _bus_capable_port(taken)
                taken.update((port, port + _BUS_OFFSET))
                args = self._cluster_args(node_dir, port)
                spawned.append((node_dir, port, _spawn(self.binary, port, node_dir, args)))
            for node_dir, port, process in spawned:
                running = _wait_until_ready(process, port, node_dir)
                if running is None:  # another process took one of its ports meanwhile
                    running = _launch(
                        self.binary,
                        node_dir,
                        extra_args=partial(self._cluster_args, node_dir),
                        pick_port=partial(_bus_capable_port, taken),
                    )
                client = _client(running.port, _CALL_TIMEOUT)
                self._nodes[running.port] = _Node(node_dir, running, client)
        except BaseException:
            started = {node.running.process for node in self._nodes.values() if node.running}
            for _, _, process in spawned:
                if process not in started:
                    _kill(process)
            raise

    def stop(self) -> None:
        """Shut every node down without saving and forget them all; idempotent."""
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            if node.client is not None:
                node.client.close()
            if node.running is not None:
                # NOW: the cluster goes away whole, so no primary need wait for its replicas.
                _shut_down(node.running, now=True)

    def kill(self, port: int) -> None:
        """Kill the running node on ``port`` (SIGKILL); it keeps its folder for :meth:`restart`."""
        node = self._nodes[port]
        assert node.running is not None and node.client is not None
        node.client.close()
        node.running.process.kill()
        node.running.process.wait()
        node.running = node.client = None

    def restart(self, port: int) -> None:
        """Start the killed node on ``port`` again, on the same port and with its old
        cluster config, and return once it answers.

        Raises ValueError if no stopped node had that port, and RuntimeError if it
        cannot start (say, the port was taken meanwhile).
        """
        node = self._nodes.get(port)
        if node is None or node.running is not None:
            raise ValueError(f"no stopped node of this cluster had port {port}")
        args = self._cluster_args(node.directory, port)
        process = _spawn(self.binary, port, node.directory, args)
        running = _wait_until_ready(process, port, node.directory)
        if running is None:
            raise RuntimeError(
                f"the node on port {port} exited while restarting; "
                f"its log ends:\n{_log_tail(node.directory)}"
            )
        node.running, node.client = running, _client(port, _CALL_TIMEOUT)

    def first_running(self) -> _Running:
        """The first node still running; RuntimeError if there is none."""
        for node in self._nodes.values():
            if node.running is not None:
                return node.running
        raise RuntimeError("embedded cluster is not running")

    def call(self, port: int, *args: object) -> object:
        """Run a command on the node on ``port`` and return its reply."""
        # redis-py leaves execute_command unannotated.
        result: object = self._client_of(port).execute_command(*args)  # type: ignore[no-untyped-call]
        return result

    def attempt(self, port: int, *args: object) -> str | None:
        """Run a command on ``port``; return None, or the error it was refused with."""
        try:
            self.call(port, *args)
        except redis.ResponseError as error:
            return str(error)
        return None

    def role(self, port: int) -> str:
        """The replication role the node on ``port`` reports: ``"master"`` or ``"slave"``."""
        return str(self._client_of(port).info("replication").get("role"))

    def node_id(self, port: int) -> str:
        """The cluster node id of the node on ``port``."""
        return _text(self.call(port, "CLUSTER", "MYID"))

    def until(
        self, check: Callable[[], str | None], what: str, timeout: float = SETTLE_TIMEOUT
    ) -> None:
        """Poll ``check`` until it returns None; it returns why not otherwise.

        Raises RuntimeError naming the last reason and ending with the nodes' logs
        if that takes longer than ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                reason = check()
            except redis.RedisError as error:  # a node mid-failover may refuse or drop
                reason = f"{type(error).__name__}: {error}"
            if reason is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.1f} s waiting for {what}: {reason}\n" + self._logs()
                )
            time.sleep(_POLL_INTERVAL)

    def settle(
        self,
        accept: Callable[[SlotMap], str | None],
        what: str,
        timeout: float = SETTLE_TIMEOUT,
    ) -> SlotMap:
        """Wait until the live nodes agree on a slot map that ``accept`` returns None for,
        and return it; raises RuntimeError as :meth:`until` does."""
        agreed: list[SlotMap] = []
        self.until(partial(self._check_settled, accept, agreed), what, timeout)
        return agreed[-1]

    def _check_settled(
        self, accept: Callable[[SlotMap], str | None], agreed: list[SlotMap]
    ) -> str | None:
        """Return why the cluster has not settled, or None after appending its slot map."""
        live = sorted(port for port, node in self._nodes.items() if node.running is not None)
        views: dict[int, SlotMap] = {}
        for port in live:
            info = _fields(_text(self.call(port, "CLUSTER", "INFO")))
            if info.get("cluster_state") != "ok":
                return f"port {port} reports cluster_state:{info.get('cluster_state')}"
            # Counts handshakes still under way, and nodes that were killed, too.
            if info.get("cluster_known_nodes") != str(len(self._nodes)):
                return f"port {port} knows {info.get('cluster_known_nodes')} nodes"
            found, hosts = _slot_map(self.call(port, "CLUSTER", "SLOTS"))
            if hosts != {_HOST}:
                return f"port {port} announces the hosts {sorted(hosts)}"
            views[port] = found
        first = views[live[0]]
        for port, found in views.items():
            if found != first:
                return f"ports {live[0]} and {port} disagree on the slot map"
        listed = sorted(p for shard in first for p in (shard.primary, *shard.replicas))
        if listed != live:
            return f"the slot map lists ports {listed}, the live ones are {live}"
        for shard in first:
            if self.role(shard.primary) != "master":
                return f"port {shard.primary} is not a primary yet"
            for replica in shard.replicas:
                info = self._client_of(replica).info("replication")
                if (
                    info.get("role") != "slave"
                    or str(info.get("master_port")) != str(shard.primary)
                    or info.get("master_link_status") != "up"
                    or info.get("master_sync_in_progress")
                ):
                    return f"port {replica} has not synced with port {shard.primary}"
        reason = accept(first)
        if reason is None:
            agreed.append(first)
        return reason

    def _cluster_args(self, directory: Path, port: int) -> list[str]:
        return [
            *("--cluster-enabled", "yes"),
            *("--cluster-config-file", str(directory / f"nodes-{port}.conf")),
            *("--cluster-node-timeout", str(self.node_timeout_ms)),
            # A primary then syncs a new replica at once, not after 5 s of waiting for more.
            *("--repl-diskless-sync-delay", "0"),
            # Redis 7.0 leaves a replica out of CLUSTER SLOTS while its replication offset
            # is 0, which on an idle primary lasts until the first ping to replicas (10 s).
            *("--repl-ping-replica-period", "1"),
            # Lets tests stall a node with DEBUG SLEEP; accepted from loopback only.
            *("--enable-debug-command", "local"),
        ]

    def _client_of(self, port: int) -> redis.Redis:
        node = self._nodes[port]
        if node.client is None:
            raise RuntimeError(f"the node on port {port} is not running")
        return node.client

    def _logs(self, lines: int = 10) -> str:
        return "\n".join(
            f"the log of port {port} ends:\n{_log_tail(node.directory, lines)}"
            for port, node in self._nodes.items()
        )


def _bus_capable_port(taken: Collection[int] = ()) -> int:
    """Return a free port whose cluster bus port (10000 higher) is free too, neither of
    them in ``taken`` (ports promised to nodes that may not have bound them yet)."""
    for _ in range(_PORT_PROBES):
        port = _free_port()
        if port > _MAX_PORT or port in taken or port + _BUS_OFFSET in taken:
            continue
        try:
            _free_port(port + _BUS_OFFSET)
        except OSError:
            continue
        return port
    raise RuntimeError(
        f"found no free loopback port up to {_MAX_PORT} whose port + {_BUS_OFFSET} "
        f"is free too, in {_PORT_PROBES} tries"
    )


def _slot_map(reply: object) -> tuple[SlotMap, set[str]]:
    """Reduce a CLUSTER SLOTS reply to shards of ports, and the hosts it names."""
    shards: list[Shard] = []
    hosts: set[str] = set()
    assert isinstance(reply, list)
    for start, end, primary, *replicas in reply:
        # Each node is [host, port, id, ...]; a host the node does not know yet is "" or "?".
        hosts.update(_text(node[0]) for node in (primary, *replicas))
        followers = tuple(sorted(int(node[1]) for node in replicas))
        shards.append(Shard(int(start), int(end), int(primary[1]), followers))
    return tuple(sorted(shards)), hosts


def _fields(text: str) -> dict[str, str]:
    """Parse ``name:value`` lines, as CLUSTER INFO answers."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
