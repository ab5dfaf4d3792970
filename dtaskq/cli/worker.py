"""``dtaskq worker``: serves namespaces through a provider and job queues through their
handlers on this node."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import validate
from ..errors import InvalidArgument
from ..handlers import Handler, Registry
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


def _import(option: str, spec: str, module_name: str) -> ModuleType:
    """Imports ``module_name`` for ``option``; a missing module is a :class:`CommandError`,
    an error raised while the module itself runs propagates with its traceback."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(f"{missing}."):
            raise
        raise CommandError(f"{option} {spec}: no module named {missing!r}") from None


def load_factory(spec: str) -> Callable[[str], Any]:
    """The provider factory named ``module:attribute``.

    Raises :class:`CommandError` when ``spec`` is malformed, its module does not exist or
    its attribute is not callable. An error raised while the module itself runs (say, it
    imports a package that is missing) propagates with its traceback."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"--provider must be MODULE:FACTORY, got {spec!r}")
    module = _import("--provider", spec, module_name)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"--provider {spec}: {module_name} has no callable {attribute!r}")
    return factory  # type: ignore[no-any-return]


def load_handlers(specs: list[str]) -> Registry:
    """The handlers named by ``--handlers`` options: ``module:registry`` names a
    :class:`~dtaskq.Registry`; a bare ``module`` gives every registry and handler it holds.
    Raises :class:`CommandError` when one names nothing to serve or two share a name."""
    merged = Registry()
    for spec in specs:
        module_name, sep, attribute = spec.partition(":")
        if not module_name or (sep and not attribute):
            raise CommandError(f"--handlers must be MODULE or MODULE:REGISTRY, got {spec!r}")
        module = _import("--handlers", spec, module_name)
        if sep:
            found = getattr(module, attribute, None)
            if not isinstance(found, Registry):
                raise CommandError(
                    f"--handlers {spec}: {module_name}.{attribute} is not a Registry"
                )
            values: list[Any] = [found]
        else:
            values = list(vars(module).values())
        handlers = [h for v in values if isinstance(v, Registry) for h in v]
        handlers += [v for v in values if isinstance(v, Handler)]
        if not handlers:
            raise CommandError(f"--handlers {spec}: no handlers registered there")
        for handler in handlers:
            try:
                merged.add(handler)
            except InvalidArgument as exc:
                raise CommandError(f"--handlers {spec}: {exc.message}") from None
    return merged


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
    if bool(args.namespace) != bool(args.provider):
        raise CommandError("--namespace and --provider go together")
    if bool(args.queue) != bool(args.handlers):
        raise CommandError("--queue and --handlers go together")
    if not args.namespace and not args.queue:
        raise CommandError("serve --namespace with a --provider, or --queue with --handlers")
    factory = load_factory(args.provider) if args.provider else None
    registry = load_handlers(args.handlers) if args.handlers else None
    node = args.node_id or default_node_id()
    # The first call also loads the function library when the server lacks it and this user
    # may: a user who may not is told so now rather than at the first claim.
    client, _ = reach(url, args.connect_timeout, Client.ping, prefix=args.prefix)
    with client:
        configure(args.log_level, node)
        providers = {ns: factory(ns) for ns in args.namespace or []} if factory else {}
        try:
            worker = Worker(
                client,
                providers,
                handlers=registry,
                queues=args.queue,
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
        help="serve namespaces and job queues on this node",
        description="Runs tasks of the given namespaces through a provider, and jobs of the "
        "given queues through their handlers, until SIGTERM or SIGINT; then running units "
        "and jobs get --grace-ms to finish and the rest are released to other nodes. A "
        "second signal exits at once. The server must answer within --connect-timeout at "
        "start-up; later outages are ridden out.",
    )
    add_url(worker)
    worker.add_argument(
        "--namespace",
        action="append",
        type=checked(validate.namespace),
        help="a namespace to serve (repeatable; needs --provider)",
    )
    worker.add_argument(
        "--provider",
        metavar="MODULE:FACTORY",
        help="a callable taking a namespace and returning its provider; MODULE may be in "
        "the current directory",
    )
    worker.add_argument(
        "--queue",
        action="append",
        type=checked(validate.namespace),
        help="a job queue to serve (repeatable; needs --handlers)",
    )
    worker.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE[:REGISTRY]",
        help="job handlers: a module (every dtaskq.Registry and handler in it) or one "
        "Registry of a module (repeatable); MODULE may be in the current directory",
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
    worker.add_argument(
        "--concurrency",
        type=at_least(1),
        default=8,
        help="units run at once, and jobs run at once (8 each)",
    )
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
        help="time running units and jobs get on SIGTERM (30000)",
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
