"""The test helpers' own contract: one TIMEOUT_SCALE factor, and browser tests that cannot skip in CI."""

from __future__ import annotations

import math
import time

import pytest

from tests import browser
from tests.support import scaled, timeout_scale, wait_until


@pytest.mark.parametrize(("raw", "expected"), [("", 1.0), ("2", 2.0), (" 1.5 ", 1.5), ("0.5", 0.5)])
def test_timeout_scale_reads_a_positive_factor(raw: str, expected: float) -> None:
    assert timeout_scale({"TIMEOUT_SCALE": raw}) == expected
    assert timeout_scale({}) == 1.0


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "inf", "2x"])
def test_timeout_scale_refuses_what_is_not_a_positive_number(raw: str) -> None:
    with pytest.raises(ValueError, match=r"TIMEOUT_SCALE=.*expected a positive number"):
        timeout_scale({"TIMEOUT_SCALE": raw})


def test_wait_until_and_scaled_deadlines_follow_the_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMEOUT_SCALE", "3")
    assert scaled(10) == 30
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0\.3s waiting for nothing"):
        wait_until(lambda: False, 0.1, "nothing", interval=0.01)
    assert time.monotonic() - started >= 0.3


def test_per_test_timeout_is_scaled_by_the_conftest_hook(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    if timeout_scale() == 1.0:
        assert marker is None  # the configured default applies unchanged
    else:
        assert marker is not None and math.isclose(marker.args[0], 60 * timeout_scale())


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                              ("", pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_a_missing_chromium_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                                             outcome: type[BaseException]) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium"):
        browser.require_chromium()
