"""The ``dtaskq`` command line: ``dtaskq demo``, ``dtaskq worker`` and ``dtaskq library``.

A mistake on the command line ends the command with one line on stderr and exit status 2;
a server that cannot be reached at start-up, with one line and status 1. Each subcommand
imports what it runs only when it runs, so that ``dtaskq --help`` loads neither the worker
nor the demo. docs/cli.md describes every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import demo, library, worker
from .args import CommandError, Parser

__all__ = ["CommandError", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    root = Parser(prog="dtaskq", description="A Redis-backed work queue.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, worker, library):
        module.add_parser(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command in ``argv`` (default: the process arguments); returns the exit code."""
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except CommandError as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        # The reader of the output went away (say, `| head`): nothing to say, and Python's
        # flush at exit must not fail again on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code
