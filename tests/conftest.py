"""Shared fixtures: a real server per session, and per-test names that never collide."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis
import redis.connection
from redis.cluster import RedisCluster
from support import Events, LossyConnection, is_cluster, raw_client, server_params
from worker_procs import Workers

import dtaskq
import dtaskq.urls
from dtaskq.cluster_server import EmbeddedCluster
from dtaskq.keys import Partition
from dtaskq.server import ENV_URL, EmbeddedServer, find_server_binaries


def _refuse_non_empty(url: str) -> None:
    with raw_client(url) as client:
        size = client.dbsize()
    if size:
        pytest.exit(
            f"refusing to run tests against a non-empty database: {url} holds {size} keys; "
            f"point {ENV_URL} at an empty database",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session", params=server_params())
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of an empty server for the session: ``$DTASKQ_REDIS_URL``, else one embedded
    server per installed binary, so every test that uses it runs once per server."""
    param: str | Path | tuple[str, Path] | None = request.param
    if isinstance(param, str):
        _refuse_non_empty(param)
        yield param
        return
    if isinstance(param, tuple):
        with EmbeddedCluster(param[1]) as started:
            yield f"{started.url}?cluster=1"
        return
    with EmbeddedServer(param) as server:
        _refuse_non_empty(server.url)
        yield server.url


@pytest.fixture
def single_server(server_url: str) -> str:
    """The session's server URL; skips the test on a cluster. For tests that reach past dtaskq
    into one server (a recording connection subclass, an ACL user, FUNCTION LIST replies):
    tests/test_cluster.py covers what they check on a cluster."""
    if is_cluster(server_url):
        pytest.skip("reaches into a single server's connection")
    return server_url


@pytest.fixture
def r(server_url: str) -> Iterator[redis.Redis]:
    """A raw redis-py client (bytes responses) on the session's server: a ``RedisCluster`` on
    a cluster."""
    client = raw_client(server_url)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return "t" + uuid4().hex[:12]


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses, so tests never see each other's keys."""
    return "dtq" + uuid4().hex[:8]


# --- dtaskq client fixtures go below this line. ---


@pytest.fixture
def client(server_url: str, prefix: str) -> Iterator[dtaskq.Client]:
    """A sync client with this test's own key prefix."""
    with dtaskq.Client.from_url(server_url, prefix=prefix) as c:
        yield c
        # Leave the server as empty as we found it, so a DTASKQ_REDIS_URL run can repeat.
        # Many keys at a time (a cluster client splits them by slot): a test may leave
        # a hundred thousand.
        found = list(c.redis.scan_iter(match=f"*{prefix}*", count=10_000))
        for start in range(0, len(found), 1000):
            c.redis.delete(*found[start : start + 1000])


@pytest.fixture
async def aclient(server_url: str, prefix: str) -> AsyncIterator[dtaskq.AsyncClient]:
    """An async client with this test's own key prefix (use in ``async def`` tests)."""
    async with dtaskq.AsyncClient.from_url(server_url, prefix=prefix) as c:
        yield c


@pytest.fixture
def events(r: redis.Redis, prefix: str, namespace: str) -> Events:
    """The event stream of partition 0 of the test's namespace (its only one, by default)."""
    return Events(r, Partition(prefix, namespace, 0).events_key())


@pytest.fixture
def state(r: redis.Redis, prefix: str) -> Callable[[], dict[bytes, object]]:
    """Reads every key under this test's prefix with its content: compare two reads to
    prove that a rejected call wrote nothing (no event either: streams are read in full)."""

    def read() -> dict[bytes, object]:
        found: dict[bytes, object] = {}
        for key in sorted(r.scan_iter(match=f"*{prefix}*", count=1000)):
            kind = r.type(key)
            if kind == b"hash":
                found[key] = r.hgetall(key)
            elif kind == b"zset":
                found[key] = r.zrange(key, 0, -1, withscores=True)
            elif kind == b"set":
                found[key] = sorted(r.smembers(key))
            elif kind == b"string":
                found[key] = r.get(key)
            elif kind == b"stream":
                found[key] = r.xrange(key)
            else:
                found[key] = kind
        return found

    return read


@pytest.fixture
def rejects(state: Callable[[], dict[bytes, object]]) -> Callable[..., Exception]:
    """``rejects(ErrorClass, fn, *args, **kwargs)``: calls ``fn`` expecting exactly that error
    class (not a subclass) and no change under the test's prefix; returns the exception."""

    def check(
        error: type[Exception], fn: Callable[..., object], *args: object, **kw: object
    ) -> Exception:
        before = state()
        with pytest.raises(error) as info:
            fn(*args, **kw)
        assert type(info.value) is error, f"raised {type(info.value).__name__}: {info.value}"
        assert state() == before, f"{fn.__name__} was rejected but changed state"
        return info.value

    return check


@pytest.fixture
def unchanged(state: Callable[[], dict[bytes, object]]) -> Callable[..., object]:
    """``unchanged(fn, *args, **kwargs)``: calls ``fn``, which must succeed and change nothing
    under the test's prefix (identical retries, dropped acks); returns its result."""

    def check(fn: Callable[..., object], *args: object, **kw: object) -> object:
        before = state()
        result = fn(*args, **kw)
        assert state() == before, f"{fn.__name__} changed state"
        return result

    return check


@pytest.fixture
def lossy(server_url: str, prefix: str) -> Iterator[dtaskq.Client]:
    """A dtaskq client over LossyConnection; arm it with ``LossyConnection.armed = name``.
    Single servers only: a cluster client opens its own connections."""
    if is_cluster(server_url):
        pytest.skip("the lossy connection wraps a single server's pool")
    LossyConnection.armed = None
    LossyConnection.runs = {}
    url = redis.connection.parse_url(server_url)
    pool = redis.ConnectionPool(
        connection_class=LossyConnection, host=url["host"], port=url["port"], db=url.get("db", 0)
    )
    client = dtaskq.Client(redis.Redis(connection_pool=pool), prefix=prefix)
    yield client
    client.close()
    LossyConnection.armed = None


@pytest.fixture
def workers(server_url: str, prefix: str, namespace: str, r: redis.Redis) -> Iterator[Workers]:
    """Real ``dtaskq worker`` processes on the test's server and prefix, killed at the end."""
    procs = Workers(server_url, prefix, namespace, r)
    yield procs
    procs.close()


# --- Redis Cluster fixtures ---


def _cluster_params() -> list[object]:
    binaries = find_server_binaries()
    if not binaries:
        # EmbeddedCluster(None) then fails with the message that says what to install.
        return [pytest.param(None, id="no-cluster")]
    return [pytest.param(path, id=f"{kind}-cluster") for kind, path in binaries]


@pytest.fixture(scope="session", params=_cluster_params())
def cluster(request: pytest.FixtureRequest) -> Iterator[EmbeddedCluster]:
    """A started 3-primary Redis Cluster without replicas for the session, one per installed
    binary (never ``$DTASKQ_REDIS_URL``), so every test that uses it runs once per server.
    Tests share it: keep to keys of your own."""
    with EmbeddedCluster(request.param) as started:
        yield started


@pytest.fixture
def rc(cluster: EmbeddedCluster) -> Iterator[RedisCluster]:
    """A redis-py cluster client (bytes responses) on the session's cluster."""
    node = cluster.nodes[0]
    client = RedisCluster(host=node.host, port=node.port, decode_responses=False)
    yield client
    client.close()
