"""The ``dtaskq`` command line: ``dtaskq demo``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .server import ENV_URL


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    root = argparse.ArgumentParser(prog="dtaskq", description="A Redis-backed work queue.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run three in-process workers on a sample task",
        description="Runs three in-process workers on a sample task and prints its progress. "
        f"Uses --url, else ${ENV_URL}, else an embedded server.",
    )
    demo.add_argument("--url", help="an existing server (redis://host:port/db)")
    demo.set_defaults(handler=_demo)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command in ``argv`` (default: the process arguments); returns the exit code."""
    args = parser().parse_args(argv)
    code: int = args.handler(args)
    return code
