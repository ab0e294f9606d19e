"""The runtime directory: who may write it, and creating it so that nobody else can.

It holds the state file the CLI trusts, the status API's token and (in development) the SQLite
database of the webapp. Anyone who can write it can point the CLI elsewhere or swap those files,
so it must be a real directory, owned by the user running the supervisor, and not writable by
group or others. A symbolic link is refused unless ``[supervisor] allow_runtime_dir_symlink``
says it is meant: a cloned repository could otherwise commit ``.supervisor`` as a link to a
shared directory. ``up`` creates a missing directory with mode 0700.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from supervisor.errors import ConfigError, Problem

FIX = "expected a directory owned by you that only you can write to (`up` creates it with mode 0700)"


def owner_problem(st: os.stat_result, uid: int, any_owner: bool = False) -> str | None:
    """Why a file or directory with status ``st`` is not trustworthy for user ``uid``, or None.

    ``any_owner``: root reading (``sudo python -m supervisor status``) may use another user's
    directory; it still may not be writable by anyone but its owner.
    """
    if st.st_uid != uid and not any_owner:
        return f"is owned by uid {st.st_uid}, not by you (uid {uid})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"is writable by other users (mode {mode:04o})"
    return None


def runtime_dir_problem(path: Path, allow_symlink: bool = False, uid: int | None = None,
                        any_owner: bool = False) -> str | None:
    """What is wrong with ``path`` as a runtime directory, or None (also when it does not exist yet)."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _missing_problem(path)
    except NotADirectoryError:
        return "cannot be created: a parent of it is a file, not a directory"
    except OSError as exc:
        return f"cannot be examined: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlink:
            return ("is a symbolic link; expected a real directory, or [supervisor] "
                    "allow_runtime_dir_symlink = true if the link is meant")
        try:
            st = os.stat(path)
        except OSError as exc:
            return f"is a symbolic link that cannot be followed: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory (it is a file); expected a directory, or a path where one can be created"
    why = owner_problem(st, uid, any_owner)
    return f"{why}; {FIX}" if why else None


def _missing_problem(path: Path) -> str | None:
    """A missing directory is fine if ``up`` can create it: its nearest existing parent is a directory."""
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot be created: {parent} cannot be examined ({exc.strerror})"
        if not stat.S_ISDIR(st.st_mode):
            return f"cannot be created: {parent} is a file, not a directory"
        return None
    return None


def ensure_runtime_dir(path: Path, where: str, allow_symlink: bool = False) -> None:
    """Create ``path`` with mode 0700 if it is missing; raise :class:`ConfigError` (exit 2) if it
    exists and cannot be trusted, or cannot be created."""
    problem = runtime_dir_problem(path, allow_symlink)
    if problem is None and not os.path.lexists(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # created meanwhile: checked again below
        except OSError as exc:
            problem = f"cannot be created: {exc.strerror}"
        problem = problem or runtime_dir_problem(path, allow_symlink)
    if problem is not None:
        raise ConfigError([Problem(where, f"{path} {problem}")])


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a database file that SQLite
    would otherwise create 0644, readable by every local user)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)
