"""Which file changes matter, and the rule that says so, in words.

The filter is a pure predicate ``(change, path) -> bool`` as in watchfiles; the change stream
that applies it as events arrive is :mod:`supervisor.reload.stream`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterable
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


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    """A pattern as a regex: fnmatch's rules (``*`` also matches ``/``, as before), plus ``**``
    for any number of directories, none included: ``**/migrations/*`` matches
    ``migrations/0001.py`` and ``app/migrations/0001.py``; ``frontend/**`` matches ``frontend``
    and everything below it."""
    out = []
    for part in re.split(r"(\*\*/|/\*\*$|\*\*)", pattern):
        if part == "**/":
            out.append("(?:.*/)?")
        elif part == "/**":
            out.append("(?:/.*)?")
        elif part == "**":
            out.append(".*")
        elif part:
            out.append(fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z"))
    return re.compile("(?s:" + "".join(out) + ")\\Z")


def glob_match(pattern: str, text: str) -> bool:
    return _compile(pattern).match(text) is not None


@dataclass(frozen=True)
class Verdict:
    """Whether a change to a path counts, and the rule that decided it, in words."""

    watched: bool
    rule: str


@dataclass(frozen=True)
class ChangeFilter:
    """Decides whether a changed path should trigger a reload.

    A path must match one of ``include`` (matched against the file name and the path relative to
    ``root``), match none of ``exclude`` or the built-in ignores, and lie outside ignored
    directories and the supervisor's runtime directory. :meth:`explain` says which rule decided.
    """

    root: Path
    include: tuple[str, ...] = ("*.py", ".env", "supervisor.toml")
    exclude: tuple[str, ...] = ()
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    runtime_dir: Path | None = None

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return self.matches(path)

    def matches(self, path: str) -> bool:
        return self.explain(path).watched

    def ignores_directory(self, path: str) -> bool:
        """True when no change below directory ``path`` can count: it is, or lies in, an ignored
        directory or the runtime directory (so a watcher need not watch it at all)."""
        p = Path(path)
        if self.runtime_dir is not None and _is_within(p, self.runtime_dir):
            return True
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            rel = p
        return any(part in self.ignored_dirs for part in rel.parts)

    def explain(self, path: str) -> Verdict:
        p = Path(path)
        if self.runtime_dir is not None and _is_within(p, self.runtime_dir):
            return Verdict(False, f"inside the supervisor's runtime directory ({self.runtime_dir})")
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            rel = p
        for part in rel.parts[:-1]:
            if part in self.ignored_dirs:
                return Verdict(False, f"inside {part}/, a directory ignored by default")
        name, rel_text = p.name, rel.as_posix()

        def hit(patterns: Iterable[str]) -> str | None:
            return next((pat for pat in patterns if glob_match(pat, name) or glob_match(pat, rel_text)), None)

        if (pattern := hit(IGNORED_PATTERNS)) is not None:
            return Verdict(False, f"matches {pattern!r}, ignored by default")
        if (pattern := hit(self.exclude)) is not None:
            return Verdict(False, f"matches the exclude pattern {pattern!r}")
        if (pattern := hit(self.include)) is not None:
            return Verdict(True, f"matches the include pattern {pattern!r}")
        return Verdict(False, f"matches no include pattern ({', '.join(map(repr, self.include))})")


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


def describe_ignored(paths: Iterable[str], change_filter: ChangeFilter, limit: int = 5) -> str:
    shown = sorted(paths)
    words = [f"{_relative(p, change_filter.root)} ({change_filter.explain(p).rule})" for p in shown[:limit]]
    if len(shown) > limit:
        words.append(f"and {len(shown) - limit} more")
    return ", ".join(words)


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path
