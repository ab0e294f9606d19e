"""A raw ASGI callable (no framework) for the supervisor's real-process tests.

Routes:

* ``/pid``: ``{"pid": <worker pid>}``
* ``/slow?seconds=S``: prints ``slow request started`` to stdout (the supervisor relays it, so the
  test knows the request is in flight), then answers after ``S`` seconds
* ``/daemon?seconds=S&clean=1``: starts a daemon (double fork, ``setsid``, its pipes closed; with
  ``clean``, an empty environment) that sleeps ``S`` seconds, and returns its pid
* ``/nodelay``: the TCP_NODELAY option of this request's own connection socket
* ``/block?seconds=S``: blocks the whole worker (a synchronous sleep), so it cannot stop in time
* ``/spawn?seconds=S&session=1``: starts ``sleep S`` (default 60) in the worker's process group
  (or, with ``session``, in a session of its own; with ``inherit``, keeping every inheritable
  descriptor, as ``os.system`` does) and returns its pid

At startup it prints the value of the variable named by ``RAWAPP_PRINT_VAR``, and of those named
by the comma-separated ``RAWAPP_PRINT_FORMS`` in every form a careless app prints a secret in (to
prove the supervisor redacts secrets in relayed output).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _nodelay(receive: Receive) -> int | None:
    # ASGI hides the transport; uvicorn's `receive` is a bound method of its request cycle, which
    # holds it. Good enough for a test app that only ever runs under uvicorn.
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            name = os.environ.get("RAWAPP_PRINT_VAR")
            if name:
                print(f"rawapp: {name} is {os.environ.get(name)}", flush=True)
            for name in filter(None, os.environ.get("RAWAPP_PRINT_FORMS", "").split(",")):
                _print_forms(name, os.environ.get(name, ""))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# A classic daemon: fork, setsid, fork again, close the inherited pipes. The middle process exits,
# so the daemon is in no process group and no session of the worker's, and is re-parented to the
# nearest subreaper (the supervisor). With "clean", it also execs with an empty environment.
_DAEMON = """
import os, sys, time
w = int(sys.argv[1])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        for fd in (0, 1, 2):
            os.close(fd)
        if sys.argv[3] == "clean":
            # Close-on-exec: the reader's end of file then says the exec is done, so whoever
            # reads our pid sees the empty environment, never the one before the exec.
            os.set_inheritable(w, False)
            os.execve("/bin/sleep", ["sleep", sys.argv[2]], {})
        os.close(w)
        time.sleep(float(sys.argv[2]))
    os._exit(0)
"""


def _daemon(query: dict[str, list[str]]) -> int:
    """Start a daemon (see _DAEMON); return its pid once the process that started it has exited
    (and, with ``clean``, once the daemon has exec'd)."""
    r, w = os.pipe()
    starter = subprocess.Popen([sys.executable, "-c", _DAEMON, str(w), query.get("seconds", ["60"])[0],
                                "clean" if "clean" in query else "inherit"], pass_fds=(w,))
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        pid = int(pipe.read().decode())
    starter.wait()
    return pid


def _print_forms(name: str, value: str) -> None:
    """Every way a careless app prints a secret: as is (line by line if it has several), repr,
    JSON, bytes, inside a dict, and split in two across lines."""
    half = len(value) // 2
    print(f"rawapp: {name} plain {value}", flush=True)
    print(f"rawapp: {name} repr {value!r} dict {({name: value})}", flush=True)
    print(f"rawapp: {name} json {json.dumps(value)} {json.dumps({name: value}, ensure_ascii=False)}", flush=True)
    print(f"rawapp: {name} bytes {value.encode()!r}", flush=True)
    print(f"rawapp: {name} split {value[:half]}\n{value[half:]}", flush=True)
    print(f"rawapp: {name} printed", flush=True)


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path == "/pid":
        await _json(send, 200, {"pid": os.getpid()})
    elif path == "/slow":
        seconds = float(query.get("seconds", ["1"])[0])
        print("rawapp: slow request started", flush=True)
        await asyncio.sleep(seconds)
        await _json(send, 200, {"slept": seconds, "pid": os.getpid()})
    elif path == "/block":
        print("rawapp: blocking", flush=True)
        time.sleep(float(query.get("seconds", ["1"])[0]))
        await _json(send, 200, {"blocked": True})
    elif path == "/spawn":
        # ?session=1: the child leaves the worker's process group (a daemon), keeping stdout open.
        # ?inherit=1: like os.system, the child inherits every inheritable descriptor.
        child = subprocess.Popen(["sleep", query.get("seconds", ["60"])[0]],
                                 start_new_session="session" in query, close_fds="inherit" not in query)
        await _json(send, 200, {"pid": child.pid})
    elif path == "/daemon":
        await _json(send, 200, {"pid": _daemon(query)})
    elif path == "/nodelay":
        await _json(send, 200, {"nodelay": _nodelay(receive)})
    else:
        await _json(send, 404, {"error": "not found"})
    sys.stdout.flush()
