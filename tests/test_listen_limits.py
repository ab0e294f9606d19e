"""The open-file limit raised at start (supervisor/listen/limits.py). It changes the calling
process's own limit, so each case runs in a child Python with the soft limit set low first; the
kernel's ceiling is read from a file the test writes."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from supervisor.listen.limits import _nr_open
from tests.support import base_env, scaled


def in_child(soft: int, hard: int | None = None) -> dict[str, Any]:
    """``raise_open_file_limit()`` in a child whose limit starts at (soft, hard)."""
    script = textwrap.dedent(f"""
        import json, resource
        from supervisor.listen.limits import raise_open_file_limit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard if hard is not None else "hard"}))
        result = raise_open_file_limit()
        print(json.dumps({{"result": result, "after": resource.getrlimit(resource.RLIMIT_NOFILE)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=base_env(), capture_output=True, text=True,
                          timeout=scaled(30))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_low_soft_limit_is_raised_to_the_hard_one_and_both_are_reported() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        hard = 512  # a finite hard limit above the soft one, which an unprivileged child may set
    got = in_child(256, hard)
    assert got == {"result": [256, hard], "after": [hard, hard]}


def test_nothing_changes_when_the_soft_limit_is_already_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 4096
    got = in_child(hard, hard)
    assert got == {"result": None, "after": [hard, hard]}


def test_the_kernel_ceiling_is_read_from_proc_and_a_missing_or_odd_file_gives_a_safe_default(tmp_path: Path) -> None:
    ceiling = tmp_path / "nr_open"
    ceiling.write_text("1048576\n")
    assert _nr_open(ceiling) == 1048576
    ceiling.write_text("not a number\n")
    assert _nr_open(ceiling) == 1 << 20
    assert _nr_open(tmp_path / "missing") == 1 << 20
    assert _nr_open() == int(Path("/proc/sys/fs/nr_open").read_text())  # the real one, on Linux
