"""``<runtime dir>/state.json`` and ``status.token``: how the CLI finds a running supervisor.

The supervisor writes both at start (each atomically: a temporary file in the same directory,
then ``os.replace``), readable by its owner only, and removes them on a clean exit. A state file
whose process is gone, whose pid now belongs to a younger process or to something that is not a
supervisor, or that cannot be understood (not JSON, a field of the wrong type) is stale: detected
and replaced by ``up``, and never trusted by ``status``, ``restart`` or ``stop``.

Nothing read from these files is ever printed: a planted file could name any file as its
content, and the messages say only what is wrong with which file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

STATE_NAME = "state.json"
TOKEN_NAME = "status.token"
# Process start times and time.time() come from different clocks with coarse resolution.
_CLOCK_SLACK = 2.0
# Larger files are not ours; reading them whole would only cost memory.
_MAX_FILE_SIZE = 65536
# What a token may look like: one line of visible ASCII (what generate_token and [status] token give).
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")
# The names a supervisor process runs under: `python -m supervisor`, the console script.
_PROGRAM_NAMES = ("supervisor", "webapp-supervisor")


class StateFileError(Exception):
    """A state or token file that cannot be used; the message names the file and the problem,
    never its content."""


@dataclass(frozen=True)
class StateRecord:
    pid: int
    started_at: float  # wall clock, taken after the process started
    status_url: str
    url: str  # the webapp's
    token_file: str  # informative only: the CLI reads <runtime dir>/status.token, nothing else
    version: str
    project_dir: str


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # Created with its final mode: a token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_small_file(path: Path, check: Callable[[os.stat_result], str | None] | None = None) -> str | None:
    """The text of ``path``, or None when it does not exist. Raises :class:`StateFileError`.

    Never follows a symbolic link, never blocks on a FIFO, and refuses anything but a small
    regular UTF-8 file; ``check`` may refuse the file by its status (owner, mode).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "is a symbolic link" if os.path.islink(path) else f"cannot be read ({exc.strerror})"
        raise StateFileError(f"{path} {why}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StateFileError(f"{path} is not a regular file")
        if st.st_size > _MAX_FILE_SIZE:
            raise StateFileError(f"{path} is {st.st_size} bytes; expected at most {_MAX_FILE_SIZE}")
        refusal = check(st) if check else None
        if refusal:
            raise StateFileError(f"{path} {refusal}")
        data = f.read(_MAX_FILE_SIZE + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileError(f"{path} is not UTF-8 text") from None


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def parse_state(text: str) -> StateRecord:
    """A :class:`StateRecord` from the text of a state file; ValueError says what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"is {_kind(data)}, not a JSON object")
    values: dict[str, Any] = {}
    for name in StateRecord.__dataclass_fields__:
        if name not in data:
            raise ValueError(f'has no "{name}"')
        value = data[name]
        if name == "pid":
            ok = type(value) is int and value > 0
            expected = "a positive integer"
        elif name == "started_at":
            ok = type(value) in (int, float) and math.isfinite(value)
            expected = "a number"
        else:
            ok = isinstance(value, str)
            expected = "a string"
        if not ok:
            raise ValueError(f'has "{name}" {_kind(value)}; expected {expected}')
        values[name] = float(value) if name == "started_at" else value
    return StateRecord(**values)


def is_alive(record: StateRecord, now: Callable[[], float] = time.time) -> bool:
    """True if ``record.pid`` still runs, is the process that wrote the record, and is a supervisor.

    A record that claims a start in the future, a pid whose process started after the record was
    written (a recycled pid), or a pid that is not ``python -m supervisor`` (``pid: 1``) is not.
    """
    if record.started_at > now() + _CLOCK_SLACK:
        return False
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if proc.create_time() > record.started_at + _CLOCK_SLACK:
            return False
        return any(os.path.basename(arg) in _PROGRAM_NAMES for arg in proc.cmdline()[1:8])
    except psutil.Error:
        return False


def load_state(runtime_dir: Path) -> tuple[StateRecord | None, str]:
    """The record in ``runtime_dir``, or None and why: missing, unreadable or corrupt."""
    path = runtime_dir / STATE_NAME
    try:
        text = read_small_file(path)
    except StateFileError as exc:
        return None, str(exc)
    if text is None:
        return None, f"no {path}"
    try:
        return parse_state(text), ""
    except ValueError as exc:
        return None, f"{path} {exc}"


def read_state(runtime_dir: Path) -> StateRecord | None:
    """The record in ``runtime_dir``, or None when there is none or it cannot be understood."""
    return load_state(runtime_dir)[0]


def live_state(runtime_dir: Path) -> tuple[StateRecord | None, str]:
    """The record of a supervisor that is running now, or None and why there is none."""
    record, why = load_state(runtime_dir)
    if record is None:
        return None, why if why.startswith("no ") else f"its state file is unusable: {why}"
    if not is_alive(record):
        return None, f"stale state file: pid {record.pid} is no longer running"
    return record, ""


def claim(runtime_dir: Path, record: StateRecord, token: str) -> str:
    """Write the token and the state file for ``record``; return a note for the log, or ``""``."""
    previous, why = load_state(runtime_dir)
    note = ""
    if previous is not None and previous.pid != record.pid:
        if is_alive(previous):
            note = (f"another supervisor (pid {previous.pid}, {previous.status_url}) uses runtime "
                    f"directory {runtime_dir}; the CLI will now find this one")
        else:
            note = f"replacing stale state file of pid {previous.pid}, which is no longer running"
    elif previous is None and not why.startswith("no "):
        note = f"replacing a corrupt state file: {why}"
    write_atomic(runtime_dir / TOKEN_NAME, token + "\n")
    write_atomic(runtime_dir / STATE_NAME, json.dumps(asdict(record), indent=2) + "\n")
    return note


def release(runtime_dir: Path, record: StateRecord) -> None:
    """Remove the files ``record`` wrote, unless another supervisor has taken them over since."""
    current = read_state(runtime_dir)
    if current is not None and current.pid != record.pid:
        return
    for path in (runtime_dir / STATE_NAME, runtime_dir / TOKEN_NAME):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_token(path: Path, check: Callable[[os.stat_result], str | None] | None = None) -> str | None:
    """The token in ``path`` (one line), or None when the file does not exist.

    Raises :class:`StateFileError` for anything else, without quoting the file.
    """
    text = read_small_file(path, check)
    if text is None:
        return None
    lines = text.splitlines()
    if len(lines) != 1:
        raise StateFileError(f"{path} has {len(lines)} lines; expected one line holding the token "
                             "(as `up` writes it)")
    token = lines[0].strip()
    if not _TOKEN.fullmatch(token):
        raise StateFileError(f"{path} does not hold a token; expected one line of at most 256 visible "
                             "ASCII characters (as `up` writes it)")
    return token
