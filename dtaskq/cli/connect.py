"""Connecting at start-up: a client whose first call went through, tried again while the
server cannot be reached, for up to ``--connect-timeout``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from ..client import Client
from ..errors import ConfigurationError, DtaskqError, ServerError, TransientError
from .args import EXIT_UNREACHABLE, CommandError

T = TypeVar("T")

RETRY_S = 0.5
"""The pause between two attempts, and the shortest bound on one attempt to connect."""


def reach(
    url: str, timeout_s: float, first: Callable[[Client], T], **options: Any
) -> tuple[Client, T]:
    """A client for ``url`` (``options`` as :meth:`Client.from_url` takes them) and what
    ``first(client)`` answered. Tries again for up to ``timeout_s`` while the server cannot
    be reached; raises :class:`CommandError` when it stays unreachable (status 1), at once
    when it refuses the client (a password, a permission, TLS: status 2) and when it answers
    with an error (status 1)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = _open(url, max(timeout_s, RETRY_S), options)
            try:
                return client, first(client)
            except BaseException:
                client.close()
                raise
        except TransientError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandError(
                    f"cannot reach the server: {_detail(exc)} (tried for {timeout_s:g} s; "
                    "see --connect-timeout)",
                    EXIT_UNREACHABLE,
                ) from None
            time.sleep(min(RETRY_S, left))
        except ConfigurationError as exc:
            if isinstance(exc.__cause__, redis.ConnectionError):  # a password or TLS
                raise CommandError(f"the server refused the connection: {exc.__cause__}") from None
            raise CommandError(exc.message) from None
        except ServerError as exc:
            raise CommandError(exc.message, EXIT_UNREACHABLE) from None


def _open(url: str, connect_timeout: float, options: dict[str, Any]) -> Client:
    """A new client. The connect timeout bounds each attempt to connect, here and later: an
    unanswered connect would otherwise block for as long as the system lets it."""
    return Client.from_url(url, connect_timeout=connect_timeout, **options)


def _detail(exc: DtaskqError) -> str:
    """What redis-py said, without the name of the call the client adds to its errors."""
    return str(exc.__cause__ or exc)
