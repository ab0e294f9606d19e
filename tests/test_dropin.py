"""Running the user's own project (issue 21), as real processes: the app named on the command line
or found in the project, configuration in ``pyproject.toml``, and what the children inherit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support import app_project, base_env, supervisor

UP = ["up", "--no-reload"]


@pytest.mark.timeout(90)
def test_workers_and_programs_find_the_interpreters_console_scripts_without_an_activated_venv(
        tmp_path: Path) -> None:
    """A venv-installed app's workers could not run the venv's scripts unless it was activated."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)  # sys.executable in the supervisor: this link, as in a venv
    tool = bin_dir / "hello-tool"
    tool.write_text("#!/bin/sh\necho \"hello-tool: ran from $0\"\n")
    tool.chmod(0o755)
    root = app_project(tmp_path / "p", extra="""
        [programs.tool]
        command = "hello-tool"
        once = true
    """)
    env = base_env(PATH="/usr/bin:/bin", RAWAPP_PRINT_VAR="PATH")
    with supervisor(UP, root, env, python=str(python)) as run:
        run.wait_url()
        run.wait_for_output(rf"rawapp: PATH is {bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin\b")
        run.wait_for_output(rf"hello-tool: ran from {tool}")
        assert run.stop() == 0, run.output
