"""The real webapp factory plus one route whose handler raises: errors must be 500 JSON."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.app import create_app


async def boom(request: Request) -> Response:
    raise ValueError("the handler failed on purpose")


app = create_app()
app.router.routes.append(Route("/boom", boom))
