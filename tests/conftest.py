from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Tests import their helpers as `tests.support`; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import timeout_scale

if TYPE_CHECKING:
    import httpx

    from tests.dbsupport import Served

# The PostgreSQL fixtures (`pg_server`, `pg`) for every test module.
pytest_plugins = ["tests.pgserver"]


@pytest.fixture
def supervisor_pid() -> Iterator[int]:
    """A live process whose command line reads like a supervisor's (``... supervisor up``):
    what a state file's pid must be to be trusted."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "supervisor", "up"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    """Real HTTP to the webapp of the requesting module's ``served`` fixture (each webapp test
    module serves its own, with its own settings, once per backend)."""
    with served.client() as c:
        yield c


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-test timeouts (pytest-timeout's marker, else its configured default) times TIMEOUT_SCALE,
    the same factor tests/support.py applies to every wait, so a loaded machine gets both."""
    try:
        scale = timeout_scale()
    except ValueError as exc:  # a user's mistake: one line, no traceback
        raise pytest.UsageError(str(exc)) from None
    if scale == 1.0 or not config.pluginmanager.has_plugin("timeout"):
        return
    from pytest_timeout import get_env_settings  # only with the plugin present

    default = get_env_settings(config).timeout
    for item in items:
        marker = item.get_closest_marker("timeout")
        args: tuple[object, ...] = marker.args if marker is not None else ()
        kwargs = dict(marker.kwargs) if marker is not None else {}
        base = kwargs.pop("timeout", None) if "timeout" in kwargs else (args[0] if args else default)
        if not isinstance(base, int | float) or base <= 0:  # 0 or none: no timeout, and none to scale
            continue
        item.add_marker(pytest.mark.timeout(base * scale, *args[1:], **kwargs), append=False)
