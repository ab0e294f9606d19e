"""The uvicorn internals the worker's drain relies on, checked against the installed uvicorn.

``supervisor.child.worker.ReportingServer.shutdown`` reaches into ``server_state.connections``, each
connection's ``cycle`` (``keep_alive``, ``response_started``, ``response_complete``,
``default_headers``) and ``server_state.default_headers``. pyproject.toml bounds the uvicorn
version; this test fails loudly, naming what changed, if a release inside the bound moves them.
``supervisor.child.protocol.CleanH11Protocol`` relies on ``send_400_response`` and the cycle's
``disconnected`` and ``message_event``: its test fails if uvicorn changes them. Both run against
uvicorn's two HTTP protocols, h11 and httptools (what ``[app] http = "auto"`` picks when installed),
and the drain's "stop accepting" against both event loops, asyncio's and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from supervisor.child.accepting import pause_accepting, reopen, resume_accepting
from supervisor.child.gate import Gate
from supervisor.child.protocol import http_protocol
from supervisor.child.worker import ReportingServer

PROTOCOLS = pytest.mark.parametrize("protocol", ["h11", "httptools"])


def worker_protocol(name: str) -> type[asyncio.Protocol]:
    """The protocol class a worker uses for ``[app] http = name`` (httptools: uvicorn[standard])."""
    if name == "httptools":
        pytest.importorskip("httptools", reason="httptools (uvicorn[standard]) is in the test extra")
    http = http_protocol(name)
    assert http.__name__ == {"h11": "CleanH11Protocol", "httptools": "CleanHttpToolsProtocol"}[name]
    return http


@pytest.mark.timeout(20)
@pytest.mark.asyncio
@PROTOCOLS
async def test_a_request_in_flight_exposes_the_connection_and_cycle_attributes_the_drain_uses(protocol: str) -> None:
    in_handler = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        in_handler.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    read_fd, write_fd = socket.socketpair()
    config = uvicorn.Config(app, loop="asyncio", lifespan="off", log_level="warning", http=worker_protocol(protocol))
    server = ReportingServer(config, write_fd.detach())
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # poll interval: uvicorn offers no "started" event
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await asyncio.wait_for(in_handler.wait(), 10)

        state: Any = server.server_state
        missing = [name for name in ("connections", "tasks", "default_headers") if not hasattr(state, name)]
        assert not missing, f"uvicorn's ServerState lost {missing}: the worker's drain needs updating"
        (connection,) = list(state.connections)
        cycle = getattr(connection, "cycle", None)
        assert cycle is not None, "uvicorn's protocol no longer keeps the request cycle as .cycle"
        missing = [name for name in ("keep_alive", "response_started", "response_complete", "default_headers")
                   if not hasattr(cycle, name)]
        assert not missing, f"uvicorn's RequestResponseCycle lost {missing}: the worker's drain needs updating"
        assert (cycle.response_started, cycle.response_complete) == (False, False)
        assert isinstance(state.default_headers, list) and isinstance(cycle.default_headers, list)

        release.set()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
        read_fd.close()


@pytest.mark.timeout(20)
@pytest.mark.asyncio
@PROTOCOLS
async def test_a_malformed_body_is_a_400_without_an_exception_in_the_log(
        caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    """CleanH11Protocol: an app answering a request whose body h11 then rejects gets no h11 error;
    under both protocols the app's own response is dropped, not logged as served."""
    done: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # Answers without reading the body, as a dashboard or a health check does.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        done.append(True)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # log_config=None: uvicorn's loggers propagate to caplog.
    config = uvicorn.Config(app, loop="asyncio", lifespan="off", log_config=None, http=worker_protocol(protocol))
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # poll interval: uvicorn offers no "started" event
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        # The headers and a chunk size that is not hexadecimal, in one segment.
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        while not done:
            await asyncio.sleep(0.01)  # poll interval: the app's task ends after the 400
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
    assert "Exception in ASGI application" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.name == "uvicorn.access" and " 200" in r.getMessage()], caplog.text


@pytest.mark.timeout(20)
@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_worker_that_stops_accepting_leaves_new_connections_to_the_socket_it_shares(loop_name: str) -> None:
    """pause_accepting on each loop: the connections accepted go on, a new one waits for the successor;
    and accepting resumes."""
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop (uvicorn[standard]) is in the test extra")
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    address = listener.getsockname()[:2]  # uvloop takes over the listener's descriptor, closed with the server
    successor = socket.socket(fileno=os.dup(listener.fileno()))  # the same socket, as another process has it
    accepted: list[asyncio.Transport] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            accepted[0].write(data)

    async def scenario() -> None:
        server = await loop.create_server(Echo, sock=listener)
        first = socket.create_connection(address, timeout=5)
        while not accepted:
            await asyncio.sleep(0.01)  # poll interval: the accept happens on the loop
        copies = pause_accepting(loop, [server])
        assert bool(copies) == (loop_name == "uvloop")  # uvloop: the server closed, its socket copied
        second = socket.create_connection(address, timeout=5)
        successor.settimeout(5)
        taken, _ = await loop.run_in_executor(None, successor.accept)  # the backlog kept it for the successor
        taken.close()
        assert len(accepted) == 1, "the paused worker accepted a connection after it stopped accepting"
        first.sendall(b"ping")
        assert await loop.run_in_executor(None, first.recv, 4) == b"ping", "the accepted connection went on"

        # And it takes connections again (a worker whose successor failed at its request quota).
        if copies:
            servers = await reopen(loop, copies, Echo, 16)
        else:
            resume_accepting([server])
            servers = [server]
        third = socket.create_connection(address, timeout=5)
        while len(accepted) < 2:
            await asyncio.sleep(0.01)  # poll interval: the accept happens on the loop
        for sock in (first, second, third):
            sock.close()
        for each in (server, *servers):
            each.close()

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    finally:
        loop.close()
        successor.close()
        listener.close()


@pytest.mark.timeout(20)
@pytest.mark.asyncio
@pytest.mark.parametrize("request_bytes", [
    b"GET /\r\n\r\n",  # HTTP/0.9: no version
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Many: " + b"a" * 3000 + b"\r\n" * 1 + b"X-More: b\r\n" * 2000,
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Drip: " + b"a" * 300_000,  # never ends
], ids=["http-0.9", "huge-header", "huge-url", "many-headers", "head-never-ends"])
async def test_what_h11_refuses_httptools_refuses_with_a_400(request_bytes: bytes) -> None:
    """h11 refuses these (a 400, or a close; the long URL when it arrives in pieces); llhttp would hand
    them to the app: the worker's gate (a whole head) and CleanHttpToolsProtocol (a head still
    arriving) refuse them with a 400."""
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reached.append(scope["http_version"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(Gate(app, app), loop="asyncio", lifespan="off", log_level="error",
                            http=worker_protocol("httptools"))
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # poll interval: uvicorn offers no "started" event
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        for start in range(0, len(request_bytes), 8192):  # in pieces, as a slow client sends it
            writer.write(request_bytes[start:start + 8192])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:  # the 400 and then a reset for the unread rest: refused all the same
            answer = b"reset"
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ") or answer == b"reset", answer
    assert reached == [], "the app was handed a request h11 refuses"
