"""The caller of a request: the ``sub`` of its bearer token (see :mod:`webapp.tokens`).

No token or a bad one is a 401 with a ``WWW-Authenticate`` header, before anything touches the
database. The body says what is wrong in plain words and never repeats the token.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from webapp.config import WebSettings
from webapp.tokens import TokenPolicy, TokenRejected, verify_token


def token_policy(settings: WebSettings) -> TokenPolicy:
    return TokenPolicy(secret=settings.auth_secret, audience=settings.auth_audience,
                       issuer=settings.auth_issuer, leeway=settings.auth_leeway)


def _unauthorized(description: str) -> HTTPException:
    # The description is ours (TokenRejected's fixed texts), so it is safe in a quoted header value.
    return HTTPException(401, description,
                         headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                                      f'error_description="{description}"'})


def current_user(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return verify_token(token.strip(), token_policy(request.app.state.settings))
    except TokenRejected as exc:
        raise _unauthorized(str(exc)) from None
