"""``python -m supervisor status | restart | stop``: talk to a running supervisor's status API.

The supervisor is found through ``<runtime dir>/state.json`` or ``--url``. The state file is
trusted only as far as it can be: the runtime directory must be owned by the user and writable
by nobody else (root may read another user's), its pid must be a running supervisor that started
before the file was written (a stale or corrupt file is reported, never used), and the status URL
it names must be loopback or the ``[status] host`` of the configuration. The token is read only
from ``<runtime dir>/status.token`` (same rules, one line), ``--token-file`` or
``SUPERVISOR_STATUS_TOKEN``, never from a path the state file names, and it is sent only where it
is needed: with ``restart`` and ``stop``, and with reads beyond loopback.

Exit codes of ``status`` follow ``systemctl status``:

* 0: running and ready
* 1: running but not ready (or the API refused or failed the request)
* 2: a file the CLI needs cannot be trusted or read (the runtime directory, the token file, a
  missing ``--config``); the message names the file and what is wrong with it
* 3: no supervisor is running (or what answers at ``--url`` is not a supervisor's status API)

``restart`` and ``stop`` wait for the effect unless ``--no-wait``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from supervisor.config.runtimedir import owner_problem, runtime_dir_problem
from supervisor.config.toml import AppSection, Config, config_file, field_bounds, load_config, missing_config
from supervisor.errors import EXIT_CONFIG, ConfigError
from supervisor.listen.ports import display_url, is_loopback
from supervisor.options import add_project_options
from supervisor.status.display import render_text
from supervisor.status.statefile import TOKEN_NAME, StateFileError, StateRecord, is_alive, live_state, read_token

STATUS_READY = 0
STATUS_NOT_READY = 1
STATUS_UNTRUSTED = EXIT_CONFIG
STATUS_NOT_RUNNING = 3
FAILED = 1
_POLL = 0.1


@dataclass(frozen=True)
class Target:
    status_url: str
    token: Callable[[], str | None]  # read when a request needs it, not before
    record: StateRecord | None  # known when found through the state file

    @property
    def loopback(self) -> bool:
        return is_loopback(urlsplit(self.status_url).hostname or "")


class NotRunning(Exception):
    """No supervisor to talk to; the message says why."""


class Refused(Exception):
    """The API answered with an error status; the message says what it said."""


class NotStatusAPI(Exception):
    """Something answered, but not a supervisor's status API (a wrong ``--url``)."""


class Untrusted(Exception):
    """A file or address the CLI will not use; the message names it and says why."""


def _not_status_api(target: Target, path: str, what: str) -> NotStatusAPI:
    return NotStatusAPI(f"{target.status_url} is not a supervisor status API: {path} answered {what}; "
                        "pass --url the address `up` logs as \"status: API and dashboard on "
                        "http://HOST:PORT\" (default http://127.0.0.1:8787)")


def project_config(project_dir: Path, config: str | None) -> Config:
    """The project's configuration; the defaults if supervisor.toml is broken, since a half-edited
    file must not stop ``status`` from finding the running supervisor. A ``--config`` that does not
    exist is an error (exit 2), as for ``up`` and ``check``."""
    path = config_file(project_dir, Path(config) if config else None)
    if config and not path.exists():
        raise ConfigError([missing_config(path)])
    try:
        return load_config(path)
    except ConfigError:
        return Config(path=str(path))


def runtime_dir(project_dir: Path, config: str | None) -> Path:
    """``[supervisor] runtime_dir`` of the project (see :func:`project_config`)."""
    rd = Path(project_config(project_dir, config).supervisor.runtime_dir)
    return rd if rd.is_absolute() else project_dir.resolve() / rd


