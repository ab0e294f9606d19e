"""The worker's gate, in front of every app: counting, refusing, routing. Scripted ASGI apps, no server."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.child.gate import Gate
from supervisor.child.heartbeat import NEARING, REACHED, RequestQuota


def http_scope(headers: list[tuple[bytes, bytes]] | None = None, version: str = "1.1",
               path: bytes = b"/") -> dict[str, Any]:
    return {"type": "http", "http_version": version, "raw_path": path, "query_string": b"",
            "headers": headers or [(b"host", b"127.0.0.1")]}


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(f"{self.name} {scope['type']}")


@pytest.mark.asyncio
async def test_the_gate_counts_http_requests_and_websocket_sessions_only() -> None:
    calls: list[str] = []
    gate = Gate(Recorder("app", calls), Recorder("tracked", calls))
    for scope in ({"type": "lifespan"}, http_scope(), {"type": "websocket"}, http_scope()):
        await gate(scope, None, None)
    assert gate.count == 3
    assert calls == ["app lifespan", "app http", "tracked websocket", "app http"]


@pytest.mark.asyncio
async def test_only_websockets_and_requests_for_an_event_stream_are_tracked() -> None:
    calls: list[str] = []
    gate = Gate(Recorder("app", calls), Recorder("tracked", calls))
    await gate(http_scope([(b"accept", b"text/event-stream")]), None, None)  # what EventSource sends
    await gate(http_scope([(b"accept", b"text/html,application/xhtml+xml")]), None, None)
    await gate(http_scope([(b"x-accept", b"text/event-stream")]), None, None)
    await gate({"type": "websocket"}, None, None)
    assert calls == ["tracked http", "app http", "app http", "tracked websocket"]


@pytest.mark.asyncio
async def test_the_gate_tells_each_stage_of_the_quota_once_before_the_app_sees_the_request() -> None:
    told: list[tuple[int, int]] = []
    seen: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(gate.count)

    gate = Gate(app, app, RequestQuota(4), on_stage=lambda stage: told.append((stage, len(seen))))
    for _ in range(6):
        await gate(http_scope(), None, None)
    # NEARING as the 3rd request begins (none of it seen by the app yet), REACHED as the 4th does.
    assert told == [(NEARING, 2), (REACHED, 3)] and seen == [1, 2, 3, 4, 5, 6]
    assert gate.stage == REACHED


@pytest.mark.asyncio
async def test_a_quota_of_one_is_reached_by_the_first_request() -> None:
    told: list[int] = []
    gate = Gate(Recorder("app", []), Recorder("tracked", []), RequestQuota(1), on_stage=told.append)
    await gate({"type": "websocket"}, None, None)
    await gate(http_scope(), None, None)
    assert told == [REACHED]


@pytest.mark.asyncio
@pytest.mark.parametrize("scope", [
    http_scope(version="0.9"),
    http_scope([(b"host", b"127.0.0.1"), (b"x-huge", b"a" * 17_000)]),
    http_scope(path=b"/" + b"a" * 17_000),
    http_scope([(b"x-many", b"a" * 100)] * 200),  # 200 lines of 110 bytes: over 16 KiB together
], ids=["http-0.9", "huge-header", "huge-path", "many-headers"])
async def test_what_h11_refuses_gets_a_400_and_a_close_and_never_reaches_the_app(scope: dict[str, Any]) -> None:
    calls: list[str] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = Gate(Recorder("app", calls), Recorder("tracked", calls), head_limit=16 * 1024)
    await gate(scope, None, send)
    assert calls == []
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert sent[1]["body"] == b"Invalid HTTP request received."


@pytest.mark.asyncio
async def test_a_head_just_under_the_bound_is_served() -> None:
    calls: list[str] = []
    gate = Gate(Recorder("app", calls), Recorder("tracked", calls), head_limit=16 * 1024)
    await gate(http_scope([(b"x-big", b"a" * 15_000)]), None, None)
    assert calls == ["app http"]
