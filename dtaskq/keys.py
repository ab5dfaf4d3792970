"""Key names: the one place where dtaskq formats them (docs/keys.md).

Every key starts with the prefix (default ``dtq``). The registry ``<prefix>:namespaces`` (hash
namespace -> partition count P, fixed at the namespace's first task) lies outside every
partition. A namespace is split into P partitions; every key of a partition starts with the
hash tag ``{<prefix>:<namespace>:<p>}``, so all of them share one slot. A task of id ``t``
lives in partition ``crc32(t) mod P`` under::

    {<prefix>:<ns>:<p>}:task:<t>      hash    the task's fields
    {<prefix>:<ns>:<p>}:units:<t>     hash    unit id -> msgpack unit record (10 slots)
    {<prefix>:<ns>:<p>}:acks:<t>      hash    "<phase>:<node>" -> msgpack ack record
    {<prefix>:<ns>:<p>}:nodes:<t>     hash    node -> number of units it owns
    {<prefix>:<ns>:<p>}:pending:<t>   zset    named units: fresh units, never claimed yet ->
                                              their place in the task
    {<prefix>:<ns>:<p>}:owned:<t>     zset    named units: "<node>\\n<group>\\n<unit>" of every
                                              unit a node owns, any status (score 0, one
                                              node's group found by prefix)
    {<prefix>:<ns>:<p>}:groups:<t>    zset    named units: "<node>\\n<group>" of each group a
                                              node owns units of (score 0, found by prefix)
    {<prefix>:<ns>:<p>}:spans:<t>     zset    range tasks: unclaimed spans, "<start> <end> <node>"
                                              by start (node "" when no node continues it)
    {<prefix>:<ns>:<p>}:order:<t>     zset    range tasks: span start -> start - 2**53 for a fresh
                                              span, its length for a continued one
    {<prefix>:<ns>:<p>}:returned:<t>  zset    both kinds: claimed-before units any node may
                                              claim again -> the time they may be claimed
    {<prefix>:<ns>:<p>}:kept:<t>      zset    sticky tasks: "<node>\\n<unit>" of units kept for
                                              their node (score 0, found by prefix)
    {<prefix>:<ns>:<p>}:done:<t>      set     range tasks: numbers k of the completion bitmaps
    {<prefix>:<ns>:<p>}:done<k>:<t>   string  bit i: unit k * 2**20 + i is complete
    {<prefix>:<ns>:<p>}:answers:<t>   hash    claimer -> msgpack [request id, reply] of its last
                                              claim_range / claim_any (at most 1024 claimers)
    {<prefix>:<ns>:<p>}:cleaned:<t>   string  "<version> <request id>" of the last cleanup,
                                              for one minute (makes cleanup retry-safe)

and the partition's shared keys are ``leases`` (zset "<task>\\n<unit>" -> lease deadline),
``expiry`` (zset task -> deletion time), ``conflicts`` (hash key -> holding task), ``tasks``
(zset of task ids), ``seq`` (version counter), ``events`` (stream of what the functions
changed, capped near 1 000 entries; see ``lua/include/events.lua``) and ``sweeping`` (string,
the sweep lock that ``sweep`` takes with SET NX PX when called with a sweeper). The kind of key
comes before the task id, so no task id can name another task's key.

Each function is called with one key at most: the task hash (task functions), the lease
index (heartbeat, release, sweep), the task index (list_tasks, list_summaries) or the
registry; it derives every other key it touches from that one, in ``lua/include/keys.lua``,
so each call touches a single slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_PREFIX = "dtq"


def namespaces_key(prefix: str) -> str:
    """The registry hash: namespace -> partition count."""
    return f"{prefix}:namespaces"


def node_key(prefix: str, node: str) -> str:
    """A node's presence: the process that runs as that node now (``announce_node``)."""
    return f"{prefix}:node:{node}"


def partition_of(task_id: str, partitions: int) -> int:
    """The partition a task id belongs to."""
    return zlib.crc32(task_id.encode()) % partitions


TASK_KEY_KINDS = (
    "task",
    "units",
    "acks",
    "nodes",
    "leases",
    "expiry",
    "conflicts",
    "tasks",
    "seq",
    "spans",
    "order",
    "returned",
    "kept",
    "done",
    "events",
    "cleaned",
    "pending",
    "owned",
    "groups",
    "answers",
)
"""Kinds of the keys a task function may touch (besides the bitmaps ``done<k>``), in the order
of :meth:`Partition.task_keys`."""
_PER_TASK = frozenset(
    {"task", "units", "acks", "nodes", "spans", "order", "returned", "kept", "done", "cleaned"}
    | {"pending", "owned", "groups", "answers"}
)


