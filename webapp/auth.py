"""Bearer tokens: HS256 JWTs signed with ``BETTER_AUTH_SECRET``; the ``sub`` claim is the user.

No token, a bad signature, an expired token or one without ``sub``: 401 with a
``WWW-Authenticate`` header, before anything touches the database.
"""

from __future__ import annotations

import jwt
from starlette.exceptions import HTTPException
from starlette.requests import Request

from webapp.models import OWNER_MAX

ALGORITHM = "HS256"


def _unauthorized(description: str) -> HTTPException:
    return HTTPException(401, description,
                         headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                                      f'error_description="{description}"'})


def user_from_token(token: str, secret: str) -> str:
    """The token's ``sub``; raises a 401 :class:`HTTPException` for any bad token."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("invalid token") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > OWNER_MAX:
        raise _unauthorized("invalid token")
    return sub


def current_user(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return user_from_token(token.strip(), request.app.state.settings.auth_secret)
