"""``python -m supervisor why PATH...``: what a change to each path would do, and which rule says so.

For each path: ``reload`` (new workers), ``re-read settings`` (``.env`` or ``supervisor.toml``:
validated first, then a reload), ``swap stylesheets`` (CSS with live reload: no new workers), or
``ignored``, with the deciding rule: a default ignore, an include or exclude pattern, the runtime
directory, or lying outside the watched paths. The answer comes from the same functions the
watcher uses (:mod:`supervisor.reload.plan`), so it cannot disagree with what ``up`` does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from supervisor.config.settings import Settings
from supervisor.errors import EXIT_OK
from supervisor.options import add_project_options
from supervisor.reload.browser import browser_follows, only_stylesheets
from supervisor.reload.plan import change_filter_for, settings_files, watched_roots


def explain(path: Path, settings: Settings, roots: list[Path]) -> str:
    """What a change to ``path`` (absolute) would do, and why, in one phrase."""
    if not any(path == root or path.is_relative_to(root) for root in roots):
        return f"ignored: outside the watched paths ({', '.join(map(str, roots))}; [reload] paths)"
    verdict = change_filter_for(settings).explain(str(path))
    if not verdict.watched:
        return f"ignored: {verdict.rule}"
    env_file, config_file = settings_files(settings)
    if str(path) == os.path.abspath(env_file):
        return "re-read settings, then reload if they are valid: it is the env file ([supervisor] env_file)"
    if str(path) == os.path.abspath(config_file):
        return "re-read settings, then reload if they are valid: it is the configuration file"
    if browser_follows(settings) and only_stylesheets([str(path)]):
        return "swap stylesheets in open pages, no new workers: a stylesheet, with live reload on"
    return f"reload: {verdict.rule}"


def report(paths: list[str], settings: Settings, cwd: Path) -> list[str]:
    roots = watched_roots(settings)
    lines = []
    if not settings.reload:
        lines.append(f"note: reload is off ({settings.mode} mode, or --no-reload / [reload] enabled): "
                     "what follows is what a change would do with it on")
    for given in paths:
        path = (cwd / given).resolve()
        lines.append(f"{given}: {explain(path, settings, roots)}")
    return lines


def register(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
             settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = sub.add_parser("why", help="say whether a change to each path would reload, and which rule decides",
                       description="Paths are relative to the current directory. Exit code 0; 2 when "
                                   "the configuration or environment is invalid (as `check`).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_project_options(p)

    def run(args: argparse.Namespace) -> int:
        for line in report(args.paths, settings(args), Path.cwd()):
            print(line)
        return EXIT_OK

    p.set_defaults(func=run)
