"""A worker whose app fails to import shows the user's frames, not ours or the import system's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.child.args import WorkerArgs
from supervisor.listen.ports import bind_listener
from tests.support import base_env, scaled


@pytest.mark.timeout(60)
def test_an_app_that_fails_to_import_shows_only_its_own_frames(tmp_path: Path) -> None:
    (tmp_path / "brokenapp.py").write_text("import helper\napp = None\n")
    (tmp_path / "helper.py").write_text("def fail():\n    raise RuntimeError('no config')\nfail()\n")
    ready_r, ready_w = os.pipe()
    with bind_listener("127.0.0.1", 0) as sock:
        args = WorkerArgs(app="brokenapp:app", parent_pid=os.getpid(), listen_fd=sock.fileno(), ready_fd=ready_w)
        done = subprocess.run([sys.executable, "-m", "supervisor.child.worker", *args.to_argv()], cwd=tmp_path,
                              env=base_env(), pass_fds=(sock.fileno(), ready_w), capture_output=True, text=True,
                              timeout=scaled(30))
    os.close(ready_w)
    os.close(ready_r)
    assert done.returncode == 1
    assert "cannot load the app 'brokenapp:app'" in done.stderr and "RuntimeError: no config" in done.stderr
    assert "brokenapp.py" in done.stderr and "helper.py" in done.stderr
    assert "worker.py" not in done.stderr and "importlib" not in done.stderr, done.stderr
