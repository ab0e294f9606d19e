"""``<runtime dir>/state.json`` and ``status.token``: how the CLI finds a running supervisor.

The supervisor writes both at start (each atomically: a temporary file in the same directory,
then ``os.replace``), the token readable by its owner only, and removes them on a clean exit.
A state file whose process is gone, or whose pid now belongs to a younger process, is stale:
detected and replaced by ``up``, and never trusted by ``status``, ``restart`` or ``stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

STATE_NAME = "state.json"
TOKEN_NAME = "status.token"
# Process start times and time.time() come from different clocks with coarse resolution.
_CLOCK_SLACK = 2.0


@dataclass(frozen=True)
class StateRecord:
    pid: int
    started_at: float  # wall clock, taken after the process started
    status_url: str
    url: str  # the webapp's
    token_file: str
    version: str
    project_dir: str


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # Created with its final mode: a token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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


def is_alive(record: StateRecord) -> bool:
    """True if ``record.pid`` still runs and is the process that wrote the record."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # A process created after the record was written has merely inherited a recycled pid.
        return bool(proc.create_time() <= record.started_at + _CLOCK_SLACK)
    except psutil.Error:
        return False


def read_state(runtime_dir: Path) -> StateRecord | None:
    """The record in ``runtime_dir``, or None when there is none or it cannot be understood."""
    try:
        data = json.loads((runtime_dir / STATE_NAME).read_text(encoding="utf-8"))
        return StateRecord(**{k: data[k] for k in StateRecord.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_state(runtime_dir: Path) -> tuple[StateRecord | None, str]:
    """The record of a supervisor that is running now, or None and why there is none."""
    record = read_state(runtime_dir)
    if record is None:
        exists = (runtime_dir / STATE_NAME).exists()
        why = "its state file is unreadable" if exists else f"no {runtime_dir / STATE_NAME}"
        return None, why
    if not is_alive(record):
        return None, f"stale state file: pid {record.pid} is no longer running"
    return record, ""


def claim(runtime_dir: Path, record: StateRecord, token: str) -> str:
    """Write the token and the state file for ``record``; return a note for the log, or ``""``."""
    previous = read_state(runtime_dir)
    note = ""
    if previous is not None and previous.pid != record.pid:
        if is_alive(previous):
            note = (f"another supervisor (pid {previous.pid}, {previous.status_url}) uses runtime "
                    f"directory {runtime_dir}; the CLI will now find this one")
        else:
            note = f"replacing stale state file of pid {previous.pid}, which is no longer running"
    write_atomic(Path(record.token_file), token + "\n", mode=0o600)
    write_atomic(runtime_dir / STATE_NAME, json.dumps(asdict(record), indent=2) + "\n")
    return note


def release(runtime_dir: Path, record: StateRecord) -> None:
    """Remove the files ``record`` wrote, unless another supervisor has taken them over since."""
    current = read_state(runtime_dir)
    if current is not None and current.pid != record.pid:
        return
    for path in (runtime_dir / STATE_NAME, Path(record.token_file)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
