"""Restart policy: a pure decision for each unexpected worker exit.

No I/O and no clock of its own: the caller passes ``now`` and the worker's uptime, and a random
source is injected, so the backoff sequence and crash-loop detection are unit-testable exactly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.config import RestartSection


@dataclass(frozen=True)
class Restart:
    delay: float
    attempt: int  # 1 for the first restart after a healthy run


@dataclass(frozen=True)
class GiveUp:
    reason: str


Decision = Restart | GiveUp


class RestartTracker:
    """Tracks one worker slot's crashes and decides what to do after each.

    * Backoff: ``initial_delay * multiplier ** (attempt - 1)``, capped at ``max_delay``, spread
      by ``jitter`` (a fraction: 0.2 means +/-20%) so that workers crashing together do not
      restart in lockstep.
    * A worker that stayed up for ``min_uptime`` was healthy: its crash starts the backoff over.
    * ``crash_loop_failures`` crashes within ``crash_loop_window`` seconds is a crash loop: give up.
    """

    def __init__(self, cfg: RestartSection, rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.rand = rand
        self.attempt = 0
        self.failures: deque[float] = deque()

    def base_delay(self, attempt: int) -> float:
        cfg = self.cfg
        return min(cfg.max_delay, cfg.initial_delay * cfg.multiplier ** (attempt - 1))

    def on_crash(self, now: float, uptime: float) -> Decision:
        cfg = self.cfg
        if uptime >= cfg.min_uptime:
            self.attempt = 0
        self.attempt += 1
        self.failures.append(now)
        while self.failures and now - self.failures[0] > cfg.crash_loop_window:
            self.failures.popleft()
        if len(self.failures) >= cfg.crash_loop_failures:
            return GiveUp(f"crashed {len(self.failures)} times within {cfg.crash_loop_window:g}s "
                          f"(crash_loop_failures = {cfg.crash_loop_failures})")
        base = self.base_delay(self.attempt)
        spread = base * cfg.jitter * (2 * self.rand() - 1)
        return Restart(delay=max(0.0, min(cfg.max_delay, base + spread)), attempt=self.attempt)

    def reset(self) -> None:
        """Forget history: used when the user starts the slot again (a file change, a restart)."""
        self.attempt = 0
        self.failures.clear()
