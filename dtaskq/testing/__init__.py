"""Testing support for code that uses dtaskq's jobs (docs/testing.md).

- :func:`run_burst` runs a real worker on a server until its queues are drained, and says
  what it did (:class:`BurstResult`);
- :class:`EagerClient` and :class:`AsyncEagerClient` run jobs in-process when they are
  enqueued, with no server;
- the pytest plugin :mod:`dtaskq.testing.plugin` (registered as ``dtaskq``) offers the
  fixtures ``dtaskq_server``, ``dtaskq_client``, ``dtaskq_burst`` and ``dtaskq_eager``.

The names load on first use, so that the plugin, which pytest imports in every run, does
not import the worker runtime.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .burst import BurstResult, run_burst
    from .eager import AsyncEagerClient, EagerClient

__all__ = ["AsyncEagerClient", "BurstResult", "EagerClient", "run_burst"]

_HOMES = {
    "AsyncEagerClient": "eager",
    "BurstResult": "burst",
    "EagerClient": "eager",
    "run_burst": "burst",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
