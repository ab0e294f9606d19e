"""Log lines and output prefixes (supervisor/output.py): every line that reaches the stream, the
supervisor's, its workers' and libraries' through the root logger (warnings included), passes the
redactor; the workers' lines are not filtered a second time; prefixes align and colour only on a
terminal without NO_COLOR."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator

import pytest

from supervisor.output import banner, colour_wanted, output_prefix, setup_logging
from supervisor.secrets import Redactor

SECRET = "output-secret-4d1c9e"


@contextlib.contextmanager
def logging_to(redact: Callable[[str], str], level: str, stream: io.StringIO | None = None
               ) -> Iterator[io.StringIO]:
    """setup_logging to a fresh stream for the block, and the logging configuration it changes
    restored after it (within the test, so pytest's own capture handlers are left as they are)."""
    stream = stream or io.StringIO()
    loggers = [logging.getLogger(), logging.getLogger("supervisor"), logging.getLogger("supervisor.worker")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        setup_logging(redact, level, stream)
        yield stream
    finally:
        logging.captureWarnings(False)
        for lg, handlers, saved_level, propagate in saved:
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(saved_level)  # not by assignment: setLevel clears the loggers' level caches


def test_every_line_is_redacted_the_supervisors_its_workers_and_libraries() -> None:
    with logging_to(Redactor([SECRET]), "info") as stream, warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.getLogger("supervisor").info("connecting with %s", SECRET)
        logging.getLogger("supervisor.worker").info("web.0 101 | token=%s", SECRET)
        logging.getLogger("asyncio").warning("a library's warning about %s", SECRET)
        warnings.warn(f"deprecated, called with {SECRET}", DeprecationWarning, stacklevel=1)
    text = stream.getvalue()
    assert SECRET not in text, text
    for what in ("connecting with", "web.0 101 | token=", "a library's warning about", "deprecated, called with"):
        assert re.search(rf"^\d\d:\d\d:\d\d .*{re.escape(what)}", text, re.M), (what, text)


def test_the_level_filters_the_supervisors_lines_but_not_its_workers() -> None:
    with logging_to(lambda text: text, "warning") as stream:
        logging.getLogger("supervisor").info("an info line of ours")
        logging.getLogger("supervisor").warning("a warning of ours")
        logging.getLogger("supervisor.worker").debug("web.0 101 | the worker's own debug line")
        logging.getLogger("some.library").info("a library's info line")
    text = stream.getvalue()
    assert "an info line of ours" not in text and "a library's info line" not in text
    assert "a warning of ours" in text and "the worker's own debug line" in text


def test_setting_up_again_replaces_the_handler_so_no_line_is_written_twice() -> None:
    with logging_to(lambda text: text, "info") as first_stream:
        first = logging.getLogger("supervisor").handlers[0]
        stream = io.StringIO()
        second = setup_logging(lambda text: text, "info", stream)
        assert logging.getLogger("supervisor").handlers == [second] and logging.getLogger().handlers == [second]
        assert first is not second
        logging.getLogger("supervisor").info("once")
        assert not logging.getLogger("supervisor").propagate  # not again through the root logger
    assert stream.getvalue().count("once") == 1 and first_stream.getvalue() == ""


def test_the_banner_frames_the_url() -> None:
    line = "  Serving on http://127.0.0.1:8000  "
    assert banner("http://127.0.0.1:8000") == f"\n{'=' * 36}\n{line}\n{'=' * 36}\n" and len(line) == 36


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "environ", "wanted"), [
    (Terminal(), {}, True),
    (Terminal(), {"NO_COLOR": "1"}, False),
    (Terminal(), {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
    (io.StringIO(), {}, False),  # a pipe or a file: plain text
])
def test_colour_only_on_a_terminal_without_no_color(stream: io.StringIO, environ: dict[str, str],
                                                   wanted: bool) -> None:
    assert colour_wanted(stream, environ) is wanted


def test_prefixes_align_and_colours_follow_the_order_of_programs_cycling_after_ten() -> None:
    assert output_prefix("web", 0, width=8) == "web.0   "
    assert output_prefix("scheduler", 12, width=4) == "scheduler.12"  # never cut
    assert output_prefix("worker", 1, width=9, colour=0) == "\033[36mworker.1 \033[0m"
    assert output_prefix("worker", 1, colour=1) == "\033[33mworker.1\033[0m"
    assert output_prefix("a", 0, colour=10) == output_prefix("a", 0, colour=0)
