"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import redis.connection
from redis.cluster import RedisCluster

import dtaskq
import dtaskq.urls
from dtaskq.keys import TASK_KEY_KINDS, Partition
from dtaskq.scripts import LIBRARY
from dtaskq.server import ENV_URL, find_server_binaries


def server_params() -> list[Any]:
    """The servers the ``server_url`` fixture runs each test on: ``$DTASKQ_REDIS_URL``, else
    every installed binary as a single server and as a 3-primary cluster."""
    url = os.environ.get(ENV_URL)
    if url:
        return [pytest.param(url, id="external")]
    binaries = find_server_binaries()
    if not binaries:
        # EmbeddedServer(None) then fails with the message that says what to install,
        # rather than every server test being skipped for an empty parameter list.
        return [pytest.param(None, id="no-server")]
    # Each binary serves as a single server and as a 3-primary cluster.
    return [pytest.param(path, id=kind) for kind, path in binaries] + [
        pytest.param(("cluster", path), id=f"{kind}-cluster") for kind, path in binaries
    ]


one_server = pytest.mark.parametrize(
    "server_url", server_params()[:1], indirect=True, scope="session"
)
"""Runs a test on the first server of ``server_url`` only, not once per server kind: for
tests whose outcome cannot depend on the server (calls that the client rejects before they
reach it), and for large runs whose checks other tests make on every kind."""


def python_snippets(path: Path) -> list[str]:
    """The code of each ```python block of a Markdown file, padded with as many newlines as
    lines come before it, so that a traceback of the compiled snippet shows the file's
    lines."""
    text = path.read_text()
    return [
        "\n" * text.count("\n", 0, m.start(1)) + m.group(1)
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)
    ]


def is_cluster(url: str) -> bool:
    """True for the URL of a Redis Cluster (``?cluster=1``)."""
    return dtaskq.urls.parse(url)[1]


def raw_client(url: str) -> redis.Redis:
    """A redis-py client for ``url``, a ``RedisCluster`` for a cluster's."""
    plain, cluster = dtaskq.urls.parse(url)
    if cluster:
        return RedisCluster.from_url(plain)  # type: ignore[return-value]
    return redis.Redis.from_url(plain)


Rejects = Callable[..., Exception]
"""Type of the ``rejects`` fixture."""
Unchanged = Callable[..., Any]
"""Type of the ``unchanged`` fixture."""


Event = dict[str, str]
"""One entry of a partition's event stream, decoded."""


def ev(kind: str, ref: dtaskq.TaskRef, **fields: object) -> Event:
    """The event expected of ``ref``'s version, fields as the stream holds them (text)."""
    return {
        "kind": kind,
        "task": ref.task_id,
        "version": str(ref.version),
        **{k: str(v) for k, v in fields.items()},
    }


class Events:
    """Reads one partition's event stream; ``new()`` answers what was added since it was
    last called."""

    def __init__(self, r: redis.Redis, key: str) -> None:
        self.r = r
        self.key = key
        self.last = "-"

    def all(self) -> list[Event]:
        """Every entry the stream holds."""
        return [self._decode(fields) for _, fields in self.r.xrange(self.key)]

    def new(self) -> list[Event]:
        """The entries added since the last call (all of them at the first)."""
        start = "-" if self.last == "-" else f"({self.last}"
        entries = self.r.xrange(self.key, min=start)
        if entries:
            self.last = entries[-1][0].decode()
        return [self._decode(fields) for _, fields in entries]

    @staticmethod
    def _decode(fields: dict[bytes, bytes]) -> Event:
        return {k.decode(): v.decode() for k, v in fields.items()}


def unit_of(client: dtaskq.Client, ref: dtaskq.TaskRef, unit_id: str) -> dtaskq.Unit:
    """The current state of one unit of ``ref`` (which must be the task's current version)."""
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task.units[unit_id]


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Polls ``condition`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def server_time(r: redis.Redis) -> datetime:
    """The server's clock, which every deadline of dtaskq follows."""
    seconds, micros = r.time()
    return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)


def wait_for_leases_to_end(
    client: dtaskq.Client, r: redis.Redis, ref: dtaskq.TaskRef, unit_ids: list[str]
) -> None:
    """Waits until the server's clock is past the lease deadlines of ``unit_ids`` as they are
    now (rule 25: every call then treats those leases as ended)."""
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    deadlines = [task.units[u].lease_expires_at for u in unit_ids]
    assert all(d is not None for d in deadlines), "every unit should hold a lease"
    last = max(d for d in deadlines if d is not None)
    wait_until(lambda: server_time(r) > last, "the leases ran out")


def bitmaps(r: redis.Redis, prefix: str, ref: dtaskq.TaskRef) -> dict[int, str]:
    """The completion bitmaps of a range task in a 1-partition namespace: number k -> key."""
    part = Partition(prefix, ref.namespace, 0)
    done = part.task_keys(ref.task_id)[TASK_KEY_KINDS.index("done")]
    return {int(k): part.bitmap_key(ref.task_id, int(k)) for k in sorted(r.smembers(done))}


def completed_units(r: redis.Redis, prefix: str, ref: dtaskq.TaskRef) -> set[int]:
    """The units of a range task whose completion bit is set."""
    units: set[int] = set()
    for k, key in bitmaps(r, prefix, ref).items():
        for i, byte in enumerate(r.get(key) or b""):
            units.update(k * 2**20 + i * 8 + b for b in range(8) if byte & (0x80 >> b))
    return units


class LossyConnection(redis.connection.Connection):
    """A connection that can lose the reply to one function call: it reads the real reply from
    the socket, then raises ConnectionError as if the network had dropped it. It counts the
    function runs (replies other than "function not found"), per operation name."""

    armed: ClassVar[str | None] = None  # the operation whose next reply is lost
    runs: ClassVar[dict[str, int]] = {}
    _by_name: ClassVar[dict[str, str]] = {f.server_name: f.name for f in LIBRARY.functions.values()}

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        command = str(args[0]).upper()
        key = args[1] if command in ("FCALL", "FCALL_RO") and len(args) > 1 else None
        self._script = self._by_name.get(key) if isinstance(key, str) else None
        super().send_command(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        name, self._script = getattr(self, "_script", None), None
        try:
            reply = super().read_response(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            if name is not None and not str(exc).startswith("Function not found"):
                LossyConnection.runs[name] = LossyConnection.runs.get(name, 0) + 1  # rejected
            raise
        if name is not None:
            LossyConnection.runs[name] = LossyConnection.runs.get(name, 0) + 1
            if LossyConnection.armed == name:
                LossyConnection.armed = None
                self.disconnect()
                raise redis.exceptions.ConnectionError("reply lost (simulated)")
        return reply


def lose_next_reply(script: str) -> None:
    """Arms LossyConnection: the next reply to ``script`` is lost after the script ran."""
    LossyConnection.runs.pop(script, None)
    LossyConnection.armed = script
