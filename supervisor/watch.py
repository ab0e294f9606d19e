"""Which file changes matter, and the change stream itself (watchfiles).

The filter is a pure predicate ``(change, path) -> bool`` as in watchfiles; the stream is an
async iterator of path batches, so the reload loop can be fed scripted batches in tests.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

# Directory names never worth a reload: VCS data, virtual environments, caches, dependencies.
IGNORED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env.d", "__pycache__", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", "site-packages", "build", "dist",
    ".idea", ".vscode", ".supervisor",
})
IGNORED_PATTERNS = ("*.pyc", "*.pyo", "*.log", "*.swp", "*.swx", "*~", ".#*", "*.tmp",
                    "*.db", "*.db-journal", "*.sqlite3", "*.sqlite3-journal")


@dataclass(frozen=True)
class ChangeFilter:
    """Decides whether a changed path should trigger a reload.

    A path must match one of ``include`` (matched against the file name and the path relative to
    ``root``), match none of ``exclude`` or the built-in ignores, and lie outside ignored
    directories and the supervisor's runtime directory.
    """

    root: Path
    include: tuple[str, ...] = ("*.py", ".env", "supervisor.toml")
    exclude: tuple[str, ...] = ()
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    runtime_dir: Path | None = None

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return self.matches(path)

    def matches(self, path: str) -> bool:
        p = Path(path)
        if self.runtime_dir is not None and _is_within(p, self.runtime_dir):
            return False
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            rel = p
        if any(part in self.ignored_dirs for part in rel.parts[:-1]):
            return False
        name, rel_text = p.name, rel.as_posix()

        def hit(patterns: Iterable[str]) -> bool:
            return any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(rel_text, pat) for pat in patterns)

        if hit(IGNORED_PATTERNS) or hit(self.exclude):
            return False
        return hit(self.include)


def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
        return True
    except ValueError:
        return False


def touches_settings(paths: Iterable[str], env_file: Path, config_file: Path) -> bool:
    """True when ``.env`` or ``supervisor.toml`` changed: re-read and validate before anything."""
    settings_files = {os.path.abspath(env_file), os.path.abspath(config_file)}
    return bool({os.path.abspath(p) for p in paths} & settings_files)


async def watch_batches(paths: Iterable[Path], change_filter: ChangeFilter, *, debounce: float,
                        poll: bool, poll_interval: float) -> AsyncIterator[set[str]]:
    """Yield sets of changed paths; a batch closes after ``debounce`` seconds without changes."""
    existing = [str(p) for p in paths if p.exists()]
    async for changes in watchfiles.awatch(
        # step: the quiet period that closes a batch. debounce: watchfiles' cap on how long one
        # batch may keep growing under a constant stream of changes (its default, 1.6 s, or more).
        *existing, watch_filter=change_filter, step=max(1, int(debounce * 1000)),
        debounce=max(1600, int(debounce * 4000)),
        # None lets watchfiles honour WATCHFILES_FORCE_POLLING and detect WSL by itself.
        force_polling=True if poll else None,
        poll_delay_ms=int(poll_interval * 1000), recursive=True, ignore_permission_denied=True,
    ):
        yield {path for _, path in changes}
