"""Log lines: the supervisor's own and its workers', all passed through the secret redactor.

Set up by the CLI only (nothing is configured at import time).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

logger = logging.getLogger("supervisor")


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(redact: Callable[[str], str], level: str = "info",
                  stream: TextIO | None = None) -> logging.Handler:
    """Send every log line (ours, our workers', and libraries' such as asyncio's) to ``stream``
    (stderr), redacted; return the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(redact))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # Workers' lines were filtered by the worker's own log level already.
    logging.getLogger("supervisor.worker").setLevel(logging.DEBUG)
    # Libraries log through the root logger; without a handler there, Python's last-resort
    # handler would print their warnings (with any secret in them) unredacted.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


def banner(url: str) -> str:
    line = f"  Serving on {url}  "
    return "\n".join(["", "=" * len(line), line, "=" * len(line), ""])


# Foreground colours for program prefixes, in order of first appearance (as honcho does).
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")


def colour_wanted(stream: TextIO, environ: dict[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    return not environ.get("NO_COLOR") and stream.isatty()


def output_prefix(name: str, index: int, *, width: int = 0, colour: int | None = None) -> str:
    """``worker.0`` padded to ``width`` so the lines of every program align; coloured when
    ``colour`` (a program's position) is given.

    >>> output_prefix("web", 0, width=8)
    'web.0   '
    """
    text = f"{name}.{index}".ljust(width)
    if colour is None:
        return text
    return f"\033[{_COLOURS[colour % len(_COLOURS)]}m{text}\033[0m"
