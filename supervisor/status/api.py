"""The supervisor's own HTTP API, served inside the supervisor process (never on the worker's port).

Routes::

    GET  /         dashboard (HTML, refreshes itself)
    GET  /status   the status document (JSON, see supervisor.status.document)
    GET  /livez    200 while the supervisor's event loop answers
    GET  /readyz   200 when a worker is ready and the database is fine, else 503
    GET  /metrics  Prometheus text format
    POST /restart  graceful rolling restart            (bearer token)
    POST /stop     graceful stop; ``up`` exits with 0  (bearer token)
    POST /scale    {"workers": N}: run N workers       (bearer token)

Access rules, unlike PM2, circus or supervisord: mutating requests always need the bearer token
(generated at start unless ``[status] token`` is set, written to ``<runtime dir>/status.token``
with mode 0600, compared in constant time). On loopback, reads are open, but only under a
loopback ``Host`` header, so a web page cannot read them through DNS rebinding. Beyond loopback
every route except ``/livez`` and ``/readyz`` needs the token; reads also accept it as the
password of HTTP Basic auth, so a browser can open the dashboard. POSTs accept only the bearer
header, which browsers never attach by themselves, so a cross-site form cannot restart anything.
Connections are capped and must send a request within a deadline (see supervisor.status.limits):
anyone who can connect can hold connections, token or not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hmac
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.server import ServerState

from supervisor import __version__
from supervisor.config.settings import Settings
from supervisor.config.toml import AppSection, field_bounds
from supervisor.contract import (
    MAX_WORKERS,
    MIN_WORKERS,
    PROGRAM_ACTIONS,
    Command,
    Plugin,
    ProgramCommand,
    Scale,
    SupervisorView,
)
from supervisor.errors import PortError
from supervisor.listen.ports import bind_listener, describe_holder, display_url, is_loopback, permission_denied
from supervisor.secrets import Redactor
from supervisor.state import SupervisorState
from supervisor.status.dashboard import render_dashboard
from supervisor.status.document import ProcessSampler, readiness, status_document
from supervisor.status.limits import bounded
from supervisor.status.metrics import SupervisorMetrics
from supervisor.status.statefile import TOKEN_NAME, StateRecord, claim, generate_token, release

logger = logging.getLogger("supervisor")

PROBES = ("/livez", "/readyz")
MAX_BODY = 4096  # bytes of a POST body: {"workers": 3} needs a dozen
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    """Apply ``redact`` to every string in a JSON-ready tree (keys too).

    Strings only: masking the serialised text could turn a short numeric secret inside a pid
    into invalid JSON.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, redact) for v in value]
    return value


