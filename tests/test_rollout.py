"""Rolling restarts and reloads against scripted slots: which settings stay applied."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import pytest

from supervisor.config.settings import Settings, resolve_settings
from supervisor.reload.rollout import Rollout
from supervisor.state import ExitReason, ReloadStatus
from tests.support import make_project


class ScriptedSlots:
    """Two slots whose replacements succeed or fail as scripted."""

    def __init__(self, settings: Settings, outcomes: list[bool]) -> None:
        self.settings = settings
        self.outcomes = outcomes
        self.applied: list[Settings] = []
        self.replaced: list[int] = []

    def count(self) -> int:
        return 2

    async def _outcome(self, index: int) -> bool:
        self.replaced.append(index)
        return self.outcomes.pop(0)

    def replace(self, index: int, reason: ExitReason) -> Awaitable[bool]:
        return self._outcome(index)

    def apply_settings(self, new: Settings) -> None:
        self.applied.append(new)
        self.settings = new

    def set_rolling(self, rolling: bool) -> None:
        pass

    def stopping(self) -> bool:
        return False

    def restart_programs(self, files: set[str]) -> list[str]:
        return []

    def changed(self) -> None:
        pass

    def wall(self) -> float:
        return 0.0


def settings(root: Path, greeting: str) -> Settings:
    make_project(root, "[env.GREETING]\ntype = \"string\"\n", dotenv=f"GREETING={greeting}\n")
    return resolve_settings(root, {})


@pytest.mark.asyncio
async def test_settings_that_fail_to_start_a_worker_are_taken_back(tmp_path: Path) -> None:
    old, new = settings(tmp_path / "a", "old"), settings(tmp_path / "b", "new")
    slots = ScriptedSlots(old, outcomes=[False])
    status = ReloadStatus()
    assert await Rollout(slots, slots, lambda: new, status).reload({str(tmp_path / "b" / ".env")}, "test",
                                                                   reread=True) is False
    assert slots.applied == [new, old] and slots.settings is old
    assert status.failures == 1 and status.count == 0


@pytest.mark.asyncio
async def test_a_rolling_restart_stops_at_the_first_slot_that_fails(tmp_path: Path) -> None:
    slots = ScriptedSlots(settings(tmp_path, "x"), outcomes=[False, True])
    assert await Rollout(slots, slots, None, ReloadStatus()).rolling_restart(ExitReason.MANUAL) is False
    assert slots.replaced == [0]
