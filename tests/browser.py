"""A real headless Chromium driven over the DevTools protocol, for tests of pages that change by
themselves (live reload): the test reads the page with ``evaluate``, never navigates it again."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support import scaled, wait_until

CHROMIUM = shutil.which("chromium")


def running_in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """``CI`` set to a true value, as CI services (and this project's ``.ci/run``) set it."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def require_chromium() -> str:
    """Chromium's path; without it, skip (named in pytest's summary), but fail under ``CI=true``:
    a browser test that silently skips in CI proves nothing."""
    if CHROMIUM is not None:
        return CHROMIUM
    message = "needs Debian's chromium package (apt-get install chromium; .ci/run installs it)"
    if running_in_ci():
        pytest.fail(f"CI=true but chromium is missing: {message}", pytrace=False)
    pytest.skip(message)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


class Page:
    """One tab: ``navigate`` once, then ``evaluate`` JavaScript in whatever the page has become."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=scaled(30)))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    """A fresh headless Chromium with one blank tab; killed (its own process group only) at the end."""
    browser = require_chromium()
    shutil.rmtree(profile, ignore_errors=True)
    proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"
        port = wait_until(lambda: active.exists() and active.read_text().split("\n")[0], 60,
                          "chromium's DevTools port")

        def page_socket() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                targets = json.load(resp)
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)

        url = wait_until(page_socket, 30, "chromium's first tab")
        with connect(url, max_size=None, open_timeout=scaled(30)) as ws:
            yield Page(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own browser and its helper processes only
        proc.wait(scaled(10))
