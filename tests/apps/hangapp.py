"""A raw ASGI app that hangs, grows and starts slowly on request, for the health tests.

Routes:

* ``/`` and ``/pid``: ``{"pid": <worker pid>}``
* ``/block?seconds=S``: blocks the event loop in ``blocking_sleep`` (a synchronous ``time.sleep``);
  prints ``hangapp: blocking`` first, so the test knows the request arrived
* ``/grow?mb=N``: allocates N MiB and keeps them (the worker's resident memory grows)

At startup, ``HANGAPP_STARTUP_SECONDS`` blocks the lifespan startup that long (a slow start), and
``HANGAPP_PING_PORT`` starts a background thread that stays busy and answers ``pong <pid>`` to any
connection on that port: the thread-answered health check that a blocked event loop would fool.
A worker starting while the file ``HANGAPP_FAIL_IF_EXISTS`` names exists fails its startup.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_kept: list[bytearray] = []


def blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)  # the mistake under test: a synchronous call on the event loop


def _ping_server(port: int) -> None:
    """Answer every connection at once, from this thread, however the event loop is doing."""
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(f"pong {os.getpid()}\n".encode())


def _busy() -> None:
    while True:
        sum(range(10_000))  # a healthy background thread with work to do


async def _json(send: Send, body: object) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                blocking_sleep(float(os.environ.get("HANGAPP_STARTUP_SECONDS", "0")))
                failing = os.environ.get("HANGAPP_FAIL_IF_EXISTS")
                if failing and os.path.exists(failing):
                    await send({"type": "lifespan.startup.failed", "message": f"{failing} exists"})
                    return
                port = os.environ.get("HANGAPP_PING_PORT")
                if port:
                    threading.Thread(target=_ping_server, args=(int(port),), daemon=True).start()
                    threading.Thread(target=_busy, daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    if scope["path"] == "/block":
        print("hangapp: blocking", flush=True)
        blocking_sleep(float(query.get("seconds", ["60"])[0]))
    elif scope["path"] == "/grow":
        _kept.append(bytearray(int(query.get("mb", ["1"])[0]) * 1024 * 1024))  # zero-filled: touched, resident
    await _json(send, {"pid": os.getpid()})
