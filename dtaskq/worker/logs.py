"""Structured worker logs: every line names the node, namespace, task and unit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

FIELDS = ("node", "ns", "task", "unit")
FORMAT = "%(asctime)s %(levelname)s node=%(node)s ns=%(ns)s task=%(task)s unit=%(unit)s %(message)s"

log = logging.getLogger("dtaskq.worker")


class Fields(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds fixed fields (say node and namespace) to each record, merged with
    the ``extra`` of the call (say task and unit)."""

    def __init__(self, **fields: str) -> None:
        super().__init__(log, fields)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fixed: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**fixed, **kwargs.get("extra", {})}
        return msg, kwargs


class DefaultFields(logging.Filter):
    """Fills the fields a record lacks, so that every line has all of them."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, self._node if name == "node" else "-")
        return True


def configure(level: str, node: str) -> None:
    """Sends dtaskq's logs at ``level`` and above to stderr, one key=value line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(DefaultFields(node))
    root = logging.getLogger("dtaskq")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
