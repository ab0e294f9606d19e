"""A raw ASGI app for the systemd and container tests.

Routes:

* ``/pid`` and the rest of :mod:`rawapp`
* ``/env``: the systemd variables (``NOTIFY_SOCKET``, ``WATCHDOG_*``, ``LISTEN_*``) the worker sees
* ``/orphan?seconds=S``: runs ``sh -c 'sleep S & echo $!'``: the shell exits at once, leaving its
  ``sleep`` an orphan; answers ``{"pid": <orphan pid>}``
* ``/exit?code=N``: answers, then the worker exits with code N

``SDAPP_STARTUP_DELAY`` (seconds) delays the lifespan startup, so a ``READY=1`` sent before the
app answers would be caught.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any
from urllib.parse import parse_qs

from rawapp import Receive, Send, _json  # tests/apps is the app directory, so on sys.path
from rawapp import app as rawapp

SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def _orphan(seconds: float) -> int:
    out = subprocess.run(["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await asyncio.sleep(float(os.environ.get("SDAPP_STARTUP_DELAY", "0")))
        await rawapp(scope, receive, send)
        return
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path == "/env":
        await _json(send, 200, {"names": sorted(n for n in os.environ if n.startswith(SYSTEMD_VARIABLES))})
    elif path == "/orphan":
        await _json(send, 200, {"pid": _orphan(float(query.get("seconds", ["1"])[0]))})
    elif path == "/exit":
        code = int(query.get("code", ["1"])[0])
        await _json(send, 200, {"exiting": code})
        asyncio.get_running_loop().call_later(0.05, os._exit, code)
    else:
        await rawapp(scope, receive, send)  # /pid and the rest