def _host_name(header: str) -> str:
    """``127.0.0.1:8787`` -> ``127.0.0.1``; ``[::1]:8787`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Access:
    """Who may do what, given where the API listens and the token."""

    def __init__(self, token: str, listen_host: str) -> None:
        self._token = token.encode()
        self.loopback = is_loopback(listen_host)

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def has_token(self, request: Request, allow_basic: bool) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self._matches(credential.strip())
        if scheme.lower() == "basic" and allow_basic:
            try:
                _, _, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self._matches(password)
        return False

    def refusal(self, request: Request) -> Response | None:
        """None when the request may proceed, else the response that refuses it."""
        path = request.url.path
        if path in PROBES:
            return None
        if request.method == "POST":
            if self.has_token(request, allow_basic=False):
                return None
            return _unauthorized("this action needs the bearer token from the status.token file", "Bearer")
        if self.has_token(request, allow_basic=True):
            return None
        if not self.loopback:
            return _unauthorized("this API listens beyond loopback; send the token", 'Basic realm="supervisor"')
        if _host_name(request.headers.get("host", "")) not in _LOOPBACK_NAMES:
            return JSONResponse({"error": "unexpected Host header; use 127.0.0.1 or send the token"},
                                status_code=403)
        return None


def _unauthorized(message: str, challenge: str) -> Response:
    return JSONResponse({"error": "unauthorized: " + message}, status_code=401,
                        headers={"WWW-Authenticate": challenge})


class _Guard:
    """ASGI middleware: every HTTP request passes :meth:`Access.refusal` before any route runs."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.access.refusal(Request(scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class StatusAPI:
    """The Starlette app for one supervisor, plus the service that serves it."""

    def __init__(self, sup: SupervisorView, sock: socket.socket, token: str, host: str) -> None:
        self.sup = sup
        self.sock = sock
        self.token = token
        self.host = host
        self.port = int(sock.getsockname()[1])
        self.url = display_url(host, self.port)
        self.access = Access(token, host)
        self.metrics = SupervisorMetrics(sup, sup.redact)
        self.sampler = ProcessSampler()
        self.app = self._build_app()

    # ----- the app --------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route("/", self.dashboard, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            Route("/livez", self.livez, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/restart", self.restart, methods=["POST"]),
            Route("/stop", self.stop, methods=["POST"]),
            Route("/programs/{program}/scale", self.scale_program, methods=["POST"]),
            Route("/programs/{program}/{action}", self.program_action, methods=["POST"]),
            Route("/scale", self.scale, methods=["POST"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(_Guard, access=self.access)])

    def add_route(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        """Serve one more GET route (a plugin's, such as live reload's event stream)."""
        self.app.router.routes.append(Route(path, endpoint, methods=["GET"]))

    def plugin(self) -> Plugin:
        return Plugin("status", service=self.serve)

    def document(self) -> dict[str, Any]:
        sup = self.sup
        self.sampler.forget_except(sup.worker_pids)
        doc = status_document(sup, sup.wall(), self.sampler, os.getpid(), self.url)
        return redact_tree(doc, sup.redact)  # type: ignore[no-any-return]

    async def status(self, request: Request) -> Response:
        return Response(json.dumps(self.document(), indent=2) + "\n", media_type="application/json")

    async def dashboard(self, request: Request) -> Response:
        return HTMLResponse(render_dashboard(self.document()), headers={"Cache-Control": "no-store"})

    async def livez(self, request: Request) -> Response:
        # Answering at all proves the supervisor's event loop runs: this app runs on it.
        return JSONResponse({"alive": True, "state": self.sup.state})

    async def readyz(self, request: Request) -> Response:
        ready, why = readiness(self.sup)
        return JSONResponse({"ready": ready, "reason": why}, status_code=200 if ready else 503)

    async def metrics_text(self, request: Request) -> Response:
        # Label values are redacted by the collector; masking this text could corrupt numbers.
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def restart(self, request: Request) -> Response:
        return self._post(Command.RESTART)

    async def stop(self, request: Request) -> Response:
        return self._post(Command.STOP)

    async def program_action(self, request: Request) -> Response:
        name, action = request.path_params["program"], request.path_params["action"]
        if action not in PROGRAM_ACTIONS:
            return JSONResponse({"error": f"unknown action {action!r}; expected one of "
                                          f"{', '.join(PROGRAM_ACTIONS)}"}, status_code=404)
        if name != "web" and name not in self.sup.programs:
            return JSONResponse({"error": f"no program {name!r}; expected one of "
                                          f"{', '.join(['web', *self.sup.programs])}"}, status_code=404)
        if name == "web" and action != "restart":
            return JSONResponse({"error": "web is the app: restart it, or stop the supervisor"}, status_code=409)
        if self.sup.state == SupervisorState.STOPPING:
            return JSONResponse({"error": "the supervisor is stopping"}, status_code=409)
        logger.info("status: %s %s requested through the API", action, name)
        self.sup.post(ProgramCommand(action, name))
        return JSONResponse({"accepted": action, "program": name}, status_code=202)

    async def scale(self, request: Request) -> Response:
        """``{"workers": N}``: run N workers; new ones start at once, removed ones drain."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"the body is over {MAX_BODY} bytes; expected {{\"workers\": N}}"},
                                    status_code=413)
        workers, problem = scale_request(body)
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        if self.sup.state == SupervisorState.STOPPING:
            return JSONResponse({"error": "the supervisor is stopping"}, status_code=409)
        logger.info("status: scale to %d worker(s) requested through the API", workers)
        self.sup.post(Scale(workers))
        return JSONResponse({"accepted": "scale", "workers": workers}, status_code=202)

    async def scale_program(self, request: Request) -> Response:
        """``{"instances": N}``: run N instances of a program (0 stops it without forgetting it)."""
        name = request.path_params["program"]
        if name == "web":
            return JSONResponse({"error": 'scale web with POST /scale {"workers": N}'}, status_code=409)
        if name not in self.sup.programs:
            return JSONResponse({"error": f"no program {name!r}; expected one of "
                                          f"{', '.join(self.sup.programs) or 'none'}"}, status_code=404)
        body = await request.body() if int(request.headers.get("content-length", "0") or 0) <= MAX_BODY else b""
        instances, problem = instances_request(body)
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        if self.sup.state == SupervisorState.STOPPING:
            return JSONResponse({"error": "the supervisor is stopping"}, status_code=409)
        logger.info("status: scale %s to %d instance(s) requested through the API", name, instances)
        self.sup.post(Scale(instances, program=name))
        return JSONResponse({"accepted": "scale", "program": name, "instances": instances}, status_code=202)

    def _post(self, action: Command) -> Response:
        if self.sup.state == SupervisorState.STOPPING:
            return JSONResponse({"error": "the supervisor is stopping"}, status_code=409)
        logger.info("status: %s requested through the API", action)
        self.sup.post(action)
        return JSONResponse({"accepted": str(action)}, status_code=202)

    # ----- the service ----------------------------------------------------------------------

    def record(self) -> StateRecord:
        settings = self.sup.settings
        return StateRecord(pid=os.getpid(), started_at=self.sup.started_at, status_url=self.url,
                           url=self.sup.url, token_file=str(settings.runtime_dir / TOKEN_NAME),
                           version=__version__, project_dir=str(settings.project_dir))

    async def serve(self) -> None:
        """The plugin's service: write the state file, serve until cancelled, clean up."""
        sup = self.sup
        record = self.record()
        runtime_dir = sup.settings.runtime_dir
        try:
            note = claim(runtime_dir, record, self.token)
        except OSError as exc:
            logger.error("status: cannot write the state and token files in %s: %s (%s); the CLI will "
                         "need --url", runtime_dir, exc.strerror, exc.filename)
            where = ("the token file could not be written: set [status] token to use restart and stop"
                     if not self.sup.settings.config.status.token else "token from [status] token")
        else:
            if note:
                logger.warning("status: %s", note)
            where = f"token in {record.token_file}"
        logger.info("status: API and dashboard on %s (%s)", self.url, where)
        cfg = self.sup.settings.config.status
        # Bounded connections (see supervisor.status.limits); backlog: how many connections one
        # wake-up of asyncio's accept loop takes, and so how many errors one wake-up can log.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, backlog=64,
                                http=bounded(cfg.max_connections, cfg.header_timeout))
        server = _EmbeddedServer(config)
        task = asyncio.ensure_future(server.serve(sockets=[self.sock]))
        try:
            with _uvicorn_logs_to(logger):
                await asyncio.shield(task)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 3)
            self.sock.close()
            release(runtime_dir, record)


