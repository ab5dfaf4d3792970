"""What the sync and async clients share: function calls as values, partition routing, request
ids, error classification and the retry plan. Only the I/O differs between the two clients."""

from __future__ import annotations

import itertools
import os
import random
import secrets
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypedDict, TypeVar

import redis.exceptions as rex

from . import keys, validate
from .errors import (
    ConfigurationError,
    DtaskqError,
    InvalidArgument,
    ServerError,
    TransientError,
    from_script_error,
)
from .scripts import LIBRARY, Function, function

T = TypeVar("T")

Arg = str | bytes | int | float


class Call:
    """One function call; ``context`` fills the fields of an exception it raises."""

    __slots__ = ("args", "context", "function", "keys")

    def __init__(
        self,
        fn: Function,
        call_keys: list[str],
        args: list[Arg],
        context: dict[str, Any] | None = None,
    ) -> None:
        if len(call_keys) != fn.num_keys:
            raise RuntimeError(f"{fn.name} takes {fn.num_keys} keys, got {len(call_keys)}")
        self.function = fn
        self.keys = call_keys
        self.args = args
        self.context = context or {}

    def command(self) -> tuple[Arg, ...]:
        """The command that runs this call."""
        fn = self.function
        verb = "FCALL_RO" if fn.read_only else "FCALL"
        return (verb, fn.server_name, len(self.keys), *self.keys, *self.args)


Steps = Generator[Call | list[Call], Any, T]
"""An operation: yields the calls it needs, receives their replies, returns its result. A
yielded list of calls is sent at once (pipelined) and answered by the list of their replies;
each of them must be safe to send again whole (an enqueue of ids that exist is a no-op)."""

_REGISTER = function("register_namespace")


class Router:
    """Finds the partition of a task. A namespace's partition count is fixed by its first
    ``add_task`` and cached here; reads never register a namespace. ``claimer`` names who
    makes a call (see :func:`claimer_request_id`)."""

    def __init__(
        self,
        prefix: str,
        partitions: Mapping[str, int] | None = None,
        claimer: Callable[[], int] = threading.get_ident,
    ) -> None:
        self.prefix = validate.namespace(prefix)
        self.claimer = claimer
        if partitions is None:
            partitions = {}
        if not isinstance(partitions, Mapping):
            raise InvalidArgument("partitions must be a mapping of namespace -> partition count")
        self._wanted = {
            validate.namespace(ns): validate.integer(n, "partitions", 1, 1024)
            for ns, n in partitions.items()
        }
        self._known: dict[str, list[keys.Partition]] = {}
        self._queues: dict[str, list[keys.QueuePartition]] = {}

    def wanted(self, namespace: str) -> int:
        """The partition count this client gives a namespace at its first ``add_task``."""
        return self._wanted.get(namespace, 1)

    def partition_count(self, namespace: str) -> Steps[int]:
        """The namespace's partition count; 0 for a namespace that has never had a task."""
        known = self._known.get(namespace)
        if known is not None:
            return len(known)
        return (yield from self._registry(namespace, 0))

    def register(self, namespace: str) -> Steps[int]:
        """Fixes the namespace's partition count unless it has one (always asking the server:
        one that lost its data lost its registry too); returns the count."""
        return (yield from self._registry(namespace, self.wanted(namespace)))

    def _registry(self, namespace: str, wanted: int) -> Steps[int]:
        call = Call(
            _REGISTER,
            [keys.namespaces_key(self.prefix)],
            [namespace, wanted],
            {"namespace": namespace},
        )
        count = int((yield call))
        if count and len(self._known.get(namespace, ())) != count:
            self._known[namespace] = [
                keys.Partition(self.prefix, namespace, i) for i in range(count)
            ]
        return count

    def queue_partitions(
        self, queue: str, register: bool = True
    ) -> Steps[list[keys.QueuePartition]]:
        """Every partition of a job queue. ``register`` fixes the queue's partition count at
        its first use (as ``register`` does for a namespace); without it a queue that never
        had a job has none. Known counts are cached: enqueueing asks the server once."""
        known = self._queues.get(queue)
        if known is None:
            call = Call(
                _REGISTER,
                [keys.queues_key(self.prefix)],
                [queue, self.wanted(queue) if register else 0],
                {"namespace": queue},
            )
            count = int((yield call))
            if not count:
                return []
            known = self._queues[queue] = [
                keys.QueuePartition(self.prefix, queue, i) for i in range(count)
            ]
        return known

    def queue_partition(
        self, queue: str, job_id: str, register: bool = True
    ) -> Steps[keys.QueuePartition | None]:
        """The partition holding job ``job_id``; None for a queue that never had a job."""
        parts = self._queues.get(queue)
        if parts is None:
            parts = yield from self.queue_partitions(queue, register)
            if not parts:
                return None
        return parts[keys.partition_of(job_id, len(parts))]

    def partitions(self, namespace: str) -> Steps[list[keys.Partition]]:
        """Every partition of the namespace; none before its first task."""
        yield from self.partition_count(namespace)
        return self._known.get(namespace, [])

    def partition(self, namespace: str, task_id: str) -> Steps[keys.Partition | None]:
        """The partition holding ``task_id``; None when the namespace never had a task."""
        parts = self._known.get(namespace)
        if parts is None:
            parts = yield from self.partitions(namespace)
            if not parts:
                return None
        return parts[keys.partition_of(task_id, len(parts))]


