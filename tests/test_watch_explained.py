"""Watching that explains itself: ``**`` patterns, the rule behind each verdict, ``why``, mount
detection from recorded ``/proc/self/mountinfo`` lines, and real runs with polling and debug logs."""

from __future__ import annotations

import re
import time
from pathlib import Path, PurePosixPath

import pytest

from supervisor.config.settings import resolve_settings
from supervisor.reload.filters import ChangeFilter, glob_match
from supervisor.reload.mounts import detect_polling, parse_mountinfo, polling_reason
from supervisor.reload.plan import choose_polling, watched_roots
from tests.support import REPO, base_env, free_port, http_get, make_project, run_cli, supervisor, wait_until

ROOT = Path("/project")


@pytest.mark.parametrize("pattern, path, expected", [
    ("**/migrations/*", "migrations/0001.py", True),
    ("**/migrations/*", "app/db/migrations/0001.py", True),
    ("frontend/**", "frontend/src/app.py", True),
    ("frontend/**", "frontend", True),
    ("frontend/**", "frontend2/app.py", False),
    ("a/**/b.py", "a/b.py", True),
    ("a/**/b.py", "a/x/y/b.py", True),
    ("a/**/b.py", "ab.py", False),
    ("**/*.py", "top.py", True),
    ("tests/*", "tests/deep/test_x.py", True),  # as before: fnmatch's * crosses directories
    ("[ab].py", "b.py", True),
])
def test_double_star_patterns(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


@pytest.mark.parametrize("path, watched, rule", [
    ("/project/app.py", True, r"include pattern '\*\.py'"),
    ("/project/app/migrations/0001.py", False, r"exclude pattern '\*\*/migrations/\*\*'"),
    ("/project/node_modules/pkg/index.py", False, r"inside node_modules/, a directory ignored by default"),
    ("/project/app.pyc", False, r"matches '\*\.pyc', ignored by default"),
    ("/project/.supervisor/state.json", False, r"runtime directory"),
    ("/project/README.md", False, r"no include pattern"),
])
def test_each_verdict_names_its_rule(path: str, watched: bool, rule: str) -> None:
    f = ChangeFilter(root=ROOT, exclude=("**/migrations/**",), runtime_dir=ROOT / ".supervisor")
    verdict = f.explain(path)
    assert verdict.watched is watched and f.matches(path) is watched
    assert re.search(rule, verdict.rule), verdict.rule


# Recorded lines (see proc(5)): id, parent, major:minor, root, mount point, options, optional
# fields, "-", type, source, super options.
HOST = [
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    "28 27 0:25 / /tmp rw,nosuid - tmpfs tmpfs rw",
]
WSL = [
    "64 1 8:32 / / rw,relatime - ext4 /dev/sdc rw",
    "87 64 0:63 / /mnt/c rw,noatime - 9p drvfs rw,dirsync,aname=drvfs;path=C:\\;uid=1000,trans=fd",
    "88 64 0:64 / /mnt/wsl rw,relatime - tmpfs none rw",
]
NETWORK = [
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    "40 27 0:50 / /srv/code rw,relatime - nfs4 fileserver:/export/code rw,vers=4.2",
    "41 27 0:51 / /home/me/remote rw,nosuid - fuse.sshfs me@box:/src rw,user_id=1000",
    "42 27 0:52 / /media/share\\040drive rw - cifs //nas/share rw",
]
CONTAINER = [
    "500 400 0:90 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X",
    "501 500 0:91 / /proc rw - proc proc rw",
    "510 500 254:1 /home/me/project /app rw,relatime - ext4 /dev/sda1 rw",
    "511 500 0:92 / /app/node_modules rw - tmpfs tmpfs rw",
    "520 500 0:93 / /workspace rw - virtiofs mount0 rw",
]


@pytest.mark.parametrize("lines, path, container, reason", [
    (HOST, "/work/project", False, None),
    (HOST, "/tmp/project", False, None),
    (WSL, "/mnt/c/Users/me/project", False, r"Windows drive mounted into WSL \(9p at /mnt/c\)"),
    (WSL, "/home/me/project", False, None),
    (NETWORK, "/srv/code/app", False, r"network or shared file system \(nfs4 at /srv/code\)"),
    (NETWORK, "/home/me/remote/app", False, r"FUSE file system \(fuse\.sshfs at /home/me/remote\)"),
    (NETWORK, "/media/share drive/app", False, r"cifs at /media/share drive"),
    (CONTAINER, "/app", True, r"in a container, on a bind mount from the host \(ext4 at /app\)"),
    (CONTAINER, "/app/node_modules/x", True, None),  # the deeper tmpfs mount decides
    (CONTAINER, "/workspace/src", True, r"virtiofs at /workspace"),  # Docker Desktop's share
    (CONTAINER, "/srv/app", True, None),  # the container's own overlay layers
])
def test_polling_reason_from_recorded_mountinfo(lines: list[str], path: str, container: bool,
                                               reason: str | None) -> None:
    found = polling_reason(PurePosixPath(path), parse_mountinfo(lines), container)
    if reason is None:
        assert found is None
    else:
        assert found is not None and re.search(reason, found), found


def test_malformed_mountinfo_lines_are_skipped() -> None:
    assert parse_mountinfo(["", "garbage", "1 2 3:4 / /x rw"]) == []


def test_detection_reads_a_mountinfo_file_and_an_explicit_setting_wins(tmp_path: Path) -> None:
    recorded = tmp_path / "mountinfo"
    recorded.write_text("\n".join([*HOST, f"90 27 0:60 / {tmp_path} rw - nfs server:/x rw"]) + "\n")
    assert detect_polling([tmp_path / "project"], recorded) is not None
    assert detect_polling([tmp_path / "project"], tmp_path / "missing") is None

    root = make_project(tmp_path / "p", "[reload]\npoll = false\n")
    settings = resolve_settings(root, {})
    assert choose_polling(settings, watched_roots(settings)) == (False, "")
    settings = resolve_settings(root, {"SUPERVISOR_RELOAD_POLL": "true"})
    assert choose_polling(settings, watched_roots(settings)) == (True, "")
    # Unset: the mount table decides, and the one log line says why and how to turn it off.
    settings = resolve_settings(make_project(tmp_path / "q", ""), {})
    poll, line = choose_polling(settings, watched_roots(settings), lambda roots: f"{roots[0]} is on nfs")
    assert poll is True and re.search(r"polling, because .* is on nfs; set \[reload\] poll = false", line)
    assert choose_polling(settings, watched_roots(settings), lambda roots: None) == (None, "")


def project(root: Path, toml: str = "") -> Path:
    return make_project(root, f"""
        [server]
        port = {free_port()}
        [app]
        app = "app:app"
        [database]
        wait = false
        [status]
        enabled = false
        [reload]
        debounce = 0.05
        exclude = ["tests/**"]
        {toml}
        """, dotenv="GREETING=hello\n", files={"app.py": (REPO / "tests" / "apps" / "versioned.py").read_text()})


def test_why_names_the_outcome_and_the_rule(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    result = run_cli(["why", "app.py", "tests/unit/test_app.py", "node_modules/pkg/index.js",
                      str(tmp_path / "elsewhere.py"), ".env"], cwd=root)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert re.match(r"reload: .*include pattern '\*\.py'", lines["app.py"])
    assert re.match(r"ignored: .*exclude pattern 'tests/\*\*'", lines["tests/unit/test_app.py"])
    assert re.match(r"ignored: inside node_modules/", lines["node_modules/pkg/index.js"])
    assert re.match(r"ignored: outside the watched paths", lines[str(tmp_path / "elsewhere.py")])
    assert re.match(r"re-read settings.*env file", lines[".env"])


def test_why_refuses_an_invalid_configuration_like_check(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project", "[reload]\nexclude = 3\n")
    result = run_cli(["why", "app.py"], cwd=root)
    assert result.returncode == 2 and "exclude" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_forced_polling_reloads_and_debug_logs_say_what_was_ignored(tmp_path: Path) -> None:
    root = project(tmp_path / "project", "poll = true")
    with supervisor(["up", "--log-level", "debug"], root, base_env()) as run:
        url = run.wait_url()
        run.wait_for_output(r"reload: watching .* \(polling\)")
        (root / "notes.txt").write_text("not code\n")
        run.wait_for_output(r"reload: ignored a change to (.*, )?notes\.txt \(matches no include pattern")
        assert "reload: file change" not in run.output
        # The poller compares modification times in whole seconds: edit in a later second.
        created = int((root / "app.py").stat().st_mtime)
        wait_until(lambda: int(time.time()) > created, 2, "the next second")
        (root / "app.py").write_text((root / "app.py").read_text().replace("VERSION = 1", "VERSION = 2"))
        wait_until(lambda: http_get(url + "/")[2].startswith(b"2 "), 30, "a polled change", lambda: run.output)
        assert run.stop() == 0
