"""The asyncio client's connection: how each call reaches the server, with the retries, the
library loading and the error translation that every call shares (the twin of
:mod:`dtaskq.connected`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

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


def _current_task_id() -> int:
    """Claims keep one answer per claimer: here, the asyncio task making the call."""
    return id(asyncio.current_task())


class AsyncConnected:
    """The I/O half of :class:`dtaskq.AsyncClient`: one ``redis.asyncio`` ``Redis`` or
    ``RedisCluster``, the client's routing and options, and one path for every server call."""

    def __init__(
        self, connection: redis.asyncio.Redis | RedisCluster, **options: Unpack[ClientOptions]
    ) -> None:
        self._core = ClientCore(connection, options, claimer=_current_task_id)
        self.redis = connection
        self._send: Callable[..., Any] = connection.execute_command

    async def _load(self) -> None:
        try:
            await self.redis.function_load(LIBRARY.source, replace=True)
        except redis.exceptions.NoPermissionError as exc:
            raise library_refused(exc) from exc

    async def _run(
        self, what: str, context: dict[str, Any], attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """``await attempt()``, retried and translated as every server call is."""
        try:
            return await attempt()
        except Exception as exc:
            return await self._recover(what, context, exc, attempt)

    async def _recover(
        self,
        what: str,
        context: dict[str, Any],
        failure: BaseException,
        attempt: Callable[[], Awaitable[T]],
    ) -> T:
        plan = Retries(self._core.attempts)
        while True:
            wait = plan.after(failure, what, context)
            try:
                if wait is None:
                    await self._load()
                elif wait:
                    await asyncio.sleep(wait)
                return await attempt()
            except Exception as exc:
                failure = exc

    async def _execute(self, call: Call) -> Any:
        command = call.command()
        try:
            return await self._send(*command)
        except Exception as exc:
            return await self._recover(
                call.function.name,
                call.context,
                exc,
                lambda: self._send(*command),
            )

    async def _execute_many(self, calls: list[Call]) -> list[Any]:
        async def attempt() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call.command())
            return raise_first_error(calls, await pipe.execute(raise_on_error=False))

        return await self._run(calls[0].function.name, calls[0].context, attempt)

    async def _drive(self, steps: Steps[T]) -> T:
        try:
            call = next(steps)
            while True:
                if isinstance(call, list):
                    call = steps.send(await self._execute_many(call))
                else:
                    call = steps.send(await self._execute(call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