def _token_reader(args: argparse.Namespace, rd: Path | None) -> Callable[[], str | None]:
    """Where the token comes from: ``--token-file``, ``SUPERVISOR_STATUS_TOKEN``, or the runtime
    directory's ``status.token`` (owned by the user, writable by nobody else)."""
    def read() -> str | None:
        try:
            if args.token_file:
                return read_token(Path(args.token_file))
            if os.environ.get("SUPERVISOR_STATUS_TOKEN"):
                return os.environ["SUPERVISOR_STATUS_TOKEN"].strip()
            if rd is None:
                return None
            uid = os.geteuid()
            return read_token(rd / TOKEN_NAME, lambda st: owner_problem(st, uid, any_owner=uid == 0))
        except StateFileError as exc:
            raise Untrusted(f"{exc}; the token is not used") from None
    return read


def trusted_status_url(record: StateRecord, config: Config, state_file: Path) -> str:
    """The state file's status URL, rebuilt from its host and port, if it is loopback or the
    configured ``[status] host``; a planted file must not send requests (or the token) elsewhere."""
    try:
        parts = urlsplit(record.status_url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        host, port = "", None
    allowed = is_loopback(host) or (host == config.status.host.strip("[]") and host not in ("", "0.0.0.0", "::"))
    if parts.scheme != "http" or port is None or not allowed:
        raise Untrusted(f"{state_file} names a status URL that is neither loopback nor [status] host "
                        f"({config.status.host}); not using it (pass --url to choose one)")
    return display_url(host, port)


def find_target(args: argparse.Namespace) -> Target:
    if args.url:
        return Target(args.url.rstrip("/"), _token_reader(args, None), None)
    project_dir = Path(args.project_dir)
    config = project_config(project_dir, args.config)
    rd = runtime_dir(project_dir, args.config)
    uid = os.geteuid()
    problem = runtime_dir_problem(rd, config.supervisor.allow_runtime_dir_symlink, uid, any_owner=uid == 0)
    if problem:
        raise Untrusted(f"runtime directory {rd} {problem}")
    record, why = live_state(rd)
    if record is None:
        raise NotRunning(f"no supervisor is running ({why})")
    url = trusted_status_url(record, config, rd / "state.json")
    return Target(url, _token_reader(args, rd), record)


def request(target: Target, method: str, path: str, timeout: float = 5.0,
            payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request to the API (a POST may carry a JSON ``payload``): (status, parsed JSON body).

    Raises NotRunning when nothing answers, NotStatusAPI when a success is not JSON.
    """
    # Reads on loopback need no token: it is not sent where it is not needed.
    token = target.token() if method == "POST" or not target.loopback else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if method != "POST" else json.dumps(payload).encode() if payload is not None else b""
    if payload is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(target.status_url + path, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body, kind = resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the API has every path the CLI asks for
            raise _not_status_api(target, path, "404 Not Found") from None
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode("utf-8", "replace")[:200]}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotRunning(f"no supervisor answers at {target.status_url} ({reason})") from None
    try:
        return status, json.loads(body or b"null")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise _not_status_api(target, path, f"{status} with {kind}, not JSON") from None


def fetch_status(target: Target) -> dict[str, Any]:
    """The ``/status`` document, checked for the fields the commands read."""
    code, doc = request(target, "GET", "/status")
    if code != 200:
        raise Refused(_refusal(code, doc))
    problem = document_problem(doc)
    if problem:
        raise _not_status_api(target, "/status", problem)
    return doc  # type: ignore[no-any-return]


# The fields of a /status document that the commands and ``render_text`` read unconditionally.
_SECTIONS = {"supervisor": ("pid", "state", "mode", "uptime", "ready", "ready_reason"),
             "database": ("state",), "reload": ("count",)}
_WORKER_FIELDS = ("slot", "pid", "state", "restarts")


def document_problem(doc: Any) -> str | None:
    """What makes ``doc`` unusable as a ``/status`` document, or None when it is usable.

    >>> document_problem({"hello": "world"})
    'JSON without "url"'
    """
    if not isinstance(doc, dict):
        return "JSON that is not an object"
    if "url" not in doc:
        return 'JSON without "url"'
    for section, fields in _SECTIONS.items():
        if not isinstance(doc.get(section), dict):
            return f'JSON without a "{section}" object'
        for name in fields:
            if name not in doc[section]:
                return f'JSON without "{section}.{name}"'
    workers = doc.get("workers")
    if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
        return 'JSON without a "workers" list of objects'
    for name in _WORKER_FIELDS:
        if any(name not in w for w in workers):
            return f'JSON without "workers[].{name}"'
    return None


def _refusal(code: int, body: Any) -> str:
    message = body.get("error") if isinstance(body, dict) else None
    hint = (" (pass --token-file or set SUPERVISOR_STATUS_TOKEN)" if code == 401 else "")
    return f"the status API answered {code}: {message or body}{hint}"


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(_POLL)  # polling a remote effect: nothing to wait on locally
    return check()


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# ----- commands -----------------------------------------------------------------------------

class Failed(Exception):
    """The request was accepted but its effect did not follow in time."""


def _guarded(body: Callable[[], int]) -> int:
    """Run a command's body, turning the ways it can fail into messages and exit codes."""
    try:
        return body()
    except NotRunning as exc:
        print(str(exc), file=sys.stderr)
        return STATUS_NOT_RUNNING
    except NotStatusAPI as exc:
        _error(str(exc))
        return STATUS_NOT_RUNNING
    except (Refused, Failed) as exc:
        _error(str(exc))
        return FAILED
    except Untrusted as exc:
        _error(str(exc))
        return STATUS_UNTRUSTED


def cmd_status(args: argparse.Namespace) -> int:
    def body() -> int:
        doc = fetch_status(find_target(args))
        print(json.dumps(doc, indent=2) if args.json else render_text(doc))
        return STATUS_READY if doc["supervisor"]["ready"] else STATUS_NOT_READY
    return _guarded(body)


def _post(target: Target, action: str) -> None:
    code, body = request(target, "POST", "/" + action)
    if code == 202 and body == {"accepted": action}:
        return
    if code < 300:
        raise _not_status_api(target, "/" + action, f'{code} without {{"accepted": "{action}"}}')
    raise Refused(_refusal(code, body))


def _rolled(target: Target, before: dict[int, int | None]) -> Callable[[], bool]:
    """True once every slot serves with a worker that was not serving before."""
    def check() -> bool:
        try:
            workers = fetch_status(target)["workers"]
        except (NotRunning, Refused):
            return False
        return all(w["state"] == "running" and w["pid"] is not None and w["pid"] != before.get(w["slot"])
                   for w in workers)
    return check


def _program_instances(target: Target, name: str) -> list[dict[str, Any]]:
    programs = fetch_status(target).get("programs", {})
    if name not in programs:
        raise Failed(f"no program {name!r}; expected one of {', '.join(['web', *programs])}")
    return list(programs[name])


def _program_state(target: Target, name: str, check: Callable[[list[dict[str, Any]]], bool]) -> Callable[[], bool]:
    def done() -> bool:
        try:
            return check(list(fetch_status(target).get("programs", {}).get(name, [])))
        except (NotRunning, Refused):
            return False
    return done


def cmd_program(args: argparse.Namespace, action: str) -> int:
    """``restart NAME``, ``stop NAME``, ``start NAME``: one program, waiting for the effect."""
    def body() -> int:
        target = find_target(args)
        name = args.program
        before = {w["slot"]: w["pid"] for w in _program_instances(target, name)}
        code, reply = request(target, "POST", f"/programs/{name}/{action}")
        if code != 202:
            raise Refused(_refusal(code, reply))
        if args.no_wait:
            print(f"{action} {name} requested")
            return 0
        settled = ("running", "completed")
        checks: dict[str, Callable[[list[dict[str, Any]]], bool]] = {
            "stop": lambda ws: all(w["state"] == "stopped" for w in ws),
            "start": lambda ws: all(w["state"] in settled for w in ws),
            "restart": lambda ws: all(w["state"] in settled and (w["pid"] is None or w["pid"] != before.get(w["slot"]))
                                      for w in ws),
        }
        if not wait_for(_program_state(target, name, checks[action]), args.timeout):
            raise Failed(f"{name} did not {action} within {args.timeout:g}s; "
                         "see `python -m supervisor status` and the supervisor's log")
        after = _program_instances(target, name)
        print(f"{action}: " + ", ".join(f"{name}.{w['slot']} {w['state']}" + (f" pid {w['pid']}" if w["pid"] else "")
                                          for w in after))
        return 0
    return _guarded(body)


def cmd_restart(args: argparse.Namespace) -> int:
    if getattr(args, "program", None) not in (None, "web"):
        return cmd_program(args, "restart")

    def body() -> int:
        target = find_target(args)
        before = {w["slot"]: w["pid"] for w in fetch_status(target)["workers"]}
        _post(target, "restart")
        if args.no_wait:
            print("restart requested: workers are replaced one at a time")
            return 0
        if not wait_for(_rolled(target, before), args.timeout):
            raise Failed(f"the workers were not all replaced within {args.timeout:g}s; "
                         "see `python -m supervisor status` and the supervisor's log")
        after = fetch_status(target)["workers"]
        print("restarted: " + ", ".join(f"web.{w['slot']} pid {before.get(w['slot'])} -> {w['pid']}"
                                        for w in after))
        return 0
    return _guarded(body)


def _gone(target: Target) -> Callable[[], bool]:
    """True once the supervisor has exited (by its pid when known, else by its API going away)."""
    def check() -> bool:
        if target.record is not None:
            return not is_alive(target.record)
        try:
            request(target, "GET", "/livez", timeout=1.0)
        except NotRunning:
            return True
        return False
    return check


def cmd_stop(args: argparse.Namespace) -> int:
    if getattr(args, "program", None) is not None:
        return cmd_program(args, "stop")

    def body() -> int:
        target = find_target(args)
        _post(target, "stop")
        if args.no_wait:
            print("stop requested")
            return 0
        if not wait_for(_gone(target), args.timeout):
            raise Failed(f"the supervisor did not exit within {args.timeout:g}s")
        print("stopped" + (f": supervisor pid {target.record.pid} has exited" if target.record else ""))
        return 0
    return _guarded(body)


def _scaled(target: Target, workers: int) -> Callable[[], bool]:
    """True once exactly ``workers`` slots serve and no removed slot is still draining."""
    def check() -> bool:
        try:
            slots = fetch_status(target)["workers"]
        except (NotRunning, Refused):
            return False
        return len(slots) == workers and all(w["state"] == "running" for w in slots)
    return check


def cmd_scale_program(args: argparse.Namespace, name: str, instances: int) -> int:
    def body() -> int:
        target = find_target(args)
        _program_instances(target, name)  # exists
        code, answer = request(target, "POST", f"/programs/{name}/scale", payload={"instances": instances})
        if code != 202:
            raise Refused(_refusal(code, answer))
        if args.no_wait:
            print(f"scale {name} requested: {instances} instance(s)")
            return 0

        def settled(ws: list[dict[str, Any]]) -> bool:
            return len(ws) == instances and all(w["state"] in ("running", "completed") for w in ws)

        if not wait_for(_program_state(target, name, settled), args.timeout):
            raise Failed(f"{name} did not reach {instances} running instance(s) within {args.timeout:g}s")
        after = _program_instances(target, name)
        print(f"scaled {name} to {len(after)} instance(s)" + "".join(
            f", {name}.{w['slot']} pid {w['pid']}" for w in after))
        return 0
    return _guarded(body)


def cmd_scale(args: argparse.Namespace) -> int:
    if len(args.target) == 2:
        name, count = args.target
        try:
            instances = int(count)
        except ValueError:
            return _usage_error(f"scale: {count!r} is not a whole number of instances")
        return cmd_scale_program(args, name, instances)
    if len(args.target) != 1:
        return _usage_error("scale: expected N (web workers) or NAME N (a program's instances)")
    try:
        args.workers = _worker_count(args.target[0])
    except argparse.ArgumentTypeError as exc:
        return _usage_error(f"scale: {exc}")

    def body() -> int:
        target = find_target(args)
        code, answer = request(target, "POST", "/scale", payload={"workers": args.workers})
        if code != 202 or not isinstance(answer, dict) or answer.get("accepted") != "scale":
            if code < 300:
                raise _not_status_api(target, "/scale", f'{code} without {{"accepted": "scale"}}')
            raise Refused(_refusal(code, answer))
        if args.no_wait:
            print(f"scale requested: {args.workers} worker(s); new ones start, removed ones drain")
            return 0
        if not wait_for(_scaled(target, args.workers), args.timeout):
            raise Failed(f"{args.workers} worker(s) were not all serving within {args.timeout:g}s; "
                         "see `python -m supervisor status` and the supervisor's log")
        slots = fetch_status(target)["workers"]
        print(f"scaled to {len(slots)} worker(s): " + ", ".join(f"web.{w['slot']} pid {w['pid']}" for w in slots))
        return 0
    return _guarded(body)


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _worker_count(text: str) -> int:
    """A worker count in the range of ``[app] workers``."""
    lo, hi = field_bounds(AppSection, "workers")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{value} is out of range; expected {lo} to {hi} workers")
    return value


# ----- registration -------------------------------------------------------------------------

def _add_target_options(p: argparse.ArgumentParser) -> None:
    add_project_options(p, "supervisor.toml (and the runtime dir)")
    p.add_argument("--url", help="the status API's URL, instead of finding it through the state file")
    p.add_argument("--token-file", help="file holding the API token (default: <runtime dir>/status.token)")


def _seconds(text: str) -> float:
    """A finite, positive number of seconds (``nan`` would end every wait at once, ``inf`` never)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, positive number of seconds")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser("status", help="show the running supervisor's workers, database and reloads",
                            description="Exit code: 0 running and ready, 1 running but not ready, "
                                        "2 a file it needs cannot be trusted, 3 no supervisor running.")
    _add_target_options(status)
    status.add_argument("--json", action="store_true", help="print the /status document")
    status.set_defaults(func=cmd_status)

    for name, func, what, default_timeout in (
            ("restart", cmd_restart, "replace every worker, one at a time, without dropping requests "
                                     "(with NAME: stop, then start that program)", 120.0),
            ("stop", cmd_stop, "stop the running supervisor and its programs gracefully (with NAME: only "
                               "that program, which is not restarted)", 60.0),
            ("start", lambda args: cmd_program(args, "start"), "start a program stopped with `stop NAME`", 60.0)):
        p = sub.add_parser(name, help=what)
        _add_target_options(p)
        p.add_argument("program", nargs=None if name == "start" else "?", metavar="NAME",
                       help="a program of [programs] (web: the app)")
        p.add_argument("--no-wait", action="store_true", help="return once the request is accepted")
        p.add_argument("--timeout", type=_seconds, default=default_timeout,
                       help=f"seconds to wait for the effect (default {default_timeout:g})")
        p.set_defaults(func=func)

    scale = sub.add_parser("scale", help="run N workers: new ones start at once, removed ones drain "
                                         "(SIGTTIN/SIGTTOU add or remove one)")
    _add_target_options(scale)
    scale.add_argument("target", nargs="+", metavar="[NAME] N",
                       help="how many web workers to run (as [app] workers: 1 to 64), or NAME N: how many "
                            "instances of a program (0 to 64)")
    scale.add_argument("--no-wait", action="store_true", help="return once the request is accepted")
    scale.add_argument("--timeout", type=_seconds, default=120.0,
                       help="seconds to wait until exactly N workers serve (default 120)")
    scale.set_defaults(func=cmd_scale)
