"""The inotify reader: the pure parts on scripted events, the rest on this kernel's inotify."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from supervisor.reload.filters import ChangeFilter
from supervisor.reload.inotify import (
    IN_CREATE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
    interpret,
    parse,
)
from supervisor.reload.stream import native_events_here, watch_batches
from tests.support import scaled

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def packed(wd: int, mask: int, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_reads_every_event_of_a_read_names_included() -> None:
    data = packed(1, IN_MODIFY, b"app.py") + packed(-1, IN_Q_OVERFLOW) + packed(2, IN_CREATE | IN_ISDIR, b"pkg")
    assert parse(data) == [Event(1, IN_MODIFY, "app.py"), Event(-1, IN_Q_OVERFLOW, ""),
                           Event(2, IN_CREATE | IN_ISDIR, "pkg")]


def test_interpret_names_paths_new_directories_gone_watches_and_overflow() -> None:
    dirs = {1: "/p", 2: "/p/pkg"}
    outcome = interpret([Event(1, IN_MODIFY, "app.py"), Event(2, IN_CREATE | IN_ISDIR, "sub"),
                         Event(3, IN_MODIFY, "x.py"), Event(2, IN_IGNORED, ""), Event(-1, IN_Q_OVERFLOW, "")], dirs)
    assert outcome.changed == {"/p/app.py", "/p/pkg/sub"}  # wd 3 is no watch of ours (removed meanwhile)
    assert outcome.new_dirs == ("/p/pkg/sub",)
    assert outcome.gone == {2}
    assert outcome.overflow


def test_ignored_directories_and_link_loops_are_not_watched(tmp_path: Path) -> None:
    for name in ("app", "node_modules/lib", ".git/objects", "app/__pycache__"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "app" / "loop").symlink_to(tmp_path)  # a link back up: walked once
    watcher = Inotify(ChangeFilter(root=tmp_path).ignores_directory)
    try:
        watcher.add_tree(str(tmp_path))
        assert sorted(Path(d).relative_to(tmp_path).as_posix() for d in watcher.dirs.values()) == [".", "app"]
    finally:
        watcher.close()


async def next_batch(stream: AsyncIterator[set[str]]) -> set[str]:
    return await asyncio.wait_for(anext(stream), scaled(10))


@pytest.mark.asyncio
async def test_a_change_comes_as_one_batch_and_a_new_directory_is_watched_with_its_files(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("A = 1\n")
    everything = ChangeFilter(root=tmp_path, include=("*",))  # directories moved in count too
    watching = asyncio.Event()
    stream = watch_batches([tmp_path], everything, debounce=0.05, poll=False, poll_interval=0.3,
                           ready=watching.set)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.wait_for(watching.wait(), scaled(10))  # the watches are in place
    (tmp_path / "app.py").write_text("A = 2\n")
    (tmp_path / "app.py").write_text("A = 3\n")  # within the quiet period: the same batch
    assert await asyncio.wait_for(first, scaled(10)) == {str(tmp_path / "app.py")}

    # A package created at once with a module in it: the module was written before the new
    # directory's watch existed, and counts all the same; later edits in it are seen.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("B = 1\n")
    batch = await next_batch(stream)
    assert str(package / "mod.py") in batch
    (package / "mod.py").write_text("B = 2\n")
    assert await next_batch(stream) == {str(package / "mod.py")}

    moved = tmp_path / "moved"
    os.rename(package, moved)  # a directory moved in, under another name
    batch = await next_batch(stream)
    assert str(moved) in batch
    (moved / "mod.py").write_text("B = 3\n")
    assert str(moved / "mod.py") in await next_batch(stream)
    package.mkdir()  # a new directory where the moved one was: watched, not taken for the old one
    (package / "new.py").write_text("C = 1\n")
    assert str(package / "new.py") in await next_batch(stream)
    (package / "new.py").write_text("C = 2\n")
    assert await next_batch(stream) == {str(package / "new.py")}
    await stream.aclose()


def test_polling_asked_for_or_forced_is_left_to_watchfiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHFILES_FORCE_POLLING", raising=False)
    assert native_events_here(None) and native_events_here(False)
    assert not native_events_here(True)
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    assert not native_events_here(None)
