"""Waiting on conditions rather than sleeping: tests must not depend on how fast a loaded
machine runs, only on what eventually happens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.02


def until(
    condition: Callable[[], Any], timeout: float = 20, what: str | Callable[[], str] = ""
) -> Any:
    """Polls ``condition`` until it is truthy and returns its value; fails the test after
    ``timeout`` seconds, saying ``what`` it waited for (a callable: what it says then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {said or condition}")
        time.sleep(POLL_S)
