"""Which interface the app speaks (ASGI 3, ASGI 2 or WSGI), and WSGI apps served through a2wsgi.

uvicorn's ``interface="auto"`` tells ASGI 3 from ASGI 2 and never guesses WSGI: a Flask app or a
Django ``wsgi.py`` would be served as ASGI 2 and fail on the first request. :func:`detect` does as
uvicorn does, and names WSGI what takes ``(environ, start_response)``: a callable that is not a
coroutine function and needs exactly two positional arguments (an ASGI 2 app takes one, the
scope). WSGI apps run through a2wsgi, an optional dependency (``pip install
'webapp-supervisor[wsgi]'``); uvicorn's own WSGI middleware is deprecated.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any, Literal

Interface = Literal["auto", "asgi3", "asgi2", "wsgi"]
INTERFACES: tuple[str, ...] = ("auto", "asgi3", "asgi2", "wsgi")
A2WSGI_MISSING = ("the app {app!r} is a WSGI app, served through a2wsgi, which is not installed "
                  "for {python}; expected it installed: pip install a2wsgi (or "
                  "'webapp-supervisor[wsgi]')")


def _is_async(app: Any) -> bool:
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    return inspect.iscoroutinefunction(call)


def _takes_exactly_two(app: Any) -> bool:
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: not guessed
        return False

    def binds(*args: object) -> bool:
        try:
            signature.bind(*args)
        except TypeError:
            return False
        return True

    return binds(None, None) and not binds(None)


def detect(app: Any) -> Interface:
    """``asgi3``, ``asgi2`` or ``wsgi`` for a loaded app (``auto`` resolved).

    >>> def wsgi(environ, start_response): ...
    >>> async def asgi(scope, receive, send): ...
    >>> detect(wsgi), detect(asgi)
    ('wsgi', 'asgi3')
    """
    if _is_async(app):
        return "asgi3"
    if not inspect.isclass(app) and _takes_exactly_two(app):
        return "wsgi"
    return "asgi2"


def a2wsgi_installed() -> bool:
    return importlib.util.find_spec("a2wsgi") is not None


def as_asgi(app: Any) -> Any:
    """The WSGI ``app`` as an ASGI 3 app; ImportError without a2wsgi (see :data:`A2WSGI_MISSING`)."""
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(app)