@dataclass(frozen=True)
class Partition:
    """One partition of a namespace; formats the keys of the scripts that run on it."""

    prefix: str
    namespace: str
    index: int

    @property
    def base(self) -> str:
        """The hash-tagged start shared by every key of this partition."""
        return f"{{{self.prefix}:{self.namespace}:{self.index}}}:"

    def task_key(self, task_id: str) -> str:
        """The task hash: the one key a task function is called with; it derives the others
        from it (``lua/include/keys.lua``)."""
        return f"{self.base}task:{task_id}"

    def task_keys(self, task_id: str) -> list[str]:
        """Every key a task function may touch, in the order of ``TASK_KEY_KINDS``."""
        b = self.base
        return [
            f"{b}{kind}:{task_id}" if kind in _PER_TASK else f"{b}{kind}" for kind in TASK_KEY_KINDS
        ]

    def bitmap_key(self, task_id: str, k: int) -> str:
        """Completion bitmap ``k`` of a range task (bit i: unit k * 2**20 + i); the functions
        derive these names from the ``done`` key."""
        return f"{self.base}done{k}:{task_id}"

    def lease_index_key(self) -> str:
        """The partition's lease index (zset "<task>\\n<unit>" -> lease deadline, server ms):
        the key that heartbeat, release and sweep are called with. The sweep answers how long
        until its earliest deadline, so that the sweeper wakes when the first lease runs out."""
        return f"{self.base}leases"

    def index_key(self) -> str:
        """The partition's task index (zset of task ids): the key ``list_tasks`` reads."""
        return f"{self.base}tasks"

    def events_key(self) -> str:
        """The partition's event stream (capped near 1 000 entries), which the scripts write
        and schedulers read."""
        return f"{self.base}events"


def queues_key(prefix: str) -> str:
    """The queue registry hash: queue -> partition count, fixed at the queue's first job."""
    return f"{prefix}:queues"


QUEUE_KEY_KINDS = (
    "job:<id>",
    "done:<id>",
    "lanes",
    "ready:<priority>",
    "due:<priority>",
    "scheduled",
    "running",
    "held:<node>",
    "nodes",
    "seq",
    "waiting",
    "dead",
    "wake",
    "conf",
    "answers",
    "req:<request id>",
    "sweeping",
)
"""Kinds of the keys of a queue partition (docs/jobs.md); ``lua/include/jobs.lua`` derives
them from the one key a job function is called with."""


@dataclass(frozen=True)
class QueuePartition:
    """One partition of a job queue, ``{<prefix>:q:<queue>:<p>}``; a job of id ``j`` lives in
    partition ``crc32(j) mod P``. The ``q`` keeps queue keys apart from the keys of a
    namespace of the same name (a namespace tag holds two colons, a queue tag three)::

        {<prefix>:q:<queue>:<p>}:job:<id>        hash    the job (fields: docs/jobs.md)
        {<prefix>:q:<queue>:<p>}:done:<id>       list    a marker pushed when an awaited job
                                                         ends; result() blocks on it
        {<prefix>:q:<queue>:<p>}:lanes           zset    non-empty lanes -> rank
        {<prefix>:q:<queue>:<p>}:ready:<prio>    list    ready jobs of a priority, FIFO
        {<prefix>:q:<queue>:<p>}:due:<prio>      zset    ready jobs with a deadline -> deadline
        {<prefix>:q:<queue>:<p>}:scheduled       zset    delayed and backing-off jobs -> due ms
        {<prefix>:q:<queue>:<p>}:running         hash    claimed job -> "<token> <node> <start>
                                                         <result ttl>"
        {<prefix>:q:<queue>:<p>}:held:<node>     set     the jobs a node holds claims on
        {<prefix>:q:<queue>:<p>}:nodes           zset    node -> when its lease on its claims
                                                         here ends (ms)
        {<prefix>:q:<queue>:<p>}:seq             string  the token counter of claims
        {<prefix>:q:<queue>:<p>}:waiting         set     jobs a caller waits for (result())
        {<prefix>:q:<queue>:<p>}:dead            zset    dead-letter set: job -> failed at ms
        {<prefix>:q:<queue>:<p>}:wake            list    the wake marker (at most one element)
        {<prefix>:q:<queue>:<p>}:conf            hash    queue options (aging)
        {<prefix>:q:<queue>:<p>}:answers         hash    claimer -> its last claim's answer
        {<prefix>:q:<queue>:<p>}:req:<rid>       string  an enqueue call's request id, for a
                                                         minute: its retry looks jobs up
        {<prefix>:q:<queue>:<p>}:sweeping        string  the sweep lock
    """

    prefix: str
    queue: str
    index: int

    @property
    def base(self) -> str:
        """The hash-tagged start shared by every key of this partition."""
        return f"{{{self.prefix}:q:{self.queue}:{self.index}}}:"

    def lanes_key(self) -> str:
        """The key that every partition-wide job function is called with."""
        return f"{self.base}lanes"

    def job_key(self, job_id: str) -> str:
        """A job's hash: the key that every one-job function is called with."""
        return f"{self.base}job:{job_id}"

    def done_key(self, job_id: str) -> str:
        """The list an awaited job's end is pushed to; ``Job.result`` blocks on it."""
        return f"{self.base}done:{job_id}"

    def wake_key(self) -> str:
        """The wake marker idle workers block on (``BLPOP``)."""
        return f"{self.base}wake"

    def running_key(self) -> str:
        """The claims of running jobs (job id -> claim); a burst worker reads it to know
        that none runs."""
        return f"{self.base}running"
