"""Server URLs: ``redis://``, ``rediss://`` (TLS) and ``unix://`` as redis-py reads them, plus
``?cluster=1`` for a Redis Cluster (any node's address will do)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InvalidArgument

SCHEMES = ("redis", "rediss", "unix")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse(url: object) -> tuple[str, bool]:
    """The URL for redis-py without dtaskq's own ``cluster`` parameter, and whether it names a
    cluster. Raises ``InvalidArgument`` for anything that is not a server URL."""
    if not isinstance(url, str):
        raise InvalidArgument(f"a server URL must be text, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading it checks that the port is a number
    except ValueError as exc:
        raise InvalidArgument(f"not a server URL: {url!r} ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise InvalidArgument(
            f"not a server URL: {url!r}; expected redis://host:port/db, rediss:// or unix://"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise InvalidArgument(f"not a server URL: {url!r} names no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [value.lower() for name, value in query if name == "cluster"]
    if any(flag not in _TRUE + _FALSE for flag in flags):
        raise InvalidArgument(f"cluster= takes 1 or 0 in {url!r}")
    rest = urlencode([(name, value) for name, value in query if name != "cluster"])
    return urlunsplit(parts._replace(query=rest)), bool(flags) and flags[-1] in _TRUE


def connection_args(url: object, connect_timeout: float | None) -> tuple[str, bool, dict[str, Any]]:
    """What ``from_url`` passes to redis-py: the URL, whether it is a cluster's, and the
    connection options dtaskq adds (a connect timeout, unless the URL sets one)."""
    plain, cluster = parse(url)
    kwargs: dict[str, Any] = {}
    if connect_timeout is not None:
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)):
            raise InvalidArgument(f"connect_timeout must be seconds, got {connect_timeout!r}")
        if not connect_timeout > 0:
            raise InvalidArgument(f"connect_timeout must be above 0, got {connect_timeout!r}")
        if "socket_connect_timeout" not in plain:
            kwargs["socket_connect_timeout"] = float(connect_timeout)
    return plain, cluster, kwargs
