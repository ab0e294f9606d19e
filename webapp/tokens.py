"""Bearer tokens: HS256 JWTs signed with ``BETTER_AUTH_SECRET``; the ``sub`` claim is the user.

Pure functions: :func:`verify_token` checks a token and names what is
wrong with it in words that never include the token; :func:`issue_token` makes one (the
development helper ``python -m webapp token`` and the tests use it).

What a token must have:

* ``alg`` HS256 in its header. Anything else (``none``, RS256, HS512) is refused: accepting the
  algorithm a token names is how signature checks get bypassed.
* ``sub``: the user, at most :data:`~webapp.models.OWNER_MAX` characters.
* ``exp``: a token that never expires cannot be taken back, so one without ``exp`` is refused.
* ``nbf`` and ``iat``, when present, not in the future, with a small leeway for clock skew.
* ``aud`` and ``iss`` equal to ``AUTH_AUDIENCE`` and ``AUTH_ISSUER`` when those are set.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from webapp.models import OWNER_MAX

ALGORITHM = "HS256"
DEFAULT_TTL = 3600
MAX_TTL = 30 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenRejected(Exception):
    """Why a token is refused, in words fit for a 401 body (never the token itself)."""


@dataclass(frozen=True)
class TokenPolicy:
    secret: str
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 30.0


def verify_token(token: str, policy: TokenPolicy) -> str:
    """The token's ``sub``; raises :class:`TokenRejected` saying what is wrong.

    Checked against the real clock (PyJWT reads it), so tests make tokens relative to now.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRejected("malformed token; expected a JWT (header.payload.signature)") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRejected(f"token algorithm not accepted; expected {ALGORITHM}")
    try:
        claims = jwt.decode(token, policy.secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub"], "verify_aud": policy.audience is not None},
                            audience=policy.audience, issuer=policy.issuer, leeway=policy.leeway)
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"token has no {exc.claim!r} claim") from None
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("token not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("token issuer not accepted") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("token signature does not match") from None
    except jwt.InvalidTokenError:
        raise TokenRejected("invalid token") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > OWNER_MAX:
        raise TokenRejected(f"token sub must be a string of 1 to {OWNER_MAX} characters")
    return sub


def issue_token(subject: str, policy: TokenPolicy, ttl: float = DEFAULT_TTL,
                now: float | None = None) -> str:
    """A token for ``subject`` valid for ``ttl`` seconds, with ``aud``/``iss`` when the policy has them."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iat": issued, "nbf": issued, "exp": issued + int(ttl)}
    if policy.audience:
        claims["aud"] = policy.audience
    if policy.issuer:
        claims["iss"] = policy.issuer
    return jwt.encode(claims, policy.secret, algorithm=ALGORITHM)


def parse_ttl(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or plain seconds -> seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration; expected a number with s, m, h or d, e.g. 1h")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_TTL:
        raise ValueError(f"{text!r} is out of range; expected 1s to {MAX_TTL // 86400}d")
    return seconds
