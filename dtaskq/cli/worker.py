"""``dtaskq worker``: serves namespaces on this node through a provider."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import validate
from ..errors import InvalidArgument
from .args import (
    CommandError,
    add_connect_timeout,
    add_url,
    at_least,
    checked,
    url_of,
)

if TYPE_CHECKING:
    from .args import Commands

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load_factory(spec: str) -> Callable[[str], Any]:
    """The provider factory named ``module:attribute``.

    Raises :class:`CommandError` when ``spec`` is malformed, its module does not exist or
    its attribute is not callable. An error raised while the module itself runs (say, it
    imports a package that is missing) propagates with its traceback."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"--provider must be MODULE:FACTORY, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(f"{missing}."):
            raise
        raise CommandError(f"--provider {spec}: no module named {missing!r}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"--provider {spec}: {module_name} has no callable {attribute!r}")
    return factory  # type: ignore[no-any-return]


def _search_current_directory() -> None:
    """Lets ``--provider`` name modules of the current directory, as ``python -m`` does (the
    ``dtaskq`` script, unlike ``python -m dtaskq``, does not put it on ``sys.path``)."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def run(args: argparse.Namespace) -> int:
    """Runs the worker until a signal stops it; returns its exit status."""
    from ..client import Client
    from ..worker import Worker, default_node_id
    from ..worker.logs import configure
    from .connect import reach

    url = url_of(args)
    _search_current_directory()
    factory = load_factory(args.provider)
    node = args.node_id or default_node_id()
    # The first call also loads the function library when the server lacks it and this user
    # may: a user who may not is told so now rather than at the first claim.
    client, _ = reach(url, args.connect_timeout, Client.ping, prefix=args.prefix)
    with client:
        configure(args.log_level, node)
        providers = {namespace: factory(namespace) for namespace in args.namespace}
        try:
            worker = Worker(
                client,
                providers,
                node_id=node,
                concurrency=args.concurrency,
                lease_ms=args.lease_ms,
                grace_ms=args.grace_ms,
            )
        except InvalidArgument as exc:
            raise CommandError(exc.message) from None
        return worker.run()


def add_parser(commands: Commands) -> None:
    """Adds ``worker`` to the subcommands ``commands`` (argparse's subparsers action)."""
    worker = commands.add_parser(
        "worker",
        help="serve namespaces on this node",
        description="Runs tasks of the given namespaces through a provider until SIGTERM or "
        "SIGINT; then running units get --grace-ms to finish and the rest are released to "
        "other nodes. A second signal exits at once. The server must answer within "
        "--connect-timeout at start-up; later outages are ridden out.",
    )
    add_url(worker)
    worker.add_argument(
        "--namespace",
        action="append",
        required=True,
        type=checked(validate.namespace),
        help="a namespace to serve (repeatable)",
    )
    worker.add_argument(
        "--provider",
        required=True,
        metavar="MODULE:FACTORY",
        help="a callable taking a namespace and returning its provider; MODULE may be in "
        "the current directory",
    )
    worker.add_argument(
        "--prefix",
        default="dtq",
        type=checked(validate.namespace),
        help="key prefix of the deployment (dtq)",
    )
    worker.add_argument(
        "--node-id",
        type=checked(lambda text: validate.ident(text, "node id")),
        help="this node's id: the same across restarts of this host, unique among live "
        "workers, since sticky units and barrier acks wait for their node to come back "
        "(default: the host name; pin one per worker when several run on one host)",
    )
    worker.add_argument("--concurrency", type=at_least(1), default=8, help="units run at once (8)")
    worker.add_argument(
        "--lease-ms",
        type=at_least(1),
        default=30_000,
        help="longest lease the heartbeats plan for: each claim is renewed every third of "
        "min(this, the task's lease_ms) (30000)",
    )
    worker.add_argument(
        "--grace-ms",
        type=at_least(0),
        default=30_000,
        help="time running units get on SIGTERM (30000)",
    )
    add_connect_timeout(worker, "the worker")
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=_LOG_LEVELS,
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (INFO)",
    )
    worker.set_defaults(handler=run, prog=worker.prog)
