"""Cross-origin requests, allowed for the origins listed in ``CORS_ORIGINS`` (comma-separated).

Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` does the work. The settings are
read in the app's lifespan, after the middleware stack is built, so :class:`SettingsCORS` builds
the real middleware on the first request from ``app.state.settings``. With no origins listed it
adds nothing: a browser on another origin is refused, as it is without CORS at all.

Bearer tokens travel in the ``Authorization`` header, which needs no credentials mode; cookies
would. ``CORS_ALLOW_CREDENTIALS=true`` allows them, and never together with ``*``: a wildcard
with credentials would let any web page act as the signed-in user.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type")
EXPOSED_HEADERS = ("Location", "Retry-After")
PREFLIGHT_MAX_AGE = 600


def parse_origins(raw: str) -> tuple[str, ...]:
    """``"https://a.example, http://localhost:5173"`` -> a tuple; ``*`` alone means any origin.

    Raises ValueError naming the bad entry and the expected form: an origin is a scheme and a host
    (and port), with no path; browsers send ``Origin`` without a trailing slash, so one written
    with it would never match.
    """
    origins = tuple(part.strip() for part in raw.split(",") if part.strip())
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("mixes '*' with listed origins; expected either '*' or a list of origins")
        return origins
    for origin in origins:
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{origin!r} is not an origin; expected scheme://host[:port] such as "
                             "https://app.example.com or http://localhost:5173 (no path, no trailing slash)")
    return origins


def check_credentials(origins: tuple[str, ...], allow_credentials: bool) -> None:
    if allow_credentials and origins == ("*",):
        raise ValueError("CORS_ALLOW_CREDENTIALS=true cannot be combined with CORS_ORIGINS=*; "
                         "expected the list of origins allowed to send credentials")


class SettingsCORS:
    """ASGI middleware: CORS as ``scope["app"].state.settings`` says, built on first use."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._cors is None:
            settings = scope["app"].state.settings
            if not settings.cors_origins:
                self._cors = self.app
            else:
                self._cors = CORSMiddleware(
                    self.app, allow_origins=settings.cors_origins, allow_methods=ALLOWED_METHODS,
                    allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
                    allow_credentials=settings.cors_allow_credentials, max_age=PREFLIGHT_MAX_AGE)
        await self._cors(scope, receive, send)
