"""``/notes``: create, list (paginated), fetch and delete the caller's notes.

A user only ever sees their own notes: another user's note is a 404, exactly like one that does
not exist, so ids reveal nothing. Input is checked by small pure functions that collect every
field error for one 422.

The list is newest first and paged with a cursor (keyset pagination): ``next_cursor`` encodes the
last note's ``(created_at, id)`` and the next page starts below it, so a page costs the same at
any depth (the ``(owner, created_at, id)`` index serves it) and notes created meanwhile neither
repeat nor go missing, as they would with an offset.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webapp.auth import current_user
from webapp.errors import Invalid
from webapp.models import BODY_MAX, TITLE_MAX, Note

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 200  # an encoded (timestamp, id) is about 60 characters
_MAX_ID = 2**31 - 1  # the column is a 32-bit integer; larger ids cannot exist
_FIELDS = ("title", "body", "pinned")

Cursor = tuple[datetime, int]


def parse_note_input(data: Any) -> tuple[str, str, bool]:
    """(title, body, pinned) from a decoded JSON body, or :class:`Invalid` naming every bad field."""
    if not isinstance(data, dict):
        raise Invalid({"$": "expected a JSON object"})
    errors: dict[str, str] = {}
    for key in data:
        if key not in _FIELDS:
            errors[key] = f"unknown field; expected {', '.join(_FIELDS)}"
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        errors["title"] = "required: a non-empty string"
    elif len(title) > TITLE_MAX:
        errors["title"] = f"too long: {len(title)} characters; expected at most {TITLE_MAX}"
    body = data.get("body", "")
    if not isinstance(body, str):
        errors["body"] = "expected a string"
    elif len(body) > BODY_MAX:
        errors["body"] = f"too long: {len(body)} characters; expected at most {BODY_MAX}"
    pinned = data.get("pinned", False)
    if not isinstance(pinned, bool):
        errors["pinned"] = "expected true or false"
    if errors:
        raise Invalid(errors)
    assert isinstance(title, str)  # narrowed by the checks above, for the type checker
    return title.strip(), body, pinned


def encode_cursor(note: Note) -> str:
    raw = json.dumps([note.created_utc.isoformat(), note.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The (created_at, id) a cursor encodes; ValueError for anything :func:`encode_cursor` did not make."""
    if len(text) > MAX_CURSOR_LENGTH:
        raise ValueError("too long")
    try:
        created, note_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        when = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise ValueError("malformed") from None
    if not isinstance(note_id, int) or isinstance(note_id, bool) or when.tzinfo is None:
        raise ValueError("malformed")
    return when, note_id


def parse_page(params: Mapping[str, str]) -> tuple[int, Cursor | None]:
    """(limit, cursor) from the query string, or :class:`Invalid` naming every bad parameter."""
    errors: dict[str, str] = {}
    limit = DEFAULT_LIMIT
    raw = params.get("limit")
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            errors["limit"] = f"{raw[:20]!r} is not an integer"
        else:
            if not 1 <= limit <= MAX_LIMIT:
                errors["limit"] = f"{limit} is out of range; expected 1 to {MAX_LIMIT}"
    cursor: Cursor | None = None
    if params.get("cursor"):
        try:
            cursor = decode_cursor(params["cursor"])
        except ValueError:
            errors["cursor"] = "not a cursor from this API; expected the next_cursor of a previous page"
    if "offset" in params:
        errors["offset"] = "not supported; pages follow next_cursor (pass it as cursor)"
    if errors:
        raise Invalid(errors)
    return limit, cursor


async def create_note(request: Request) -> JSONResponse:
    owner = current_user(request)
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise Invalid({"$": "the request body is not valid JSON"}) from None
    title, body, pinned = parse_note_input(data)
    async with request.app.state.db.session() as session:
        note = Note(owner=owner, title=title, body=body, pinned=pinned)
        session.add(note)
        await session.commit()
    return JSONResponse(note.to_json(), status_code=201,
                        headers={"Location": f"/notes/{note.id}"})


async def list_notes(request: Request) -> JSONResponse:
    owner = current_user(request)
    limit, cursor = parse_page(request.query_params)
    query = select(Note).where(Note.owner == owner)
    if cursor is not None:
        created, last_id = cursor
        # Written out rather than as a row-value comparison, which not every SQLite build plans well.
        query = query.where(or_(Note.created_at < created, and_(Note.created_at == created, Note.id < last_id)))
    query = query.order_by(Note.created_at.desc(), Note.id.desc()).limit(limit + 1)
    async with request.app.state.db.session() as session:
        notes = list((await session.scalars(query)).all())
    page = notes[:limit]
    more = len(notes) > limit
    return JSONResponse({"items": [n.to_json() for n in page], "limit": limit,
                         "next_cursor": encode_cursor(page[-1]) if more else None})


def _note_id(request: Request) -> int:
    note_id: int = request.path_params["note_id"]
    if note_id > _MAX_ID:
        raise HTTPException(404, "note not found")
    return note_id


async def get_note(request: Request) -> JSONResponse:
    owner = current_user(request)
    note_id = _note_id(request)
    async with request.app.state.db.session() as session:
        note = await session.scalar(select(Note).where(Note.id == note_id, Note.owner == owner))
    if note is None:
        raise HTTPException(404, "note not found")
    return JSONResponse(note.to_json())


async def delete_note(request: Request) -> Response:
    owner = current_user(request)
    note_id = _note_id(request)
    async with request.app.state.db.session() as session:
        result = await session.execute(delete(Note).where(Note.id == note_id, Note.owner == owner))
        await session.commit()
    if result.rowcount == 0:
        raise HTTPException(404, "note not found")
    return Response(status_code=204)


routes = [
    Route("/notes", create_note, methods=["POST"]),
    Route("/notes", list_notes, methods=["GET"]),
    Route("/notes/{note_id:int}", get_note, methods=["GET"]),
    Route("/notes/{note_id:int}", delete_note, methods=["DELETE"]),
]
