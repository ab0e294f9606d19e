"""Pure units of live reload: state snapshots to browser events, the script injection, the origins."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message

from supervisor.child.htmlinject import LiveReloadScript, insert_script, script_tag, skip_reason
from supervisor.reload.browser import Event, EventTracker, Snapshot, app_origins, only_stylesheets
from supervisor.state import SupervisorState

RUNNING = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({100}))


def test_reload_event_only_once_the_reload_count_goes_up() -> None:
    tracker = EventTracker(RUNNING)
    # The rolling restart in progress: new worker starting, then serving, state back to running.
    assert tracker.observe(Snapshot(state=SupervisorState.RELOADING, serving=frozenset({100}), files=("app.py",))) == []
    assert tracker.observe(Snapshot(state=SupervisorState.RELOADING, serving=frozenset({200}), files=("app.py",))) == []
    assert tracker.observe(Snapshot(state=SupervisorState.RUNNING, serving=frozenset({200}), files=("app.py",))) == []
    done = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({200}), reloads=1, files=("app.py",))
    assert tracker.observe(done) == [Event("reload", {"files": ["app.py"]})]
    assert tracker.observe(done) == [], "an unrelated change repeats nothing"


def test_failed_reload_carries_error_output_and_files_and_stays_current_for_new_pages() -> None:
    tracker = EventTracker(RUNNING)
    failed = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({100}), failures=1, error="a new worker failed",
                      output=("Traceback", "SyntaxError: '(' was never closed"), files=("app.py",))
    assert tracker.observe(failed) == [Event("failed", {
        "error": "a new worker failed", "output": ["Traceback", "SyntaxError: '(' was never closed"],
        "files": ["app.py"]})]
    hello = tracker.hello(100)
    assert hello.data["stale"] is False and hello.data["failure"]["error"] == "a new worker failed"
    # The fix: a reload event, and a page opened now shows no overlay.
    fixed = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({300}), reloads=1, failures=1, files=("app.py",))
    assert [e.name for e in tracker.observe(fixed)] == ["reload"]
    assert tracker.hello(300).data == {"stale": False, "failure": None}


def test_a_failure_after_a_failure_is_reported_again() -> None:
    tracker = EventTracker(RUNNING)
    first = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({100}), failures=1, error="invalid configuration")
    tracker.observe(first)
    again = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({100}), failures=2, error="invalid configuration")
    assert [e.name for e in tracker.observe(again)] == ["failed"]


def test_stylesheet_changes_give_a_css_event_without_a_reload() -> None:
    tracker = EventTracker(RUNNING)
    swapped = Snapshot(state=SupervisorState.RUNNING, serving=frozenset({100}), stylesheets=1,
                       stylesheet_files=("static/site.css",))
    assert tracker.observe(swapped) == [Event("css", {"files": ["static/site.css"]})]


@pytest.mark.parametrize("snap, pid, stale", [
    (RUNNING, 100, False),
    (RUNNING, 99, True),  # served by a worker that was replaced meanwhile
    (RUNNING, None, False),
    (Snapshot(state=SupervisorState.RELOADING, serving=frozenset({100})), 99, False),  # wait for the reload event
    (Snapshot(state=SupervisorState.FATAL), 99, False),  # nothing serves: reloading would show the 503
])
def test_hello_says_whether_the_page_is_stale(snap: Snapshot, pid: int | None, stale: bool) -> None:
    assert EventTracker(snap).hello(pid).data["stale"] is stale


def test_event_framing_is_one_data_line() -> None:
    event = Event("failed", {"output": ["line 1", "line 2\nstill 2"]})
    raw = event.encode()
    assert raw.startswith(b"event: failed\ndata: {") and raw.endswith(b"}\n\n") and raw.count(b"\n") == 3
    assert json.loads(raw.split(b"data: ", 1)[1]) == event.data


def test_app_origins_cover_the_loopback_names_of_the_app_port() -> None:
    assert app_origins("http://127.0.0.1:8000") == {
        "http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"}
    assert "http://[::1]:8001" in app_origins("http://[::1]:8001")
    assert "http://127.0.0.1:8001" not in app_origins("http://127.0.0.1:8000")


def test_only_stylesheets() -> None:
    assert only_stylesheets({"/p/static/a.css", "/p/b.css"})
    assert not only_stylesheets({"/p/static/a.css", "/p/app.py"})
    assert not only_stylesheets(set())


TAG = script_tag("http://127.0.0.1:8787/livereload", 42)


@pytest.mark.parametrize("body, expected", [
    (b"<html><body><p>x</p></body></html>", b"<html><body><p>x</p>" + TAG + b"</body></html>"),
    (b"<HTML><BODY>a</BODY></HTML>", b"<HTML><BODY>a" + TAG + b"</BODY></HTML>"),
    (b"<html><p>no body</p></html>", b"<html><p>no body</p>" + TAG + b"</html>"),
    (b"<!DOCTYPE html><title>t</title><p>x", b"<!DOCTYPE html><title>t</title><p>x" + TAG),
    (b"<div>a fragment, as htmx swaps in</div>", None),
    # The last </body>: one inside a script or comment earlier in the page is left alone.
    (b"<body><script>s='</body>'</script></body>", b"<body><script>s='</body>'</script>" + TAG + b"</body>"),
])
def test_insert_script(body: bytes, expected: bytes | None) -> None:
    assert insert_script(body, TAG) == expected


def test_the_script_tag_names_the_stream_and_the_worker() -> None:
    assert TAG.startswith(b'<script data-supervisor-livereload data-events="http://127.0.0.1:8787/livereload" '
                          b'data-pid="42">')
    assert TAG.count(b"</script>") == 1


def start(content_type: str, **headers: str) -> Message:
    raw = [(b"content-type", content_type.encode())] + [(k.replace("_", "-").encode(), v.encode())
                                                        for k, v in headers.items()]
    return {"type": "http.response.start", "status": 200, "headers": raw}


@pytest.mark.parametrize("message, reason", [
    (start("text/html; charset=utf-8"), None),
    (start("text/html"), None),
    (start("application/json"), ""),
    (start("text/html", content_encoding="gzip"), "it is compressed (Content-Encoding: gzip)"),
    (start("text/html; charset=utf-16"), "its charset is utf-16"),
    (start("text/html", content_security_policy="script-src 'self'"),
     "its Content-Security-Policy would block an inline script"),
    ({**start("text/html"), "status": 304}, ""),
])
def test_skip_reason(message: Message, reason: str | None) -> None:
    assert skip_reason(message) == reason


def run_asgi(messages: list[Message], method: str = "GET") -> list[Message]:
    """Send ``messages`` through the middleware from a scripted app; return what reaches the server."""
    sent: list[Message] = []

    async def app(scope: object, receive: object, send: object) -> None:
        for message in messages:
            await send(message)  # type: ignore[operator]

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = LiveReloadScript(app, "http://127.0.0.1:8787/livereload", 42)
    asyncio.run(middleware({"type": "http", "method": method, "path": "/"}, receive, send))
    return sent


def test_a_whole_page_gets_the_script_and_a_corrected_content_length() -> None:
    page = b"<html><body>hi</body></html>"
    out = run_asgi([{**start("text/html", content_length=str(len(page)))},
                    {"type": "http.response.body", "body": page}])
    body = out[1]["body"]
    assert body == b"<html><body>hi" + TAG + b"</body></html>"
    lengths = [v for k, v in out[0]["headers"] if k == b"content-length"]
    assert lengths == [str(len(body)).encode()]


@pytest.mark.parametrize("messages", [
    [start("application/json", content_length="17"),
     {"type": "http.response.body", "body": b'{"a": "</body>"}'}],
    [start("text/html"), {"type": "http.response.body", "body": b"<html><body>", "more_body": True},
     {"type": "http.response.body", "body": b"</body></html>", "more_body": False}],
    [start("text/html", content_encoding="gzip", content_length="3"),
     {"type": "http.response.body", "body": b"\x1f\x8b\x08"}],
])
def test_other_responses_pass_through_message_for_message(messages: list[Message]) -> None:
    assert run_asgi(messages) == messages


def test_head_responses_pass_through() -> None:
    messages = [start("text/html", content_length="28"), {"type": "http.response.body", "body": b""}]
    assert run_asgi(messages, method="HEAD") == messages
