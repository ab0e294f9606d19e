"""A Starlette app with HTML pages, for the live-reload tests; copied into a test project and edited.

``/`` is a page naming VERSION and linking ``/static/site.css`` (from the project's ``static``
directory); ``/data`` is JSON and ``/streamed`` an HTML page sent in several body messages.
"""
import json
import os

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

VERSION = 1

PAGE = """<!doctype html>
<html><head><title>pages</title><link rel="stylesheet" href="/static/site.css"></head>
<body><h1 id="version">version {version}</h1><p id="pid">{pid}</p></body></html>
"""


async def page(request):
    return HTMLResponse(PAGE.format(version=VERSION, pid=os.getpid()))


async def data(request):
    return Response(json.dumps({"version": VERSION, "html": "</body>"}), media_type="application/json")


async def streamed(request):
    async def parts():
        yield b"<!doctype html><html><body>"
        yield b"<p>streamed</p>"
        yield b"</body></html>"
    return StreamingResponse(parts(), media_type="text/html")


app = Starlette(routes=[Route("/", page), Route("/data", data), Route("/streamed", streamed),
                        Mount("/static", StaticFiles(directory="static", check_dir=False))])