def scale_request(body: bytes) -> tuple[int, str | None]:
    """The worker count a ``POST /scale`` body asks for, or what is wrong with it. Pure.

    >>> scale_request(b'{"workers": 3}')
    (3, None)
    """
    expected = f'expected a JSON object such as {{"workers": 3}}, with {MIN_WORKERS} to {MAX_WORKERS} workers'
    try:
        data = json.loads(body or b"null")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return 0, f"the body is not JSON; {expected}"
    if not isinstance(data, dict):
        return 0, f"the body is not a JSON object; {expected}"
    unknown = sorted(set(data) - {"workers"})
    if unknown:
        return 0, f"unknown key {unknown[0]!r}; {expected}"
    workers = data.get("workers")
    if isinstance(workers, bool) or not isinstance(workers, int):
        return 0, f"workers: {workers!r} is not an integer; {expected}" if "workers" in data else \
            f"workers is missing; {expected}"
    if not MIN_WORKERS <= workers <= MAX_WORKERS:
        return 0, f"workers: {workers} is out of range; {expected}"
    return workers, None


def instances_request(body: bytes) -> tuple[int, str | None]:
    """The instance count a ``POST /programs/NAME/scale`` body asks for, or what is wrong. Pure.

    >>> instances_request(b'{"instances": 0}')
    (0, None)
    """
    hi = field_bounds(AppSection, "workers")[1]
    expected = f'expected a JSON object such as {{"instances": 2}}, with 0 to {hi} instances'
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return 0, f"the body is not JSON; {expected}"
    count = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(data, dict) or set(data) != {"instances"} or isinstance(count, bool) \
            or not isinstance(count, int) or not 0 <= count <= hi:
        return 0, f"the body is not a valid request; {expected}"
    return count, None


