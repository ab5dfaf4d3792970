"""The ``dtaskq`` command line: ``dtaskq demo`` and ``dtaskq worker``."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from .server import ENV_URL


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


def load_factory(spec: str) -> Callable[[str], Any]:
    """The provider factory named ``module:attribute``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"--provider must be module:factory, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise SystemExit(f"--provider {spec}: {attribute} is not a callable of {module_name}")
    return factory  # type: ignore[no-any-return]


def _worker(args: argparse.Namespace) -> int:
    from .client import Client
    from .worker import Worker, default_node_id
    from .worker.logs import configure

    url = args.url or os.environ.get(ENV_URL)
    if not url:
        raise SystemExit(f"dtaskq worker needs --url or ${ENV_URL}")
    node = args.node_id or default_node_id()
    configure(args.log_level, node)
    factory = load_factory(args.provider)
    with Client.from_url(url, prefix=args.prefix) as client:
        worker = Worker(
            client,
            {namespace: factory(namespace) for namespace in args.namespace},
            node_id=node,
            concurrency=args.concurrency,
            lease_ms=args.lease_ms,
            grace_ms=args.grace_ms,
        )
        return worker.run()


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    root = argparse.ArgumentParser(prog="dtaskq", description="A Redis-backed work queue.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run three worker processes on a range task and a task with groups",
        description="Starts three worker processes, runs a range task and a named-unit task "
        "with groups and an ack barrier, kills one worker mid-way and shows the others "
        f"finishing its units. Uses --url, else ${ENV_URL}, else an embedded server.",
    )
    demo.add_argument("--url", help="an existing server (redis://host:port/db)")
    demo.set_defaults(handler=_demo)

    worker = commands.add_parser(
        "worker",
        help="serve namespaces on this node",
        description="Runs tasks of the given namespaces through a provider until SIGTERM or "
        "SIGINT; then running units get --grace-ms to finish and the rest are released to "
        "other nodes. A second signal exits at once.",
    )
    worker.add_argument("--url", help=f"the server (redis://host:port/db); default ${ENV_URL}")
    worker.add_argument(
        "--namespace", action="append", required=True, help="a namespace to serve (repeatable)"
    )
    worker.add_argument(
        "--provider",
        required=True,
        metavar="MODULE:FACTORY",
        help="a callable taking a namespace and returning its provider",
    )
    worker.add_argument("--prefix", default="dtq", help="key prefix of the deployment (dtq)")
    worker.add_argument(
        "--node-id",
        help="this node's id: the same across restarts of this host, unique among live "
        "workers, since sticky units and barrier acks wait for their node to come back "
        "(default: the host name; pin one per worker when several run on one host)",
    )
    worker.add_argument("--concurrency", type=int, default=8, help="units run at once (8)")
    worker.add_argument(
        "--lease-ms",
        type=int,
        default=30_000,
        help="longest lease the heartbeats plan for: each claim is renewed every third of "
        "min(this, the task's lease_ms) (30000)",
    )
    worker.add_argument(
        "--grace-ms", type=int, default=30_000, help="time running units get on SIGTERM (30000)"
    )
    worker.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (INFO)")
    worker.set_defaults(handler=_worker)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command in ``argv`` (default: the process arguments); returns the exit code."""
    args = parser().parse_args(argv)
    code: int = args.handler(args)
    return code
