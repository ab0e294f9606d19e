"""What the file watcher watches, how, and which changed file counts: resolved from the settings.

Shared by the watcher service (:class:`supervisor.reload.watcher.Reloader`) and ``python -m supervisor
why``, so that the explanation and the behaviour cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from supervisor.config.settings import Settings
from supervisor.reload.browser import STYLESHEETS, browser_follows
from supervisor.reload.filters import ChangeFilter
from supervisor.reload.mounts import detect_polling


def settings_files(settings: Settings) -> tuple[Path, Path]:
    """``.env`` and ``supervisor.toml``: always watched, and re-read before a reload."""
    return Path(settings.dotenv.path), Path(settings.config.path)


def watched_roots(settings: Settings) -> list[Path]:
    """The directories watched (recursively), each once, parents before children."""
    cfg = settings.config.reload
    paths = [p if p.is_absolute() else settings.project_dir / p for p in map(Path, cfg.paths)]
    env_file, config_file = settings_files(settings)
    paths += [env_file.parent, config_file.parent]
    # Programs' own watch paths (a frontend's sources, the migrations) are watched too.
    paths += [settings.project_dir / w for spec in settings.config.programs.values() if spec.reload for w in spec.watch]
    unique = sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i])]


def change_filter_for(settings: Settings) -> ChangeFilter:
    cfg = settings.config.reload
    env_file, config_file = settings_files(settings)
    # The settings files always count, whatever the include patterns say; stylesheets do when the
    # browser follows reloads (they are swapped in the page without new workers).
    include = (*cfg.include, env_file.name, config_file.name,
               *(STYLESHEETS if browser_follows(settings) else ()))
    return ChangeFilter(root=settings.project_dir, include=tuple(dict.fromkeys(include)),
                        exclude=tuple(cfg.exclude), runtime_dir=settings.runtime_dir)


def choose_polling(settings: Settings, roots: list[Path],
                   detect: Callable[[list[Path]], str | None] = detect_polling) -> tuple[bool | None, str]:
    """(poll, a line for the log or ""): the setting when there is one, else polling where the
    mount table says native events do not arrive, else None (watchfiles decides)."""
    if settings.reload_poll is not None:
        return settings.reload_poll, ""
    reason = detect(roots)
    if reason is None:
        return None, ""
    return True, (f"polling, because {reason}; set [reload] poll = false (or SUPERVISOR_RELOAD_POLL=false) "
                  "to use native events anyway")
