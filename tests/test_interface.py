"""Which interface a loaded app speaks, and what the worker says when a chosen package is missing."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.child import interface
from supervisor.child.args import WorkerArgs
from supervisor.child.worker import missing_packages


def wsgi_function(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return [b""]


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None: ...


class Asgi2:
    def __init__(self, scope: Any) -> None: ...

    async def __call__(self, receive: Any, send: Any) -> None: ...


class WsgiObject:
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b""]


class Asgi3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


@pytest.mark.parametrize(("app", "expected"), [
    (wsgi_function, "wsgi"), (WsgiObject(), "wsgi"), (asgi3_function, "asgi3"), (Asgi3Object(), "asgi3"),
    (Asgi2, "asgi2"), (lambda *args: None, "asgi2"),  # what takes anything is left to uvicorn's guess
])
def test_an_app_is_told_wsgi_asgi3_or_asgi2(app: Any, expected: str) -> None:
    assert interface.detect(app) == expected


def test_flask_and_djangos_handlers_are_detected() -> None:
    flask = pytest.importorskip("flask", reason="Flask is in the test extra")
    pytest.importorskip("django", reason="Django is in the test extra")
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    assert interface.detect(flask.Flask("x")) == "wsgi"
    assert interface.detect(WSGIHandler.__new__(WSGIHandler)) == "wsgi"
    assert interface.detect(ASGIHandler.__new__(ASGIHandler)) == "asgi3"


def test_a_loop_or_parser_asked_for_but_not_installed_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    args = WorkerArgs(app="app:app", parent_pid=1, listen_fd=3, ready_fd=4, loop="uvloop", http="httptools")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    problem = missing_packages(args)
    assert "[app] loop = 'uvloop', but uvloop is not installed" in problem and "pip install uvloop" in problem
    assert missing_packages(WorkerArgs(app="app:app", parent_pid=1, listen_fd=3, ready_fd=4)) == ""  # auto
