"""The synchronous client's connection: how each call reaches the server, with the retries,
the library loading and the error translation that every call shares, and the raw reads of
the event streams that the worker's event feed makes through the same path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

import redis
from redis.cluster import RedisCluster

from .calls import (
    Call,
    ClientCore,
    ClientOptions,
    Retries,
    Steps,
    library_refused,
    raise_first_error,
)
from .scripts import LIBRARY

T = TypeVar("T")


class Connected:
    """The I/O half of :class:`dtaskq.Client`: one ``redis.Redis`` or ``RedisCluster``, the
    client's routing and options, and one path for every server call."""

    def __init__(
        self, connection: redis.Redis | RedisCluster, **options: Unpack[ClientOptions]
    ) -> None:
        self._core = ClientCore(connection, options, claimer=threading.get_ident)
        self.redis = connection
        self._send: Callable[..., Any] = connection.execute_command
        if (
            isinstance(connection, redis.Redis)
            and type(connection).execute_command is redis.Redis.execute_command
            and connection.connection is None
        ):
            # redis-py's command path (retries, observability hooks) costs more than a call's
            # own work; ours retries and translates errors itself, so a plain pool connection
            # does. A subclass that overrides execute_command keeps it.
            self._pool = connection.connection_pool
            self._send = self._send_on_pooled_connection

    def _send_on_pooled_connection(self, *command: Any) -> Any:
        pool = self._pool
        connection: Any = pool.get_connection()
        try:
            connection.send_command(*command)
            return connection.read_response()
        finally:
            pool.release(connection)

    def close(self) -> None:
        """Closes the connection pool."""
        self.redis.close()

    @property
    def cluster(self) -> bool:
        """True when the connection is a Redis Cluster's."""
        return isinstance(self.redis, RedisCluster)

    def latest_event_id(self, stream: str) -> bytes:
        """The id of the newest entry of an event stream (``Partition.events_key()``), or
        ``b"0-0"`` when it has none: where a reader that wants only what comes next starts."""
        newest: Any = self._run(
            "latest_event_id", {}, lambda: self.redis.xrevrange(stream, count=1)
        )
        return newest[0][0] if newest else b"0-0"

    def read_events(
        self, positions: dict[str, bytes], block_ms: int, count: int = 1000
    ) -> list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """Waits up to ``block_ms`` for entries of event streams after the ids in
        ``positions`` (stream key -> id); returns them per stream, oldest first. On a cluster
        every stream of one call must live in one slot (docs/keys.md)."""
        streams: Any = dict(positions)
        read: Any = self._run(
            "read_events", {}, lambda: self.redis.xread(streams, count=count, block=block_ms)
        )
        return [(key.decode(), entries) for key, entries in read or []]

    def load_library(self) -> str:
        """Loads this version's function library on the server (every primary of a cluster);
        returns its name. Needs the right to run FUNCTION LOAD; clients load it themselves
        when they may, so this is for deployments whose application user may not."""
        self._run("load_library", {}, self._load)
        return LIBRARY.name

    def _load(self) -> None:
        try:
            self.redis.function_load(LIBRARY.source, replace=True)
        except redis.exceptions.NoPermissionError as exc:
            raise library_refused(exc) from exc

    def _run(self, what: str, context: dict[str, Any], attempt: Callable[[], T]) -> T:
        """``attempt()``, retried and translated as every server call is."""
        try:
            return attempt()
        except Exception as exc:
            return self._recover(what, context, exc, attempt)

    def _recover(
        self, what: str, context: dict[str, Any], failure: BaseException, attempt: Callable[[], T]
    ) -> T:
        plan = Retries(self._core.attempts)
        while True:
            wait = plan.after(failure, what, context)
            try:
                if wait is None:
                    self._load()
                elif wait:
                    time.sleep(wait)
                return attempt()
            except Exception as exc:
                failure = exc

    def _execute(self, call: Call) -> Any:
        command = call.command()
        try:
            return self._send(*command)
        except Exception as exc:
            return self._recover(
                call.function.name,
                call.context,
                exc,
                lambda: self._send(*command),
            )

    def _execute_many(self, calls: list[Call]) -> list[Any]:
        def attempt() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call.command())
            return raise_first_error(calls, pipe.execute(raise_on_error=False))

        return self._run(calls[0].function.name, calls[0].context, attempt)

    def _drive(self, steps: Steps[T]) -> T:
        try:
            call = next(steps)
            while True:
                if isinstance(call, list):
                    call = steps.send(self._execute_many(call))
                else:
                    call = steps.send(self._execute(call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
