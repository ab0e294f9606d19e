"""Restart policy: a pure decision for each unexpected worker exit, and the backoff both the
workers and the database probe use.

No I/O and no clock of its own: the caller passes ``now`` and how long the worker had been
serving, and a random source is injected, so the backoff sequence and crash-loop detection are
unit-testable exactly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.config.toml import RestartSection


def backoff_delay(attempt: int, *, initial: float, maximum: float, jitter: float,
                  rand: Callable[[], float], multiplier: float = 2.0) -> float:
    """The delay after failed attempt ``attempt`` (1-based): ``initial * multiplier ** (n - 1)``,
    spread by ``jitter`` (0.2 means +/-20%) so that things failing together do not retry in
    lockstep, never above ``maximum``."""
    base = min(maximum, initial * multiplier ** min(attempt - 1, 60))
    spread = base * jitter * (2.0 * rand() - 1.0)
    return max(0.0, min(maximum, base + spread))


@dataclass(frozen=True)
class Restart:
    delay: float
    attempt: int  # consecutive failures; 0 after a worker that served well


@dataclass(frozen=True)
class GiveUp:
    reason: str


Decision = Restart | GiveUp


class RestartTracker:
    """Tracks one worker slot's exits and decides what to do after each.

    A worker that became ready and then served for ``min_uptime`` seconds was healthy: it is
    restarted at once, whatever killed it (an OOM killer, an operator), and the backoff starts
    over. Everything else is a failure: a worker that never became ready, or died within
    ``min_uptime`` of becoming ready. Failures back off exponentially, and
    ``crash_loop_failures`` of them within ``crash_loop_window`` seconds is a crash loop: give up.
    (supervisord's ``startsecs`` and PM2's ``min_uptime`` draw the same line.)
    """

    def __init__(self, cfg: RestartSection, rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.rand = rand
        self.attempt = 0
        self.failures: deque[float] = deque()

    def on_exit(self, now: float, served_for: float | None) -> Decision:
        """``served_for``: seconds between readiness and exit, None if it never became ready."""
        cfg = self.cfg
        if served_for is not None and served_for >= cfg.min_uptime:
            self.attempt = 0
            return Restart(delay=0.0, attempt=0)
        self.attempt += 1
        self.failures.append(now)
        while self.failures and now - self.failures[0] > cfg.crash_loop_window:
            self.failures.popleft()
        if len(self.failures) >= cfg.crash_loop_failures:
            return GiveUp(f"crashed {len(self.failures)} times within {cfg.crash_loop_window:g}s "
                          f"(crash_loop_failures = {cfg.crash_loop_failures})")
        return Restart(delay=backoff_delay(self.attempt, initial=cfg.initial_delay, maximum=cfg.max_delay,
                                           jitter=cfg.jitter, rand=self.rand, multiplier=cfg.multiplier),
                       attempt=self.attempt)

    def reset(self) -> None:
        """Forget history: used when the user starts the slot again (a file change, a restart)."""
        self.attempt = 0
        self.failures.clear()
