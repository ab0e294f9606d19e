"""``/notes``: create, list (paginated), fetch and delete the caller's notes.

A user only ever sees their own notes: another user's note is a 404, exactly like one that does
not exist, so ids reveal nothing. Input is checked by small pure functions that collect every
field error for one 422.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webapp.auth import current_user
from webapp.models import BODY_MAX, TITLE_MAX, Note

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAX_ID = 2**31 - 1  # the column is a 32-bit integer; larger ids cannot exist


class Invalid(Exception):
    """Input with field errors; answered with 422 ``{"error": ..., "fields": {name: message}}``."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("invalid input")
        self.fields = dict(fields)


def parse_note_input(data: Any) -> tuple[str, str]:
    """(title, body) from a decoded JSON body, or :class:`Invalid` naming every bad field."""
    if not isinstance(data, dict):
        raise Invalid({"$": "expected a JSON object"})
    errors: dict[str, str] = {}
    for key in data:
        if key not in ("title", "body"):
            errors[key] = "unknown field; expected title and body"
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
    if errors:
        raise Invalid(errors)
    assert isinstance(title, str)  # narrowed by the checks above, for the type checker
    return title.strip(), body


def parse_page(params: Mapping[str, str]) -> tuple[int, int]:
    """(limit, offset) from the query string, or :class:`Invalid`."""
    errors: dict[str, str] = {}
    values: dict[str, int] = {}
    for name, default, lo, hi in (("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), ("offset", 0, 0, 10**9)):
        raw = params.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            errors[name] = f"{raw!r} is not an integer"
            continue
        if not lo <= value <= hi:
            errors[name] = f"{value} is out of range; expected {lo} to {hi}"
        values[name] = value
    if errors:
        raise Invalid(errors)
    return values["limit"], values["offset"]


async def create_note(request: Request) -> JSONResponse:
    owner = current_user(request)
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise Invalid({"$": "the request body is not valid JSON"}) from None
    title, body = parse_note_input(data)
    async with request.app.state.db.session() as session:
        note = Note(owner=owner, title=title, body=body)
        session.add(note)
        await session.commit()
    return JSONResponse(note.to_json(), status_code=201,
                        headers={"Location": f"/notes/{note.id}"})


async def list_notes(request: Request) -> JSONResponse:
    owner = current_user(request)
    limit, offset = parse_page(request.query_params)
    query = (select(Note).where(Note.owner == owner).order_by(Note.created_at.desc(), Note.id.desc())
             .limit(limit + 1).offset(offset))
    async with request.app.state.db.session() as session:
        notes = list((await session.scalars(query)).all())
    more = len(notes) > limit
    return JSONResponse({"items": [n.to_json() for n in notes[:limit]], "limit": limit, "offset": offset,
                         "next_offset": offset + limit if more else None})


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
