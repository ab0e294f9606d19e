"""The small Starlette app every tool serves in the benchmarks (copied, then edited, per run).

``GET /`` answers ``{"version": VERSION, "pid": ...}``: the version shows which code answers (a
reload is done when the new one does), the pid which process (the one a crash test kills).
"""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

VERSION = 1
ITEMS = [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(20)]


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"version": VERSION, "pid": os.getpid()})


async def items(request: Request) -> JSONResponse:
    return JSONResponse({"items": ITEMS})


async def item(request: Request) -> JSONResponse:
    index = int(request.path_params["item_id"])
    if not 0 <= index < len(ITEMS):
        return JSONResponse({"error": "no such item"}, status_code=404)
    return JSONResponse(ITEMS[index])


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(await request.body())


app = Starlette(routes=[
    Route("/", index),
    Route("/items", items),
    Route("/items/{item_id:int}", item),
    Route("/echo", echo, methods=["POST"]),
])
