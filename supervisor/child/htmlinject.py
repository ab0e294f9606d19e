"""Live reload in the browser: the one ``<script>`` a development worker adds to its HTML pages.

The script opens the supervisor's live-reload event stream (``GET /livereload`` on the status
API, see :mod:`supervisor.reload.browser`) and reloads the page once the supervisor has seen the new
worker ready, swaps stylesheets in place when only CSS changed, and shows an overlay with the
error when a reload failed. The worker that served the page puts its pid in the script, so a page
served by a worker that was already replaced reloads as soon as the stream says so.

Only whole, uncompressed ``text/html`` documents are touched: a streamed body (more than one body
message) or a compressed one passes through byte for byte, as does every other type, a ``HEAD``
response, a body without ``</body>``, ``</html>`` or a leading ``<html`` (an HTML fragment, as
htmx swaps in) and a page whose Content-Security-Policy would block an inline script anyway.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.child.longlived import content_type

# uvicorn's error logger has a handler in the worker; the supervisor relays its lines.
logger = logging.getLogger("uvicorn.error")
OVERLAY_ID = "supervisor-livereload-overlay"
_TEXT_CHARSETS = ("", "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252")

SCRIPT = """(function () {
  var me = document.currentScript;
  if (!me || window.__supervisorLiveReload) return;
  var OVERLAY = "OVERLAY_ID";
  var source = new EventSource(me.getAttribute("data-events") + "?pid=" + me.getAttribute("data-pid"));
  window.__supervisorLiveReload = source;
  function data(e) { try { return JSON.parse(e.data); } catch (err) { return {}; } }
  function reload() { source.close(); window.location.reload(); }
  function clear() { var o = document.getElementById(OVERLAY); if (o) o.remove(); }
  function el(tag, css, text) {
    var node = document.createElement(tag); node.style.cssText = css;
    if (text) node.textContent = text;
    return node;
  }
  function show(f) {
    clear();
    var box = el("div", "position:fixed;inset:0;z-index:2147483647;overflow:auto;padding:24px;" +
      "background:rgba(24,24,27,.96);color:#f4f4f5;font:14px/1.5 ui-monospace,Menlo,Consolas,monospace");
    box.id = OVERLAY; box.setAttribute("role", "alert");
    box.appendChild(el("div", "color:#f87171;font-size:16px;font-weight:bold", "Reload failed: " + (f.error || "")));
    box.appendChild(el("div", "color:#a1a1aa;margin:4px 0 16px",
      "Still serving the previous version; this page follows the next edit that works." +
      (f.files && f.files.length ? " Changed: " + f.files.join(", ") : "")));
    box.appendChild(el("pre", "white-space:pre-wrap;margin:0", (f.output || []).join("\\n")));
    var close = el("button", "position:absolute;top:16px;right:16px;font:inherit;cursor:pointer", "Dismiss");
    close.onclick = clear;
    box.appendChild(close);
    (document.body || document.documentElement).appendChild(box);
  }
  function swap(files) {
    var names = (files || []).map(function (f) { return f.split("/").pop(); });
    var links = Array.prototype.slice.call(document.querySelectorAll('link[rel~="stylesheet"][href]'));
    var hits = links.filter(function (l) {
      return names.indexOf(new URL(l.href, location.href).pathname.split("/").pop()) >= 0;
    });
    (hits.length ? hits : links).forEach(function (old) {
      var url = new URL(old.href, location.href);
      url.searchParams.set("livereload", String(Date.now()));
      var fresh = old.cloneNode(false);
      fresh.href = url.href;
      fresh.onload = fresh.onerror = function () { old.remove(); };
      old.parentNode.insertBefore(fresh, old.nextSibling);
    });
  }
  source.addEventListener("hello", function (e) {
    var d = data(e);
    if (d.stale) reload(); else if (d.failure) show(d.failure); else clear();
  });
  source.addEventListener("reload", reload);
  source.addEventListener("css", function (e) { swap(data(e).files); });
  source.addEventListener("failed", function (e) { show(data(e)); });
})();""".replace("OVERLAY_ID", OVERLAY_ID)


def script_tag(events_url: str, pid: int) -> bytes:
    return (f'<script data-supervisor-livereload data-events="{html.escape(events_url)}" '
            f'data-pid="{pid}">{SCRIPT}</script>').encode()


def insert_script(body: bytes, tag: bytes) -> bytes | None:
    """``body`` with ``tag`` before its last ``</body>`` (else ``</html>``, else at the end of a
    document that starts with ``<html`` or a doctype); None for a fragment."""
    lowered = body.lower()
    for closing in (b"</body>", b"</html>"):
        at = lowered.rfind(closing)
        if at >= 0:
            return body[:at] + tag + body[at:]
    if lowered.lstrip().startswith((b"<!doctype html", b"<html")):
        return body + tag
    return None


def _headers(message: Message) -> dict[bytes, bytes]:
    return {bytes(k).lower(): bytes(v) for k, v in message.get("headers", ())}


def skip_reason(start: Message) -> str | None:
    """Why a response must pass through untouched: "" for a plain reason not worth a log line,
    a phrase for one that is, None when the script may be added."""
    status = start.get("status", 200)
    if status in (204, 304) or status < 200:
        return ""
    if content_type(start) != b"text/html":  # most responses: decided without reading every header
        return ""
    headers = _headers(start)
    params = headers.get(b"content-type", b"").partition(b";")[2]
    charset = params.lower().partition(b"charset=")[2].split(b";")[0].strip(b" \"'").decode("latin-1")
    if charset not in _TEXT_CHARSETS:
        return f"its charset is {charset}"
    encoding = headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding != b"identity":
        return f"it is compressed (Content-Encoding: {encoding.decode('latin-1')})"
    if b"content-security-policy" in headers:
        return "its Content-Security-Policy would block an inline script"
    return None


def is_navigation(scope: Scope) -> bool:
    """A browser loading a page (``Sec-Fetch-Mode: navigate``), with a safe method."""
    if scope.get("method") != "GET":
        return False
    return any(k == b"sec-fetch-mode" and v == b"navigate" for k, v in scope.get("headers", ()))


async def send_again(scope: Scope, send: Send) -> None:
    target = scope.get("raw_path") or scope.get("path", "/").encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    await send({"type": "http.response.start", "status": 307,
                "headers": [(b"location", target), (b"cache-control", b"no-store"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class LiveReloadScript:
    """ASGI middleware adding :func:`script_tag` to whole HTML documents (development only)."""

    def __init__(self, app: ASGIApp, events_url: str, pid: int,
                 draining: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.tag = script_tag(events_url, pid)
        self.draining = draining
        self._explained: set[str] = set()

    def _explain(self, scope: Scope, reason: str) -> None:
        if reason and reason not in self._explained:  # once per reason and worker
            self._explained.add(reason)
            logger.info("live reload: no script added to %s %s: %s; the browser will not follow reloads "
                        "on such pages", scope.get("method", ""), scope.get("path", ""), reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        if self.draining() and is_navigation(scope):
            # A browser reloading for the new version over its kept-alive connection to this
            # draining worker: send it to the same URL again; the new connection that takes
            # (this one closes) reaches the successor, instead of showing the old version.
            await send_again(scope, send)
            return
        held: Message | None = None
        passing = False

        async def wrapped(message: Message) -> None:
            nonlocal held, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                reason = skip_reason(message)
                if reason is None:
                    held = message  # until the body shows whether it can be rewritten
                else:
                    self._explain(scope, reason)
                    passing = True
                    await send(message)
            elif held is not None and message["type"] == "http.response.body":
                start, held, passing = held, None, True
                body = message.get("body", b"")
                new = None if message.get("more_body", False) else insert_script(body, self.tag)
                if new is None:  # streamed, or a fragment: byte for byte
                    await send(start)
                    await send(message)
                    return
                headers = [(k, v) for k, v in start.get("headers", ()) if bytes(k).lower() != b"content-length"]
                headers.append((b"content-length", str(len(new)).encode()))
                await send({**start, "headers": headers})
                await send({**message, "body": new})
            else:
                await send(message)

        await self.app(scope, receive, wrapped)
