"""The template process on its own: checked preloading, and a worker that must be our child.

The preload checks import modules that start threads and open sockets, so they run in a fresh
interpreter, never in the test process.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor.child.osutil import parent_of
from supervisor.listen.ports import bind_listener
from supervisor.spawn.process import WorkerSpec
from supervisor.warm.template import Built, NotOurChild, Plan, TemplateProcess, dependency_files
from tests.support import APPS, base_env, gone, wait_until

MODULES = {
    "plainmod.py": "VALUE = 1\n",
    "threadmod.py": "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    "sockmod.py": "import socket\nCONNECTION = socket.socket()\n",
    "loopmod.py": "import asyncio\nLOOP = asyncio.new_event_loop()\n",
    "brokenmod.py": "raise RuntimeError('cannot be imported here')\n",
    "pullsproject.py": "import projectmod\n",
}
PROJECT = {"projectmod.py": "VALUE = 2\n"}


def preload_in_fresh_interpreter(tmp_path: Path, names: list[str]) -> dict[str, Any]:
    site, project = tmp_path / "site", tmp_path / "project"
    for directory, files in ((site, MODULES), (project, PROJECT)):
        directory.mkdir(exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(site)!r}, {str(project)!r}]
        from supervisor.child.forkserver import preload
        result = preload({names!r}, {{"projectmod"}}, [{str(project)!r}])
        print(json.dumps({{"failed": result.failed, "unsafe": result.unsafe}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=base_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_safe_modules_load_and_one_that_fails_to_import_is_only_noted(tmp_path: Path) -> None:
    result = preload_in_fresh_interpreter(tmp_path, ["json", "plainmod", "brokenmod", "email.message"])
    assert result["unsafe"] is None
    assert list(result["failed"]) == ["brokenmod"]
    assert "RuntimeError: cannot be imported here" in result["failed"]["brokenmod"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("module", "reason"), [
    ("threadmod", r"a thread was still running after importing it"),
    ("sockmod", r"open socket"),
    ("loopmod", r"open socket|event loop"),
    ("pullsproject", r"imports the project's own module 'projectmod'"),
])
def test_a_module_unsafe_to_fork_from_stops_the_preload_and_is_named(tmp_path: Path, module: str,
                                                                     reason: str) -> None:
    result = preload_in_fresh_interpreter(tmp_path, ["plainmod", module, "json"])
    unsafe = result["unsafe"]
    assert unsafe is not None and unsafe["module"] == module, result
    assert re.search(reason, unsafe["reason"]), unsafe["reason"]
    assert module in unsafe["pulled"]


def test_dependency_files_are_found_by_name_in_the_given_directories_only(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "requirements-dev.txt", "README.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "requirements.txt").write_text("x")
    found = dependency_files([tmp_path])
    assert sorted(Path(path).name for path in found) == ["pyproject.toml", "requirements-dev.txt", "uv.lock"]


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_worker_that_is_not_our_child_is_killed_and_never_serves() -> None:
    """This test process is no child subreaper, so the forked worker goes to an ancestor: the
    template must not hand it out (it could not be reaped or restarted), and it must not serve."""
    lines: list[str] = []
    with bind_listener("127.0.0.1", 0) as sock:
        spec = WorkerSpec(app="rawapp:app", factory=False, listen_fd=sock.fileno(), cwd=APPS, environ=base_env())
        template = TemplateProcess.start(spec, Plan(("supervisor.child.worker",), frozenset(), (str(APPS),)),
                                         lambda pid, line: lines.append(line), [APPS])
        try:
            built = await template.built(60)
            assert isinstance(built, Built), (built, lines)
            assert "uvicorn" in built.loaded and "rawapp" not in built.loaded
            assert parent_of(template.pid) is not None
            with pytest.raises(NotOurChild, match=r"forked worker pid (\d+) is not the supervisor's child") as caught:
                template.fork(spec, lambda pid, line: lines.append(line))
            orphan = int(str(caught.value).split("pid ")[1].split()[0])
            await asyncio.to_thread(wait_until, lambda: gone(orphan), 10, "the unwatched worker to be killed")
        finally:
            await template.close()
        assert template.proc.popen.returncode is not None


@pytest.mark.timeout(60)
def test_the_templates_own_main_module_under_another_name_is_not_a_project_module(tmp_path: Path) -> None:
    """multiprocessing puts __main__ in sys.modules again as __mp_main__: when the template's own
    module lies in the project (the supervisor's own repository as the project), that is no import
    of the project by a library."""
    project = tmp_path / "project"
    project.mkdir()
    script = project / "template_main.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from supervisor.child.forkserver import preload
        result = preload(["multiprocessing", "json"], set(), [{str(project)!r}])
        print(json.dumps({{"unsafe": result.unsafe}}))
    """))
    done = subprocess.run([sys.executable, str(script)], env=base_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"unsafe": None}


def test_an_import_directory_listing_changes_with_packages_not_with_bytecode(tmp_path: Path) -> None:
    from supervisor.child.forkserver import listing_digest

    (tmp_path / "requests").mkdir()
    (tmp_path / "requests-2.31.0.dist-info").mkdir()
    before = listing_digest(str(tmp_path))
    (tmp_path / "__pycache__").mkdir()
    assert listing_digest(str(tmp_path)) == before
    (tmp_path / "requests-2.31.0.dist-info").rename(tmp_path / "requests-2.32.0.dist-info")
    upgraded = listing_digest(str(tmp_path))
    assert upgraded != before
    (tmp_path / "httpx").mkdir()
    assert listing_digest(str(tmp_path)) not in (before, upgraded)


@pytest.mark.timeout(60)
def test_a_template_whose_supervisor_closed_the_control_socket_mid_build_ends_quietly(tmp_path: Path) -> None:
    """``up`` stopped while a template builds: the supervisor closes the control socket, and the
    template's report of its build meets a broken pipe. A normal end: exit 0, no traceback."""
    import os
    import socket

    from supervisor.child import forkserver

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe()
    with ours, theirs:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.child.forkserver", "--control-fd", str(theirs.fileno()),
             "--ready-fd", str(ready_w), "--parent-pid", str(os.getpid())],
            pass_fds=(theirs.fileno(), ready_w), env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        os.close(ready_w)
        forkserver.send(ours, {"plan": {"preload": ["json", "email.message"], "project_names": [],
                                        "roots": [str(tmp_path)]}})
        ours.close()  # the supervisor stops: the plan is on its way, nobody reads the report
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            os.close(ready_r)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 0, (proc.returncode, out, err)
