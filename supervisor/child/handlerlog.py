"""Log handlers the project's modules add at import, and taking back those of the modules a fork re-runs.

The logging module is a registry outside the project: ``logging.getLogger("uvicorn.access")
.addHandler(h)`` at a module's top level, run once in the project-stage template and again in a
fork that re-runs that module, leaves the logger with two handlers, and every line is written
twice. A fresh process has one. So while the template imports the project, every
``Logger.addHandler`` is noted with the module whose top-level code made it (the innermost
module body on the stack: a helper called at import adds on behalf of its caller); a fork takes
back the handlers of the modules it drops before they run again. A library's own handlers are
left alone: libraries are never dropped.

Standard library only; it runs in the template and the workers.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from types import FrameType


def importing_module(frame: FrameType | None) -> str | None:
    """The module whose top-level code is running at ``frame`` or below it on the stack."""
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            return name if isinstance(name, str) else None
        frame = frame.f_back
    return None


@dataclass
class HandlerLog:
    """``added``: (logger, handler, module) for each handler added while :meth:`active`."""

    added: list[tuple[logging.Logger, logging.Handler, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def active(self) -> Iterator[HandlerLog]:
        original = logging.Logger.addHandler

        def add_handler(logger: logging.Logger, handler: logging.Handler) -> None:
            module = importing_module(sys._getframe(1))
            if module is not None and handler not in logger.handlers:
                self.added.append((logger, handler, module))
            original(logger, handler)

        logging.Logger.addHandler = add_handler  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            logging.Logger.addHandler = original  # type: ignore[method-assign]

    def keep_only(self, modules: Collection[str]) -> None:
        """Forget what modules other than ``modules`` (the project's) added."""
        self.added = [entry for entry in self.added if entry[2] in modules]

    def take_back(self, modules: Collection[str]) -> int:
        """Remove from their loggers the handlers that ``modules`` added (they are about to run
        again); returns how many were still there."""
        removed = 0
        for logger, handler, module in self.added:
            if module in modules and handler in logger.handlers:
                logger.removeHandler(handler)
                removed += 1
        return removed