class _DatedState(ServerState):
    """uvicorn's shared server state, whose default headers carry a Date made when a response
    asks for them, instead of one a timer refreshes every second whether anyone asks or not."""

    def __init__(self) -> None:
        self._others: list[tuple[bytes, bytes]] = []
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._headers = [(b"date", formatdate(now, usegmt=True).encode()), *self._others]
        return self._headers

    @default_headers.setter
    def default_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._others = [header for header in headers if header[0] != b"date"]
        self._second = -1


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling (the supervisor owns SIGINT and SIGTERM), and without
    its ten wake-ups a second at rest."""

    _stop: asyncio.Event | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.server_state = _DatedState()

    @property
    def should_exit(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if self._stop is None:
            self._stop = asyncio.Event()
        if value:
            self._stop.set()
        else:
            self._stop.clear()

    async def main_loop(self) -> None:
        """uvicorn's loop wakes every 0.1 s to refresh the Date header and look for a stop; here
        the header is made on demand (:class:`_DatedState`) and a stop wakes the loop itself."""
        stop = self._stop or asyncio.Event()  # made by __init__ (should_exit = False)
        while not await self.on_tick(0):
            await stop.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass


@contextlib.contextmanager
def _uvicorn_logs_to(target: logging.Logger) -> Iterator[None]:
    """Send uvicorn's error log through the supervisor's (redacting) handlers while serving."""
    source = logging.getLogger("uvicorn.error")
    saved = (source.handlers[:], source.propagate, source.level)
    source.handlers[:] = target.handlers
    source.propagate = False
    source.setLevel(logging.WARNING)
    try:
        yield
    finally:
        source.handlers[:], source.propagate = saved[0], saved[1]
        source.setLevel(saved[2])


def bind_status_socket(host: str, port: int, production: bool) -> tuple[socket.socket, str]:
    """Bind the API's port; return the socket and a warning for the log (or ``""``).

    A taken port fails ``up`` in production mode (probes would hit the wrong process); in
    development mode the API moves to a free port and says so, like the webapp's port does.
    """
    try:
        sock = bind_listener(host, port, backlog=64)
        note = ""
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES) or port == 0:
            raise PortError(f"status API: cannot listen on {host}:{port}: {exc.strerror}; "
                            "check [status] host and port") from None
        if exc.errno == errno.EACCES and production:
            raise PortError("status API: " + permission_denied(host, port, "[status] port")) from None
        held = "not allowed (permission denied)" if exc.errno == errno.EACCES else describe_holder(port)
        if production:
            raise PortError(f"status API: port {port} on {host} is {held}; set [status] port to a free "
                            "port, 0 for any free port, or enabled = false") from None
        sock = _bind_any(host)
        note = (f"status API: port {port} on {host} is {held}; using port {sock.getsockname()[1]} "
                "instead (set [status] port to choose another)")
    return sock, note


def _bind_any(host: str) -> socket.socket:
    try:
        return bind_listener(host, 0, backlog=64)
    except OSError as exc:
        raise PortError(f"status API: cannot listen on {host}: {exc.strerror}") from None


@dataclass(frozen=True)
class StatusListener:
    """The API's bound socket, before the API itself exists (workers need its URL first)."""

    sock: socket.socket
    host: str

    @property
    def url(self) -> str:
        return display_url(self.host, int(self.sock.getsockname()[1]))


def bind_status_api(settings: Settings) -> StatusListener | None:
    """Bind the API's port; None when ``[status] enabled = false``. Raises PortError (exit 4)."""
    cfg = settings.config.status
    if not cfg.enabled:
        return None
    sock, note = bind_status_socket(cfg.host, cfg.port, settings.production)
    if note:
        logger.warning("%s", note)
    return StatusListener(sock, cfg.host)


def build_status_api(sup: SupervisorView, listener: StatusListener, redactor: Redactor) -> StatusAPI:
    """The API on ``listener``; a generated token joins ``redactor``'s secrets, masked like every other."""
    token = sup.settings.config.status.token or generate_token()
    redactor.add([token])
    return StatusAPI(sup, listener.sock, token, listener.host)
