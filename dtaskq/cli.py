"""The ``dtaskq`` command line: ``dtaskq demo`` and ``dtaskq worker``.

A mistake on the command line ends the command with one line on stderr and exit status 2;
a server that cannot be reached at start-up, with one line and status 1. Each subcommand
imports what it runs only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import redis
import redis.connection

from . import validate
from .errors import DtaskqError, InvalidArgument
from .server import ENV_URL

if TYPE_CHECKING:
    from .client import Client

EXIT_USAGE = 2
EXIT_UNREACHABLE = 1
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_CONNECT_RETRY_S = 0.5
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class CommandError(DtaskqError):
    """Ends a command with its message as one line on stderr and ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Reports a mistake in one line (argparse's default prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _redis_url(text: str) -> str:
    try:
        redis.connection.parse_url(text)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that runs one of :mod:`dtaskq.validate`'s checks."""

    def parse(text: str) -> str:
        try:
            check(text)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text

    return parse


def _at_least(low: float, kind: Callable[[str], float] = int) -> Callable[[str], Any]:
    """An argparse type for a number (``kind``) no less than ``low``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return parse


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


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


def _reach(client: Client, timeout_s: float) -> None:
    """Waits until the server answers a PING through ``client``'s connections, trying again
    for up to ``timeout_s`` while it cannot be reached. Raises :class:`CommandError` when it
    stays unreachable, or at once when it refuses the connection (say, a wrong password)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.redis.ping()
            return
        except redis.AuthenticationError as exc:
            raise CommandError(f"the server refused the connection: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandError(
                    f"cannot reach the server: {exc} (tried for {timeout_s:g} s; "
                    "see --connect-timeout)",
                    EXIT_UNREACHABLE,
                ) from None
            time.sleep(min(_CONNECT_RETRY_S, left))
        except redis.RedisError as exc:
            raise CommandError(f"the server refused the connection: {exc}") from None


def _worker(args: argparse.Namespace) -> int:
    from .client import Client
    from .worker import Worker, default_node_id
    from .worker.logs import configure

    url = args.url or os.environ.get(ENV_URL)
    if not url:
        raise CommandError(f"needs --url or ${ENV_URL}")
    try:
        _redis_url(url)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"${ENV_URL}: {exc}") from None
    _search_current_directory()
    factory = load_factory(args.provider)
    node = args.node_id or default_node_id()
    connect_timeout = max(args.connect_timeout, _CONNECT_RETRY_S)
    with Client.from_url(url, connect_timeout=connect_timeout, prefix=args.prefix) as client:
        _reach(client, args.connect_timeout)
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


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    root = _Parser(prog="dtaskq", description="A Redis-backed work queue.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run three worker processes on a range task and a task with groups",
        description="Starts three worker processes, runs a range task and a named-unit task "
        "with groups and an ack barrier, kills one worker mid-way and shows the others "
        f"finishing its units. Uses --url, else ${ENV_URL}, else an embedded server.",
    )
    demo.add_argument("--url", type=_redis_url, help="an existing server (redis://host:port/db)")
    demo.set_defaults(handler=_demo)

    worker = commands.add_parser(
        "worker",
        help="serve namespaces on this node",
        description="Runs tasks of the given namespaces through a provider until SIGTERM or "
        "SIGINT; then running units get --grace-ms to finish and the rest are released to "
        "other nodes. A second signal exits at once. The server must answer within "
        "--connect-timeout at start-up; later outages are ridden out.",
    )
    worker.add_argument(
        "--url", type=_redis_url, help=f"the server (redis://host:port/db); default ${ENV_URL}"
    )
    worker.add_argument(
        "--namespace",
        action="append",
        required=True,
        type=_checked(validate.namespace),
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
        type=_checked(validate.namespace),
        help="key prefix of the deployment (dtq)",
    )
    worker.add_argument(
        "--node-id",
        type=_checked(lambda text: validate.ident(text, "node id")),
        help="this node's id: the same across restarts of this host, unique among live "
        "workers, since sticky units and barrier acks wait for their node to come back "
        "(default: the host name; pin one per worker when several run on one host)",
    )
    worker.add_argument("--concurrency", type=_at_least(1), default=8, help="units run at once (8)")
    worker.add_argument(
        "--lease-ms",
        type=_at_least(1),
        default=30_000,
        help="longest lease the heartbeats plan for: each claim is renewed every third of "
        "min(this, the task's lease_ms) (30000)",
    )
    worker.add_argument(
        "--grace-ms",
        type=_at_least(0),
        default=30_000,
        help="time running units get on SIGTERM (30000)",
    )
    worker.add_argument(
        "--connect-timeout",
        type=_at_least(0, float),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="how long to wait at start-up for the server to answer before giving up "
        f"({DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=_LOG_LEVELS,
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (INFO)",
    )
    worker.set_defaults(handler=_worker)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command in ``argv`` (default: the process arguments); returns the exit code."""
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except CommandError as exc:
        print(f"dtaskq {args.command}: {exc}", file=sys.stderr)
        return exc.status
    return code
