"""What the sync and async clients share: script calls as values, partition routing,
transient-error classification and the retry policy. Only the I/O differs between them."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import redis.exceptions as rex
import tenacity

from . import keys, validate
from .errors import DtaskqError, InvalidArgument, TransientError, from_script_error
from .scripts import Script, script

T = TypeVar("T")

Arg = str | bytes | int | float


@dataclass(frozen=True)
class Call:
    """One script call; ``context`` fills the fields of an exception it raises."""

    script: Script
    keys: list[str]
    args: list[Arg]
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.keys) != self.script.num_keys:
            raise RuntimeError(
                f"{self.script.name} takes {self.script.num_keys} keys, got {len(self.keys)}"
            )


Steps = Generator[Call, Any, T]
"""An operation: yields the calls it needs, receives their replies, returns its result."""

_REGISTER = script("register_namespace")


class Router:
    """Finds the partition of a task. A namespace's partition count is fixed by its first
    ``add_task`` and cached here; reads never register a namespace."""

    def __init__(self, prefix: str, partitions: Mapping[str, int] | None = None) -> None:
        self.prefix = validate.namespace(prefix)
        self._wanted = {
            validate.namespace(ns): validate.integer(n, "partitions", 1, 1024)
            for ns, n in (partitions or {}).items()
        }
        self._known: dict[str, int] = {}

    def wanted(self, namespace: str) -> int:
        """The partition count this client gives a namespace at its first ``add_task``."""
        return self._wanted.get(namespace, 1)

    def partition_count(self, namespace: str, *, register: bool = False) -> Steps[int]:
        """The namespace's partition count; 0 for a namespace that has never had a task,
        unless ``register`` fixes it now."""
        count = self._known.get(namespace)
        if count is None:
            wanted = self.wanted(namespace) if register else 0
            call = Call(
                _REGISTER,
                [keys.namespaces_key(self.prefix)],
                [namespace, wanted],
                {"namespace": namespace},
            )
            count = int((yield call))
            if count:
                self._known[namespace] = count
        return count

    def partition(self, namespace: str, task_id: str) -> Steps[keys.Partition | None]:
        """The partition holding ``task_id``; None when the namespace never had a task."""
        count = yield from self.partition_count(namespace)
        if not count:
            return None
        return keys.Partition(self.prefix, namespace, keys.partition_of(task_id, count))


_TRANSIENT_REPLIES = ("BUSY", "TRYAGAIN", "LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN")


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry may cure: lost connections, timeouts, a busy or loading
    server, failover."""
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def retry_policy(retries: int) -> dict[str, Any]:
    """Tenacity arguments for the retries after a first try failed with a transient error:
    the first retry at once (a pooled connection the server dropped is the common case),
    later ones after exponential backoff with jitter.

    Safe because every mutating script is idempotent under retry.
    """
    return {
        "stop": tenacity.stop_after_attempt(retries),
        "wait": tenacity.wait_exponential(multiplier=0.02, max=1.0) + tenacity.wait_random(0, 0.02),
        "retry": tenacity.retry_if_exception(is_transient),
        "reraise": True,
    }


def translate(exc: Exception, call: Call) -> Exception:
    """The dtaskq exception for an error a script call raised (the error itself if none fits)."""
    if isinstance(exc, DtaskqError):
        return exc
    if isinstance(exc, rex.ResponseError):
        mapped = from_script_error(str(exc), call.context)
        if mapped is not None:
            return mapped
    if is_transient(exc):
        return TransientError(f"{call.script.name}: {exc}", **call.context)
    return exc


DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class ClientOptions(TypedDict, total=False):
    """Options of ``Client`` and ``AsyncClient``, with their defaults."""

    prefix: str
    """"dtq". Starts every key; deployments sharing a server use different prefixes."""
    partitions: Mapping[str, int]
    """{}. Partition counts of namespaces at their first use (default 1 each)."""
    max_payload_bytes: int
    """16 MiB. The largest task payload accepted."""
    retry_attempts: int
    """5. Tries of one script call on transient errors before ``TransientError``."""


class ClientCore:
    """What both clients hold besides their connection: routing, limits and retry policy."""

    def __init__(self, connection_kwargs: Mapping[str, Any], options: ClientOptions) -> None:
        unknown = set(options) - set(ClientOptions.__annotations__)
        if unknown:
            raise InvalidArgument(f"unknown client options: {', '.join(sorted(unknown))}")
        if connection_kwargs.get("decode_responses"):
            raise InvalidArgument("dtaskq needs a Redis client with decode_responses=False")
        self.router = Router(options.get("prefix", keys.DEFAULT_PREFIX), options.get("partitions"))
        self.max_payload = validate.integer(
            options.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD), "max_payload_bytes", 0
        )
        attempts = validate.integer(options.get("retry_attempts", 5), "retry_attempts", 1, 100)
        # The first try runs outside tenacity: its machinery costs more than the call itself.
        self.retry = retry_policy(attempts - 1) if attempts > 1 else None
