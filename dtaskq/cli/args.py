"""What every subcommand shares: the error that ends a command, the parser that reports a
mistake in one line, and the argparse types that check option values."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .. import urls
from ..errors import DtaskqError, InvalidArgument
from ..server import ENV_URL

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    """argparse's subcommands action, to which each command module adds its parser."""

EXIT_USAGE = 2
"""A mistake on the command line, or a server set up in a way the command cannot work with."""
EXIT_UNREACHABLE = 1
"""The server could not be reached, or answered with an error dtaskq does not expect (and, for
``library status``: a server lacks the library)."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0

URL_FORMS = (
    "redis://[user:password@]host:port/db, rediss:// for TLS or unix://path; add ?cluster=1 "
    "for a Redis Cluster (any node's address)"
)
"""What ``--url`` accepts, for its help."""


class CommandError(DtaskqError):
    """Ends a command with its message as one line on stderr and ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """Reports a mistake in one line (argparse's default prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that runs a check raising ``InvalidArgument``, such as one of
    :mod:`dtaskq.validate`'s."""

    def parse(text: str) -> str:
        try:
            check(text)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text

    return parse


server_url = checked(urls.parse)
"""The argparse type of ``--url``."""


def at_least(low: float, kind: Callable[[str], float] = int) -> Callable[[str], Any]:
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


def add_url(parser: argparse.ArgumentParser, default: str = f"${ENV_URL}") -> None:
    """Adds ``--url``; ``default`` says what a command without it uses (see :func:`url_of`)."""
    parser.add_argument(
        "--url", type=server_url, help=f"the server: {URL_FORMS}; default {default}"
    )


def add_connect_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--connect-timeout``: how long ``what`` waits at start-up for the server."""
    parser.add_argument(
        "--connect-timeout",
        type=at_least(0, float),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long {what} waits at start-up for the server to answer before giving up "
        f"({DEFAULT_CONNECT_TIMEOUT_S:g})",
    )


def url_of(args: argparse.Namespace) -> str:
    """The server URL: ``--url``, else ``$DTASKQ_REDIS_URL``, checked as ``--url`` is."""
    url: str | None = args.url or os.environ.get(ENV_URL)
    if not url:
        raise CommandError(f"needs --url or ${ENV_URL}")
    try:
        urls.parse(url)
    except InvalidArgument as exc:
        raise CommandError(f"${ENV_URL}: {exc.message}") from None
    return url
