"""Pure units of reloading: the change filter, classification, and coalescing of scripted batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import watchfiles

from supervisor.reload.filters import ChangeFilter, touches_settings
from supervisor.reload.rollout import coalesce

ROOT = Path("/project")


@pytest.mark.parametrize("path, expected", [
    ("/project/app.py", True),
    ("/project/pkg/models.py", True),
    ("/project/.env", True),
    ("/project/supervisor.toml", True),
    ("/project/README.md", False),
    ("/project/.git/index", False),
    ("/project/.venv/lib/site.py", False),
    ("/project/venv/lib/x.py", False),
    ("/project/pkg/__pycache__/models.cpython-311.pyc", False),
    ("/project/node_modules/x/index.py", False),
    ("/project/app.pyc", False),
    ("/project/server.log", False),
    ("/project/.supervisor/state.json", False),
    ("/project/.app.py.swp", False),
    ("/project/data.sqlite3", False),
])
def test_default_filter(path: str, expected: bool) -> None:
    f = ChangeFilter(root=ROOT, runtime_dir=ROOT / ".supervisor")
    assert f(watchfiles.Change.modified, path) is expected


def test_include_and_exclude_patterns() -> None:
    f = ChangeFilter(root=ROOT, include=("*.py", "templates/*.html"), exclude=("tests/*", "*_test.py"))
    assert f.matches("/project/templates/index.html")
    assert not f.matches("/project/static/index.html")
    assert not f.matches("/project/tests/test_app.py")
    assert not f.matches("/project/app_test.py")
    assert f.matches("/project/app.py")


def test_settings_changes_are_told_apart_from_code_changes() -> None:
    env, toml = ROOT / ".env", ROOT / "supervisor.toml"
    assert not touches_settings({"/project/app.py"}, env, toml)
    assert touches_settings({"/project/.env", "/project/app.py"}, env, toml)
    assert touches_settings({"/project/supervisor.toml"}, env, toml)


async def scripted(events: list[tuple[asyncio.Event | None, set[str]]],
                   taken: asyncio.Event | None = None) -> AsyncIterator[set[str]]:
    """Yield each batch once its gate (if any) is set: a scripted change history. ``taken`` is set
    when the consumer asks for more after the last batch, i.e. has taken every batch."""
    for gate, batch in events:
        if gate is not None:
            await gate.wait()
        yield batch
    if taken is not None:
        taken.set()


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_batches_arriving_during_a_reload_are_merged_into_one_more() -> None:
    async def scenario() -> list[set[str]]:
        applied: list[set[str]] = []
        first_running = asyncio.Event()
        release_first = asyncio.Event()
        later = asyncio.Event()

        async def apply(batch: set[str]) -> None:
            applied.append(batch)
            if len(applied) == 1:
                first_running.set()
                await release_first.wait()  # a slow reload; three more saves happen meanwhile

        events = [(None, {"a.py"}), (later, {"b.py"}), (None, {"c.py"}), (None, {"b.py", "d.py"})]
        all_taken = asyncio.Event()
        task = asyncio.ensure_future(coalesce(scripted(events, all_taken), apply))
        await first_running.wait()
        later.set()
        await all_taken.wait()
        release_first.set()
        await asyncio.wait_for(task, 5)
        return applied

    assert await scenario() == [{"a.py"}, {"b.py", "c.py", "d.py"}]


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_each_batch_after_a_finished_reload_gets_its_own_reload() -> None:
    async def scenario() -> list[set[str]]:
        applied: list[set[str]] = []
        first_done = asyncio.Event()

        async def apply(batch: set[str]) -> None:
            applied.append(batch)
            first_done.set()

        # The second save comes only after the first reload has finished.
        events = [(None, {"a.py"}), (first_done, {"b.py"})]
        await asyncio.wait_for(coalesce(scripted(events), apply), 5)
        return applied

    assert await scenario() == [{"a.py"}, {"b.py"}]


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_a_failing_watcher_is_reported_not_swallowed() -> None:
    async def broken() -> AsyncIterator[set[str]]:
        yield {"a.py"}
        raise OSError("inotify watch limit reached")

    async def apply(batch: set[str]) -> None:
        pass

    with pytest.raises(OSError, match="inotify watch limit"):
        await asyncio.wait_for(coalesce(broken(), apply), 5)
