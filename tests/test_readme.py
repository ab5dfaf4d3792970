"""Every Python snippet of README.md runs as written against the test server: in order and
in one namespace, as a reader would run them (later snippets use the client of the first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

import dtaskq
from dtaskq import TaskStatus
from dtaskq.server import ENV_URL

README = Path(__file__).parent.parent / "README.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def snippets() -> list[tuple[int, str]]:
    """Each ```python block of the README: the number of lines before it, and its code."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in SNIPPET.finditer(text)]


def test_every_python_snippet_of_the_readme_runs(
    server_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_URL, server_url)
    found = snippets()
    assert len(found) >= 3, "the README should hold the tour, range tasks and a provider"
    names: dict[str, object] = {"__name__": "readme"}
    try:
        for before, code in found:
            # Padded with the lines before it, so that a traceback shows the README's lines.
            exec(compile("\n" * before + code, str(README), "exec"), names)
        client = names["client"]
        assert isinstance(client, dtaskq.Client)
        for namespace, task_id in (("reindex", "products"), ("merge", "m1")):
            task = client.get_task(namespace, task_id)
            assert task is not None and task.status is TaskStatus.FINISHED, task
    finally:
        client = names.get("client")
        if isinstance(client, dtaskq.Client):
            client.close()
        # The snippets use the default key prefix: leave the server as the tests found it.
        for pattern in ("dtq:*", "{dtq:*"):
            for key in r.scan_iter(match=pattern, count=1000):
                r.delete(key)
