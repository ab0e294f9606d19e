"""The log handlers a project's modules add at import: who added which, and taking back a re-run
module's (supervisor.child.handlerlog), on modules really imported from a temporary directory."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.child.handlerlog import HandlerLog
from supervisor.child.importgraph import drop

MODULES = {
    # a helper that adds a handler when called: it adds on behalf of the module calling it
    "hl_util.py": """
        import logging
        def setup(name):
            logging.getLogger(name).addHandler(logging.NullHandler())
    """,
    "hl_lib.py": """
        import logging
        logging.getLogger("hl.lib").addHandler(logging.NullHandler())
    """,
    "hl_app.py": """
        import logging, hl_util, hl_lib
        hl_util.setup("hl.app")
        logging.getLogger("hl.direct").addHandler(logging.NullHandler())
    """,
}
LOGGERS = ("hl.app", "hl.direct", "hl.lib")


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    for name, text in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        drop([name.removesuffix(".py") for name in MODULES])
        for name in LOGGERS:
            for handler in list(logging.getLogger(name).handlers):
                logging.getLogger(name).removeHandler(handler)


def handlers() -> dict[str, int]:
    return {name: len(logging.getLogger(name).handlers) for name in LOGGERS}


def test_each_handler_is_noted_with_the_module_whose_top_level_code_added_it(modules: Path) -> None:
    log, original = HandlerLog(), logging.Logger.addHandler
    with log.active():
        importlib.import_module("hl_app")
    assert logging.Logger.addHandler is original  # logging's own method again, for the workers
    added = {(logger.name, module) for logger, _, module in log.added}
    # hl_util's function ran for hl_app's top level; hl_lib added its own at its import.
    assert added == {("hl.app", "hl_app"), ("hl.direct", "hl_app"), ("hl.lib", "hl_lib")}


def test_a_re_run_module_ends_with_its_handlers_once_and_a_kept_one_keeps_its_own(modules: Path) -> None:
    log = HandlerLog()
    with log.active():
        importlib.import_module("hl_app")
    log.keep_only({"hl_app", "hl_util"})  # hl_lib stands for a library: never dropped, never taken back
    assert handlers() == {"hl.app": 1, "hl.direct": 1, "hl.lib": 1}
    assert log.take_back(drop(["hl_app"])) == 2
    importlib.import_module("hl_app")  # the fork's fresh import of the app module
    assert handlers() == {"hl.app": 1, "hl.direct": 1, "hl.lib": 1}


def test_without_taking_back_the_re_run_doubles_the_handlers(modules: Path) -> None:
    """What the fork did before: the check above is not vacuous."""
    with HandlerLog().active():
        importlib.import_module("hl_app")
    drop(["hl_app"])
    importlib.import_module("hl_app")
    assert handlers() == {"hl.app": 2, "hl.direct": 2, "hl.lib": 1}
