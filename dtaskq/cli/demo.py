"""``dtaskq demo``: three worker processes, one killed mid-way, on an embedded server."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..server import ENV_URL
from .args import add_url

if TYPE_CHECKING:
    from .args import Commands


def run(args: argparse.Namespace) -> int:
    """Runs the demo; returns 0 when it went as it should."""
    from ..demo import run_demo

    return run_demo(args.url)


def add_parser(commands: Commands) -> None:
    """Adds ``demo`` to the subcommands ``commands`` (argparse's subparsers action)."""
    demo = commands.add_parser(
        "demo",
        help="run three worker processes on a range task and a task with groups",
        description="Starts three worker processes, runs a range task and a named-unit task "
        "with groups and an ack barrier, kills one worker mid-way and shows the others "
        f"finishing its units. Uses --url, else ${ENV_URL}, else an embedded server.",
    )
    add_url(demo, f"${ENV_URL}, else an embedded server")
    demo.set_defaults(handler=run, prog=demo.prog)