# -- request ids ----------------------------------------------------------------------------

_process = secrets.token_hex(5)
_counter = itertools.count()


def _new_process() -> None:
    """A forked child must not reuse its parent's request ids."""
    global _process, _counter
    _process = secrets.token_hex(5)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_new_process)


def request_id() -> str:
    """An id for one call, unique across processes and calls; its retries resend the same
    ARGV, so a function that stored it can tell its own retry from another call."""
    return f"{_process}{next(_counter):x}"


def claimer_request_id(claimer: int) -> str:
    """A request id that also names its claimer, ``<claimer>/<n>``: a thread or an asyncio
    task of this process. Claim functions keep one answer per claimer, so that a claimer's
    retry gets its own units back whatever its siblings claimed meanwhile."""
    return f"{_process}.{claimer:x}/{next(_counter):x}"


# -- errors and retries ------------------------------------------------------------------------

_TRANSIENT_REPLIES = ("BUSY", "TRYAGAIN", "LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN")
_UNSAFE_CONNECTION = ("certificate verify failed", "SSL", "WRONGPASS", "NOAUTH")
_MISSING_FUNCTION = "Function not found"
MAX_LIBRARY_LOADS = 2
"""Loads of the library one call may trigger (a FUNCTION FLUSH racing the first load)."""


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry may cure: lost connections, timeouts, a busy or loading
    server, failover. Not for a rejected password, permission or certificate."""
    if isinstance(exc, (rex.AuthenticationError, rex.AuthorizationError)):
        return False
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        return not any(marker in str(exc) for marker in _UNSAFE_CONNECTION)
    if isinstance(exc, (rex.ClusterDownError, rex.TryAgainError, rex.SlotNotCoveredError)):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def is_missing_library(exc: BaseException) -> bool:
    """True when the server does not have this version's function library (a restart without
    persistence, FUNCTION FLUSH, a new node): load it and call again."""
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_MISSING_FUNCTION)


def translate(exc: BaseException, context: Mapping[str, Any], what: str) -> DtaskqError:
    """The dtaskq exception for an error a server call raised; nothing else leaves dtaskq."""
    if isinstance(exc, DtaskqError):
        return exc
    if isinstance(exc, rex.ResponseError):
        mapped = from_script_error(str(exc), dict(context))
        if mapped is not None:
            return mapped
    if is_transient(exc):
        return TransientError(f"{what}: {exc}", **context)
    if isinstance(exc, rex.AskError):  # MovedError too: a cluster node used as one server
        return ConfigurationError(
            f"{what}: the server is a Redis Cluster node ({exc}); connect with a cluster "
            "client (a URL with ?cluster=1, or a RedisCluster instance)",
            **context,
        )
    if isinstance(exc, rex.NoPermissionError):
        return ConfigurationError(f"{what}: the server refused a permission: {exc}", **context)
    if isinstance(exc, (rex.ConnectionError, rex.RedisClusterException)):
        return ConfigurationError(f"{what}: {exc}", **context)
    return ServerError(f"{what}: {type(exc).__name__}: {exc}", **context)


def raise_first_error(calls: list[Call], replies: list[Any]) -> list[Any]:
    """The replies of a pipeline of calls; raises the first error among them (a script's
    rejection translated for its call, the others as the retry plan sees them)."""
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            if is_transient(reply) or is_missing_library(reply):
                raise reply
            raise translate(reply, call.context, call.function.name) from reply
    return replies


def library_refused(exc: BaseException) -> ConfigurationError:
    """The error for a server on which this client may not load its function library."""
    return ConfigurationError(
        f"the function library {LIBRARY.name} is not loaded and this user may not load it "
        f"({exc}); have an administrator run 'dtaskq library load --url URL' once per server "
        "version of dtaskq, after which the application needs only FCALL and FCALL_RO"
    )


def connect_cluster(make: Callable[..., T], url: str, kwargs: dict[str, Any]) -> T:
    """A redis-py cluster client, which reads the cluster's layout as it is made: a cluster
    that cannot be reached is a ``TransientError``, any other failure a dtaskq error too."""
    try:
        return make(url, **kwargs)
    except (rex.RedisError, rex.RedisClusterException) as exc:
        # redis-py wraps the node's own error (a refused password, say) in its own.
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        if cause is exc and "cannot be connected" in str(exc):
            raise TransientError(f"connect: {exc}") from exc
        raise translate(cause, {}, "connect") from cause


class Retries:
    """The recovery plan of one call after its first try failed: load the library when the
    server lacks it, retry transient errors with exponential backoff and jitter (the first
    retry at once: a pooled connection the server dropped is the common case), else raise.

    Safe because every mutating function is idempotent under retry (docs/rules.md)."""

    __slots__ = ("_attempts", "_loads", "_tries")

    def __init__(self, attempts: int) -> None:
        self._attempts = attempts
        self._tries = 1
        self._loads = 0

    def after(self, exc: BaseException, what: str, context: Mapping[str, Any]) -> float | None:
        """What to do after ``exc``: None to load the library and call again, else the
        seconds to wait before the next try; raises when no try is left."""
        if is_missing_library(exc) and self._loads < MAX_LIBRARY_LOADS:
            self._loads += 1
            return None
        if is_transient(exc) and self._tries < self._attempts:
            self._tries += 1
            if self._tries == 2:
                return 0.0
            return min(1.0, 0.02 * 2.0 ** (self._tries - 2)) + random.uniform(0, 0.02)
        if isinstance(exc, DtaskqError):
            raise exc
        raise translate(exc, context, what) from exc


DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class ClientOptions(TypedDict, total=False):
    """Options of ``Client`` and ``AsyncClient``, with their defaults."""

    prefix: str
    """"dtq". Starts every key; deployments sharing a server use different prefixes."""
    partitions: Mapping[str, int]
    """{}. Partition counts of namespaces and job queues at their first use (default 1
    each); a name sets the count of the namespace and of the queue it names."""
    max_payload_bytes: int
    """16 MiB. The largest task payload accepted."""
    retry_attempts: int
    """5. Tries of one call on transient errors before ``TransientError``."""


class ClientCore:
    """What both clients hold besides their connection: routing, limits and retry policy."""

    def __init__(
        self, connection: Any, options: Mapping[str, Any], claimer: Callable[[], int]
    ) -> None:
        unknown = set(options) - set(ClientOptions.__annotations__)
        if unknown:
            raise InvalidArgument(f"unknown client options: {', '.join(sorted(unknown))}")
        encoder = getattr(connection, "get_encoder", None)
        if encoder is None:
            raise InvalidArgument(
                "expected a redis-py client (Redis or RedisCluster, sync or asyncio), "
                f"got {type(connection).__name__}"
            )
        if encoder().decode_responses:
            raise InvalidArgument("dtaskq needs a Redis client with decode_responses=False")
        self.router = Router(
            options.get("prefix", keys.DEFAULT_PREFIX), options.get("partitions"), claimer
        )
        self.max_payload = validate.integer(
            options.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD), "max_payload_bytes", 0
        )
        self.attempts = validate.integer(options.get("retry_attempts", 5), "retry_attempts", 1, 100)
