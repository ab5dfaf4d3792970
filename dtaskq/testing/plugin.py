"""The pytest plugin of dtaskq (docs/testing.md), registered as ``dtaskq`` through the
``pytest11`` entry point: fixtures for testing code that uses dtaskq's jobs.

pytest imports this module in every run of every project installed next to dtaskq, so it
loads no more than ``import dtaskq`` does (the client API, not the worker runtime): each
fixture imports what it uses when first used.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dtaskq import Client
    from dtaskq.testing.burst import BurstResult
    from dtaskq.testing.eager import EagerClient

PREFIX = "dtaskq-test-"
"""How the key prefix of each ``dtaskq_client`` starts; a random suffix follows."""


@pytest.fixture(scope="session")
def dtaskq_server() -> Iterator[str]:
    """The URL of the server for the session's jobs: ``$DTASKQ_REDIS_URL`` when it is set
    (left as it is), else that of a server started for the session on a free loopback port
    (``redis-server`` from PATH, or the one of ``pip install 'dtaskq[server]'``)."""
    from dtaskq.server import redis_url_or_embedded

    with redis_url_or_embedded() as url:
        yield url


@pytest.fixture
def dtaskq_client(dtaskq_server: str) -> Iterator[Client]:
    """A :class:`dtaskq.Client` on ``dtaskq_server`` with a key prefix of its own, so that
    tests never see each other's jobs; the keys under that prefix are deleted after the
    test."""
    from dtaskq import Client

    prefix = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    with Client.from_url(dtaskq_server, prefix=prefix) as client:
        yield client
        _delete_keys(client, prefix)


@pytest.fixture
def dtaskq_burst(dtaskq_client: Client) -> Callable[..., BurstResult]:
    """``dtaskq_burst(registry, queues=None, *, timeout=30.0, ...)``: runs a burst worker on
    ``dtaskq_client`` until the queues are drained (:func:`dtaskq.testing.run_burst`, which
    takes the same arguments after the client) and returns its ``BurstResult``."""
    from dtaskq.testing.burst import run_burst

    return functools.partial(run_burst, dtaskq_client)


@pytest.fixture
def dtaskq_eager() -> type[EagerClient]:
    """``dtaskq_eager(registry, queues=None)``: a new :class:`dtaskq.testing.EagerClient`,
    which runs the jobs enqueued on it in-process, with no server."""
    from dtaskq.testing.eager import EagerClient

    return EagerClient


def _delete_keys(client: Client, prefix: str) -> None:
    # Every key starts with the prefix, or with the hash tag "{<prefix>:" (docs/keys.md).
    for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
        for key in client.redis.scan_iter(match=pattern, count=1000):
            client.redis.delete(key)
